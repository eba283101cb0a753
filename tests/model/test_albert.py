"""The modules themselves: shapes, padding, init, training, dropout, torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from albertzh.model import (
    AlbertForPreTraining,
    AlbertForSequenceClassification,
    AlbertModel,
    AlbertModelOutput,
    AlbertPretrainingOutput,
)
from tests.model.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


tiny = tiny_config


def ids(B: int = 2, T: int = 10, seed: int = 0, vocab: int = 60) -> torch.Tensor:
    return torch.randint(5, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_output_shapes() -> None:
    torch.manual_seed(0)
    cfg = tiny()
    x = ids()
    out = AlbertModel(cfg)(input_ids=x)
    assert isinstance(out, AlbertModelOutput)
    assert out.last_hidden_state.shape == (2, 10, 16) and out.pooler_output.shape == (2, 16)
    pre = AlbertForPreTraining(cfg)
    full = pre(input_ids=x)
    assert isinstance(full, AlbertPretrainingOutput)
    assert full.mlm_logits.shape == (2, 10, 60) and full.sop_logits.shape == (2, 2)
    at = pre(input_ids=x, masked_positions=torch.tensor([[1, 2, 3], [4, 5, 9]], dtype=torch.int32))
    assert at.mlm_logits.shape == (2, 3, 60)
    assert torch.allclose(at.mlm_logits[1, 2], full.mlm_logits[1, 9], atol=1e-6)
    clf = AlbertForSequenceClassification(tiny(num_labels=5))
    assert clf(input_ids=x).logits.shape == (2, 5)


@pytest.mark.parametrize("inner", [1, 2])
def test_output_positions_skip_work_but_match_full(inner: int) -> None:
    torch.manual_seed(0)
    model = AlbertModel(tiny(num_hidden_layers=3, inner_group_num=inner)).eval()
    x = ids(3, 10)
    mask = torch.ones_like(x)
    mask[2, 6:] = 0
    positions = torch.tensor([[1, 2], [9, 0], [5, 3]])
    with torch.no_grad():
        full = model(input_ids=x, attention_mask=mask)
        part = model(input_ids=x, attention_mask=mask, output_positions=positions)
    want = torch.gather(full.last_hidden_state, 1, positions[..., None].expand(-1, -1, 16))
    assert part.last_hidden_state.shape == (3, 2, 16)
    assert torch.allclose(part.last_hidden_state, want, atol=1e-5)
    assert torch.allclose(part.pooler_output, full.pooler_output, atol=1e-5)


def test_too_long_input_is_refused() -> None:
    with pytest.raises(ValueError, match="33 tokens, more than max_position_embeddings 32"):
        AlbertModel(tiny())(input_ids=ids(1, 33))


def test_group_index_follows_hf_formula() -> None:
    model = AlbertModel(tiny(num_hidden_layers=12, num_hidden_groups=3))
    assert model.encoder.group_of_layer == [0] * 4 + [1] * 4 + [2] * 4
    model = AlbertModel(tiny(num_hidden_layers=5, num_hidden_groups=2, inner_group_num=2))
    assert model.encoder.group_of_layer == [0, 0, 0, 1, 1]
    assert len(model.encoder.albert_layer_groups[1].albert_layers) == 2


def test_padding_does_not_leak_into_real_tokens() -> None:
    torch.manual_seed(0)
    model = AlbertModel(tiny()).eval()
    x = ids(1, 6)
    mask = torch.ones(1, 6, dtype=torch.long)
    padded = torch.cat([x, torch.tensor([[0, 7, 9, 11]])], dim=1)  # junk in the padding
    padded_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short = model(input_ids=x, attention_mask=mask)
        long = model(input_ids=padded, attention_mask=padded_mask)
        unmasked = model(input_ids=padded)
    assert torch.allclose(long.last_hidden_state[:, :6], short.last_hidden_state, atol=1e-5)
    assert torch.allclose(long.pooler_output, short.pooler_output, atol=1e-5)
    assert not torch.allclose(unmasked.pooler_output, short.pooler_output, atol=1e-5)


def test_token_types_default_to_zero() -> None:
    model = AlbertModel(tiny()).eval()
    x = ids()
    with torch.no_grad():
        a = model(input_ids=x).last_hidden_state
        b = model(input_ids=x, token_type_ids=torch.zeros_like(x)).last_hidden_state
        c = model(input_ids=x, token_type_ids=torch.ones_like(x)).last_hidden_state
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c, atol=1e-3)


def test_init_like_hf() -> None:
    torch.manual_seed(0)
    cfg = tiny(vocab_size=500, hidden_size=64, intermediate_size=128, initializer_range=0.05)
    model = AlbertForPreTraining(cfg)
    emb = model.albert.embeddings.word_embeddings.weight
    assert abs(emb[1:].std().item() - 0.05) < 0.005
    assert torch.count_nonzero(emb[0]) == 0  # pad row
    ffn = model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn
    assert abs(ffn.weight.std().item() - 0.05) < 0.005 and torch.count_nonzero(ffn.bias) == 0
    ln = model.albert.encoder.albert_layer_groups[0].albert_layers[0].full_layer_layer_norm
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)
    assert torch.count_nonzero(model.predictions.bias) == 0


def test_tiny_model_learns() -> None:
    torch.manual_seed(0)
    model = AlbertForPreTraining(tiny()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = ids(4, 12, seed=1)
    positions = torch.tensor([[1, 4], [2, 5], [3, 6], [7, 8]])
    targets = torch.gather(x, 1, positions)
    inputs = x.scatter(1, positions, 4)  # [MASK] = 4
    sop = torch.tensor([0, 1, 0, 1])
    losses = []
    for _ in range(50):
        out = model(input_ids=inputs, masked_positions=positions)
        loss = F.cross_entropy(out.mlm_logits.flatten(0, 1), targets.flatten())
        loss = loss + F.cross_entropy(out.sop_logits, sop)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_dropout_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = AlbertForSequenceClassification(
        tiny(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    )
    x = ids()
    model.train()
    a, b = model(input_ids=x).logits, model(input_ids=x).logits
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)


@pytest.mark.parametrize(
    ("num_labels", "problem_type", "labels", "expected"),
    [
        (3, None, torch.tensor([0, 2]), "ce"),
        (1, None, torch.tensor([0.5, -1.0]), "mse"),
        (3, "multi_label_classification", torch.tensor([[1.0, 0, 1], [0, 1, 0]]), "bce"),
    ],
)
def test_classifier_loss_follows_problem_type(num_labels, problem_type, labels, expected) -> None:
    model = AlbertForSequenceClassification(tiny(num_labels=num_labels, problem_type=problem_type))
    logits = torch.randn(2, num_labels)
    loss = model.compute_loss(logits, labels)
    ref = {
        "ce": lambda: F.cross_entropy(logits, labels),
        "mse": lambda: F.mse_loss(logits.view(-1), labels),
        "bce": lambda: F.binary_cross_entropy_with_logits(logits, labels),
    }[expected]()
    assert torch.allclose(loss, ref)


def test_compiles_without_graph_breaks() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    model = AlbertForPreTraining(tiny(num_hidden_layers=4, num_hidden_groups=2)).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # raises on a graph break
    x = ids()
    mask = torch.ones_like(x)
    positions = torch.tensor([[1, 2], [3, 4]])
    with torch.no_grad():
        got = compiled(input_ids=x, attention_mask=mask, masked_positions=positions)
        ref = model(input_ids=x, attention_mask=mask, masked_positions=positions)
    assert torch.allclose(got.mlm_logits, ref.mlm_logits, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.gpu
def test_cuda_bf16_autocast_matches_fp32() -> None:
    torch.manual_seed(0)
    model = AlbertForPreTraining(tiny(hidden_size=64, intermediate_size=128)).eval()
    x = ids(4, 16)
    mask = torch.ones_like(x)
    mask[1, 10:] = 0
    positions = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    with torch.no_grad():
        ref = model(input_ids=x, attention_mask=mask, masked_positions=positions)
        gpu = model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = gpu(
                input_ids=x.cuda(), attention_mask=mask.cuda(), masked_positions=positions.cuda()
            )
    assert out.mlm_logits.dtype == torch.bfloat16
    assert torch.allclose(out.mlm_logits.float().cpu(), ref.mlm_logits, atol=0.05, rtol=0.05)
    assert torch.allclose(out.sop_logits.float().cpu(), ref.sop_logits, atol=0.05, rtol=0.05)


def test_old_pretraining_class_name_is_a_deprecated_alias() -> None:
    import albertzh.model as m

    with pytest.warns(DeprecationWarning, match="AlbertForPreTraining"):
        old = m.AlbertForPretraining
    assert old is m.AlbertForPreTraining
    with pytest.raises(AttributeError):
        m.AlbertForNothing  # noqa: B018


@pytest.mark.parametrize("layout", ["google", "brightmart_preln"])
def test_unfused_qkv_path_equals_the_fused_one(layout: str, monkeypatch) -> None:
    """The path int8 models take (q, k, v applied one by one) computes what the fused one does."""
    from albertzh.model.albert import AlbertAttention

    kw = {"embedding_layout": "brightmart", "ln_type": "preln"} if layout != "google" else {}
    torch.manual_seed(0)
    model = AlbertForPreTraining(tiny(**kw)).eval()
    x = ids(3, 12)
    mask = torch.ones_like(x)
    mask[1, 7:] = 0
    positions = torch.tensor([[1, 4], [2, 5], [3, 9]])
    with torch.no_grad():
        fused = model(input_ids=x, attention_mask=mask, masked_positions=positions)
        monkeypatch.setattr(AlbertAttention, "qkv_weights", lambda self: None)
        split = model(input_ids=x, attention_mask=mask, masked_positions=positions)
    torch.testing.assert_close(split.mlm_logits, fused.mlm_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(split.sop_logits, fused.sop_logits, atol=1e-5, rtol=0)
