"""AlbertForMultipleChoice against transformers' class: same keys, same logits, both ways."""

from __future__ import annotations

import pytest
import torch

from albertzh.model import HEAD_MODELS, AlbertForMultipleChoice
from tests.model.test_parity import (
    batch,
    hf_config,
    hf_from,
    no_key_problems,
    randomize,
    small_config,
)

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")


def choices_batch(cfg, seed: int) -> dict[str, torch.Tensor]:
    """[2 questions, 3 options, T]: batch()'s 6 rows, padding included."""
    flat = {k: torch.cat([v, batch(cfg, seed + 1)[k]]) for k, v in batch(cfg, seed).items()}
    return {k: v.view(2, 3, -1) for k, v in flat.items()}  # [6, T] -> [2, 3, T]


def test_multiple_choice_parity_both_ways(tmp_path) -> None:
    cfg = small_config(num_hidden_layers=4, num_hidden_groups=2)
    hf = transformers.AlbertForMultipleChoice(hf_config(cfg)).eval()
    randomize(hf, seed=20)
    hf.save_pretrained(tmp_path / "hf")
    ours = AlbertForMultipleChoice.from_pretrained(tmp_path / "hf").eval()
    assert ours.load_info == {"initialized": [], "ignored": []}
    inputs = choices_batch(cfg, seed=21)
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        ref = hf(**inputs, labels=labels)
        out = ours(**inputs)
    assert out.logits.shape == (2, 3) and out.logits.abs().max() > 0.1
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=0)
    # Without padding options the loss is HF's.
    assert torch.allclose(ours.compute_loss(out.logits, labels), ref.loss, atol=1e-5)

    ours.save_pretrained(tmp_path / "ours")
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "ours" / "model.safetensors"))
    assert {"albert.pooler.weight", "classifier.weight", "classifier.bias"} <= keys
    assert load_file(tmp_path / "ours" / "model.safetensors")["classifier.weight"].shape == (1, 32)
    back, info = hf_from(transformers.AlbertForMultipleChoice, tmp_path / "ours")
    assert no_key_problems(info), info
    assert back.config.architectures == ["AlbertForMultipleChoice"]
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs).logits, out.logits, atol=1e-5, rtol=0)
    assert HEAD_MODELS["AlbertForMultipleChoice"] is AlbertForMultipleChoice
