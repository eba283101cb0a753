"""Replaced-token detection (ELECTRA) with an ALBERT discriminator: what the generator's samples
do to the discriminator's input and labels, sizes, gradients, and the saved directory."""

from __future__ import annotations

import pytest
import torch

from albertzh.model import AlbertForSequenceClassification, AlbertModel
from albertzh.model.albert import AlbertForReplacedTokenDetection, generator_config
from albertzh.train.pretraining import pretraining_loss
from tests.model.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (2, 10), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    attention = torch.ones_like(ids)
    attention[1, 7:] = 0
    positions = torch.tensor([[1, 4, 0], [2, 5, 0]])  # the last slot of each row is padding
    labels = torch.stack([ids[0, [1, 4]], ids[1, [2, 5]]])
    labels = torch.cat([labels, torch.full((2, 1), -100)], dim=1)
    masked = ids.clone()
    masked[0, [1, 4]] = 4
    masked[1, [2, 5]] = 4
    return {
        "input_ids": masked,
        "attention_mask": attention,
        "token_type_ids": torch.zeros_like(ids),
        "masked_positions": positions,
        "masked_labels": labels,
        "sop_labels": torch.tensor([0, 1]),
        "original": ids,
    }


def _forced(model: AlbertForReplacedTokenDetection, token: int) -> None:
    """Make the generator put all its probability on ``token``."""
    with torch.no_grad():
        model.generator.predictions.bias.fill_(-1e4)
        model.generator.predictions.bias[token] = 1e4


def test_generator_samples_replace_masked_tokens_and_label_exactly_those() -> None:
    torch.manual_seed(0)
    model = AlbertForReplacedTokenDetection(tiny_config()).eval()
    b = _batch()
    original = b["original"]
    keep = int(original[0, 1])  # row 0's first masked token: sampling it back is no replacement
    _forced(model, keep)
    out = model(**{k: v for k, v in b.items() if k not in ("sop_labels", "original")})
    corrupted = original.clone()
    corrupted[0, [1, 4]] = keep
    corrupted[1, [2, 5]] = keep
    want = (corrupted != original).float()
    assert torch.equal(out.rtd_labels, want)
    assert out.rtd_labels[0, 1] == 0 and want.sum() >= 2  # the others differ from `keep`
    # The discriminator reads the corrupted sequence (not the [MASK]ed one).
    with torch.no_grad():
        h = model.albert(corrupted, attention_mask=b["attention_mask"]).last_hidden_state
        torch.testing.assert_close(out.rtd_logits, model.rtd_head(h))
    assert out.mlm_logits.shape == (2, 3, 60) and out.sop_logits.shape == (2, 2)


def test_loss_adds_the_weighted_detection_term_and_every_part_gets_gradients() -> None:
    torch.manual_seed(0)
    model = AlbertForReplacedTokenDetection(tiny_config())
    b = _batch()
    torch.manual_seed(1)
    loss, m = pretraining_loss(model, b, rtd_weight=50.0)
    torch.manual_seed(1)
    loss1, m1 = pretraining_loss(model, b, rtd_weight=1.0)
    torch.testing.assert_close(loss - loss1, 49.0 * m["rtd_loss"])
    assert 0 <= m["rtd_accuracy"] <= 1 and 0 < m["rtd_replaced"] <= 4 / 17
    loss.backward()
    for name in (
        "generator.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight",
        "generator.predictions.dense.weight",
        "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight",
        "albert.embeddings.word_embeddings.weight",
        "rtd_head.dense_prediction.weight",
        "sop_classifier.classifier.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_generator_config_keeps_head_width_and_needs_the_google_layout() -> None:
    cfg = tiny_config(hidden_size=64, num_attention_heads=4, intermediate_size=256)
    g = generator_config(cfg, 0.25)
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size) == (16, 1, 64)
    assert g.embedding_size == cfg.embedding_size and g.num_hidden_layers == cfg.num_hidden_layers
    assert generator_config(cfg, 0.1).hidden_size == 16  # at least one head
    assert generator_config(cfg, 1.0) == cfg
    with pytest.raises(ValueError, match="google"):
        generator_config(tiny_config(embedding_layout="brightmart"), 0.5)


def test_saved_directory_is_a_plain_albert_encoder(tmp_path) -> None:
    torch.manual_seed(0)
    model = AlbertForReplacedTokenDetection(tiny_config(), generator_size=0.5)
    model.save_pretrained(tmp_path / "m")
    again = AlbertForReplacedTokenDetection.from_pretrained(tmp_path / "m", generator_size=0.5)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    with pytest.raises(Exception, match="shape mismatch"):
        AlbertForReplacedTokenDetection.from_pretrained(tmp_path / "m", generator_size=1.0)
    clf = AlbertForSequenceClassification.from_pretrained(tmp_path / "m")
    assert sorted(clf.load_info["ignored"]) == ["generator", "rtd_head", "sop_classifier"]
    enc = AlbertModel.from_pretrained(tmp_path / "m")
    for k, v in enc.state_dict().items():
        assert torch.equal(v, model.albert.state_dict()[k]), k
    # RTD can start from any ALBERT directory: its encoder, a fresh generator and heads.
    enc.save_pretrained(tmp_path / "enc")
    start = AlbertForReplacedTokenDetection.from_pretrained(tmp_path / "enc")
    assert sorted(start.load_info["initialized"]) == ["generator", "rtd_head", "sop_classifier"]
    assert torch.equal(
        start.albert.embeddings.word_embeddings.weight, enc.embeddings.word_embeddings.weight
    )


def test_transformers_albert_model_reads_the_encoder(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = AlbertForReplacedTokenDetection(tiny_config()).eval()
    model.save_pretrained(tmp_path / "m")
    hf = transformers.AlbertModel.from_pretrained(tmp_path / "m").eval()
    b = _batch()
    with torch.no_grad():
        ours = model.albert(b["original"], attention_mask=b["attention_mask"])
        theirs = hf(input_ids=b["original"], attention_mask=b["attention_mask"])
    torch.testing.assert_close(
        ours.last_hidden_state, theirs.last_hidden_state, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-5, rtol=1e-5)
