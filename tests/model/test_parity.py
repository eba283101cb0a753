"""Parity with HuggingFace transformers, both ways: same keys, same outputs, same gradients."""

from __future__ import annotations

import pytest
import torch

from albertzh.model import (
    AlbertConfig,
    AlbertForPreTraining,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
)
from tests.model.conftest import tiny_config

transformers = pytest.importorskip("transformers")

ATOL = 1e-4

CONFIGS = {
    "tiny-gelu_new": dict(num_hidden_layers=3),
    "2groups-x2inner-relu": dict(
        num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2, hidden_act="relu"
    ),
    "uneven-groups-gelu": dict(num_hidden_layers=5, num_hidden_groups=2, hidden_act="gelu"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = dict(
    vocab_size=97,
    embedding_size=16,
    hidden_size=32,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
)


def small_config(**fields) -> AlbertConfig:
    return tiny_config(**{**SMALL, **fields})


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights far from init (LayerNorms too) so that any mismatch shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=g) * 0.2
        p.copy_(1.0 + noise if "LayerNorm.weight" in name or "layer_norm.weight" in name else noise)


def batch(cfg: AlbertConfig, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 12
    ids = torch.randint(1, cfg.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # padding in the batch
    mask[2, 10:] = 0
    ids = ids * mask
    types = (torch.arange(T)[None, :] >= 5).long().expand(B, T) * mask
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def hf_config(cfg: AlbertConfig):
    return transformers.AlbertConfig(**cfg.to_hf_dict(), attn_implementation="sdpa")


def hf_from(cls, path):
    model, info = cls.from_pretrained(path, output_loading_info=True, attn_implementation="sdpa")
    return model.eval(), info


def no_key_problems(info: dict) -> bool:
    return not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hf_pretraining_dir_loads_with_same_outputs(name: str, tmp_path) -> None:
    cfg = small_config(**CONFIGS[name])
    torch.manual_seed(0)
    hf = transformers.AlbertForPreTraining(hf_config(cfg)).eval()
    randomize(hf)
    hf.save_pretrained(tmp_path)
    ours = AlbertForPreTraining.from_pretrained(tmp_path).eval()
    assert ours.load_info == {"initialized": [], "ignored": []}
    inputs = batch(cfg)
    with torch.no_grad():
        ref = hf(**inputs, output_hidden_states=True)
        out = ours(**inputs)
        hidden = ours.albert(**inputs)
    assert close(out.mlm_logits, ref.prediction_logits)
    assert close(out.sop_logits, ref.sop_logits)
    assert close(hidden.last_hidden_state, ref.hidden_states[-1])
    assert out.mlm_logits.abs().max() > 0.1  # the comparison is not between near-zeros

    # Masked positions give the same logits as the full sequence at those positions.
    positions = torch.tensor([[1, 3, 4], [2, 5, 6], [0, 8, 9]])
    with torch.no_grad():
        at = ours(**inputs, masked_positions=positions).mlm_logits
    assert at.shape == (3, 3, cfg.vocab_size)
    assert close(at, torch.gather(ref.prediction_logits, 1, positions[..., None].expand_as(at)))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_albertzh_pretraining_dir_loads_in_hf(name: str, tmp_path) -> None:
    cfg = small_config(**CONFIGS[name])
    ours = AlbertForPreTraining(cfg).eval()
    randomize(ours, seed=3)
    ours.save_pretrained(tmp_path / "m")
    hf, info = hf_from(transformers.AlbertForPreTraining, tmp_path / "m")
    assert no_key_problems(info), info
    # Still tied after loading: HF's decoder is our word-embedding table.
    assert torch.equal(hf.predictions.decoder.weight, ours.albert.embeddings.word_embeddings.weight)
    inputs = batch(cfg, seed=4)
    with torch.no_grad():
        ref = hf(**inputs)
        out = ours(**inputs)
    assert close(out.mlm_logits, ref.prediction_logits)
    assert close(out.sop_logits, ref.sop_logits)


def test_gradients_match_hf_for_one_backward(tmp_path) -> None:
    cfg = small_config(**CONFIGS["2groups-x2inner-relu"])
    hf = transformers.AlbertForPreTraining(hf_config(cfg)).eval()
    randomize(hf, seed=5)
    hf.save_pretrained(tmp_path)
    ours = AlbertForPreTraining.from_pretrained(tmp_path).eval()
    inputs = batch(cfg, seed=6)
    g = torch.Generator().manual_seed(7)
    w_mlm = torch.randn(3, 12, cfg.vocab_size, generator=g)
    w_sop = torch.randn(3, 2, generator=g)
    ref = hf(**inputs)
    ((ref.prediction_logits * w_mlm).sum() + (ref.sop_logits * w_sop).sum()).backward()
    out = ours(**inputs)
    ((out.mlm_logits * w_mlm).sum() + (out.sop_logits * w_sop).sum()).backward()
    checked = 0
    for name, p in ours.named_parameters():
        ref_grad = hf.get_parameter(name).grad
        assert ref_grad is not None and p.grad is not None, name
        assert torch.allclose(p.grad, ref_grad, atol=1e-4, rtol=1e-4), name
        checked += 1
    assert checked == len(list(ours.parameters())) > 20


def test_gradients_at_masked_positions_match_hf_full_logits(tmp_path) -> None:
    cfg = small_config(num_hidden_layers=3, inner_group_num=2)
    hf = transformers.AlbertForPreTraining(hf_config(cfg)).eval()
    randomize(hf, seed=12)
    hf.save_pretrained(tmp_path)
    ours = AlbertForPreTraining.from_pretrained(tmp_path).eval()
    inputs = batch(cfg, seed=13)
    positions = torch.tensor([[1, 3, 4], [2, 5, 6], [0, 8, 9]])
    targets = torch.gather(inputs["input_ids"], 1, positions)
    sop = torch.tensor([0, 1, 1])
    labels = torch.full_like(inputs["input_ids"], -100).scatter(1, positions, targets)
    hf(**inputs, labels=labels, sentence_order_label=sop).loss.backward()
    out = ours(**inputs, masked_positions=positions)
    loss = torch.nn.functional.cross_entropy(out.mlm_logits.flatten(0, 1), targets.flatten())
    (loss + torch.nn.functional.cross_entropy(out.sop_logits, sop)).backward()
    for name, p in ours.named_parameters():
        assert torch.allclose(p.grad, hf.get_parameter(name).grad, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize(
    ("num_labels", "problem_type", "pair"),
    [(3, None, True), (2, "single_label_classification", False), (1, "regression", True)],
)
def test_classifier_parity_both_ways(num_labels, problem_type, pair, tmp_path) -> None:
    cfg = small_config(
        num_hidden_layers=4, num_hidden_groups=2, num_labels=num_labels, problem_type=problem_type
    )
    hf = transformers.AlbertForSequenceClassification(hf_config(cfg)).eval()
    randomize(hf, seed=8)
    hf.save_pretrained(tmp_path / "hf")
    ours = AlbertForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert ours.config.num_labels == num_labels and ours.config.problem_type == problem_type
    inputs = batch(cfg, seed=9)
    if not pair:
        inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    with torch.no_grad():
        ref = hf(**inputs, output_hidden_states=True)
        out = ours(**inputs)
    assert out.logits.shape == (3, num_labels)
    assert close(out.logits, ref.logits)

    # The loss follows problem_type as HF's does.
    labels = torch.randn(3) if num_labels == 1 else torch.tensor([0, 1, num_labels - 1])
    ref_loss = hf(**inputs, labels=labels).loss
    assert torch.allclose(ours.compute_loss(out.logits, labels), ref_loss, atol=1e-5)

    ours.save_pretrained(tmp_path / "ours")
    back, info = hf_from(transformers.AlbertForSequenceClassification, tmp_path / "ours")
    assert no_key_problems(info), info
    assert back.config.num_labels == num_labels
    with torch.no_grad():
        assert close(back(**inputs).logits, out.logits)


def test_bare_model_parity_both_ways(tmp_path) -> None:
    cfg = small_config(num_hidden_layers=3, hidden_act="gelu_new")
    hf = transformers.AlbertModel(hf_config(cfg)).eval()
    randomize(hf, seed=10)
    hf.save_pretrained(tmp_path / "hf")  # keys without the "albert." prefix
    ours = AlbertModel.from_pretrained(tmp_path / "hf").eval()
    inputs = batch(cfg, seed=11)
    with torch.no_grad():
        ref = hf(**inputs)
        out = ours(**inputs)
    assert close(out.last_hidden_state, ref.last_hidden_state)
    assert close(out.pooler_output, ref.pooler_output)
    ours.save_pretrained(tmp_path / "ours")
    back, info = hf_from(transformers.AlbertModel, tmp_path / "ours")
    assert no_key_problems(info), info
    with torch.no_grad():
        assert close(back(**inputs).last_hidden_state, out.last_hidden_state)


def test_hf_masked_lm_dir_without_pooler_loads_for_pretraining(tmp_path) -> None:
    # The albert_chinese_* family are AlbertForMaskedLM dirs: no pooler, no SOP head.
    cfg = small_config(num_hidden_layers=3)
    hf = transformers.AlbertForMaskedLM(hf_config(cfg)).eval()
    randomize(hf, seed=14)
    hf.save_pretrained(tmp_path)
    ours = AlbertForPreTraining.from_pretrained(tmp_path).eval()
    assert ours.load_info == {"initialized": ["albert.pooler", "sop_classifier"], "ignored": []}
    assert ours.albert.pooler.weight.std() > 0.005  # initialised, not left empty
    inputs = batch(cfg, seed=15)
    with torch.no_grad():
        assert close(ours(**inputs).mlm_logits, hf(**inputs).logits)
    encoder = AlbertModel.from_pretrained(tmp_path)
    assert encoder.load_info == {"initialized": ["albert.pooler"], "ignored": ["predictions"]}


def test_token_classifier_parity_both_ways(tmp_path) -> None:
    tags = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    cfg = small_config(
        num_hidden_layers=4, num_hidden_groups=2, id2label=dict(enumerate(tags)), num_labels=5
    )
    hf = transformers.AlbertForTokenClassification(hf_config(cfg)).eval()
    randomize(hf, seed=16)
    hf.save_pretrained(tmp_path / "hf")
    ours = AlbertForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    assert ours.load_info == {"initialized": [], "ignored": []}
    assert ours.config.labels() == tags
    inputs = batch(cfg, seed=17)
    labels = torch.randint(0, 5, inputs["input_ids"].shape)
    labels[inputs["attention_mask"] == 0] = -100
    labels[:, 0] = -100
    with torch.no_grad():
        ref = hf(**inputs, labels=labels)
        out = ours(**inputs)
    assert out.logits.shape == (3, 12, 5)
    assert torch.allclose(out.logits, ref.logits, atol=1e-5, rtol=0)
    assert torch.allclose(ours.compute_loss(out.logits, labels), ref.loss, atol=1e-5)

    ours.save_pretrained(tmp_path / "ours")
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "ours" / "model.safetensors"))
    assert not any(k.startswith("albert.pooler") for k in keys)
    assert {"classifier.weight", "classifier.bias"} <= keys
    back, info = hf_from(transformers.AlbertForTokenClassification, tmp_path / "ours")
    assert no_key_problems(info), info
    assert back.config.id2label == dict(enumerate(tags))
    with torch.no_grad():
        assert torch.allclose(back(**inputs).logits, out.logits, atol=1e-5, rtol=0)


def test_token_classifier_from_a_pretraining_dir_ignores_the_pooler(tmp_path) -> None:
    cfg = small_config(num_hidden_layers=2)
    pre = AlbertForPreTraining(cfg)
    randomize(pre, seed=18)
    pre.save_pretrained(tmp_path)
    ours = AlbertForTokenClassification.from_pretrained(tmp_path, num_labels=3).eval()
    assert ours.load_info == {
        "initialized": ["classifier"],
        "ignored": ["albert.pooler", "predictions", "sop_classifier"],
    }
    assert ours.albert.pooler is None
    inputs = batch(cfg, seed=19)
    with torch.no_grad():
        h = pre.albert(**inputs).last_hidden_state
        assert close(ours.albert(**inputs).last_hidden_state, h)
