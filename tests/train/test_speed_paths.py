"""Speed paths: fused AdamW on CUDA, no torch.compile graph breaks in the models, and no
host-device sync per training step outside log steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from albertzh.model import AlbertConfig
from albertzh.model.albert import AlbertForPreTraining, AlbertForSequenceClassification
from albertzh.train import loop as tr


class _FakeParams(torch.nn.Module):
    """A module whose parameters claim to live on the given devices (no real CUDA needed)."""

    def __init__(self, names_devices: list[tuple[str, str]]) -> None:
        super().__init__()
        self._fake = [
            (name, SimpleNamespace(device=torch.device(dev), requires_grad=True))
            for name, dev in names_devices
        ]

    def named_parameters(self, *args, **kwargs):  # noqa: ARG002 -- the nn.Module signature
        return iter(self._fake)


@pytest.fixture
def captured_adamw(monkeypatch):
    """Replace torch.optim.AdamW by a recorder of its keyword arguments."""
    calls: list[dict] = []

    def fake_adamw(params, **kwargs):
        calls.append({"params": params, **kwargs})
        return SimpleNamespace(defaults=kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", fake_adamw)
    return calls


def test_adamw_is_fused_when_every_param_is_on_cuda(captured_adamw):
    model = _FakeParams([("dense.weight", "cuda:0"), ("LayerNorm.weight", "cuda:0")])
    tr.build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01)
    assert captured_adamw[-1]["fused"] is True
    assert captured_adamw[-1]["eps"] == 1e-6


@pytest.mark.parametrize("devices", [["cpu", "cpu"], ["cuda:0", "cpu"]], ids=["cpu", "mixed"])
def test_adamw_is_not_fused_off_cuda(captured_adamw, devices):
    model = _FakeParams(list(zip(["dense.weight", "LayerNorm.weight"], devices, strict=True)))
    tr.build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01)
    assert not captured_adamw[-1].get("fused")


def test_adamw_on_cpu_keeps_the_default_implementation():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = tr.build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW)
    assert not opt.defaults.get("fused")
    model(torch.randn(2, 4)).sum().backward()
    opt.step()


def _tiny_config(**kw) -> AlbertConfig:
    return AlbertConfig.preset(
        "tiny",
        vocab_size=97,
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=32,
        **kw,
    )


@pytest.mark.gpu
def test_fused_adamw_step_on_a_real_gpu():
    model = AlbertForSequenceClassification(_tiny_config(num_labels=2)).cuda()
    opt = tr.build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01)
    assert opt.defaults["fused"] is True
    ids = torch.randint(5, 97, (2, 8), device="cuda")
    before = model.classifier.weight.detach().clone()
    model(ids).logits.sum().backward()
    opt.step()
    torch.cuda.synchronize()
    assert not torch.equal(before, model.classifier.weight.detach())


def _inputs(batch: int = 2, seq: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    attention_mask[1, seq - 4 :] = 0
    return {
        "input_ids": torch.randint(5, 97, (batch, seq), generator=g) * attention_mask,
        "attention_mask": attention_mask,
        "token_type_ids": (torch.arange(seq) >= seq // 2).long().expand(batch, seq).clone(),
    }


def _explain(model: torch.nn.Module, **inputs):
    try:
        return torch._dynamo.explain(model)(**inputs)
    finally:
        torch._dynamo.reset()


def test_pretraining_forward_has_no_graph_breaks():
    torch.manual_seed(0)
    model = AlbertForPreTraining(_tiny_config()).train()
    positions = torch.tensor([[1, 3, 5], [2, 4, 6]])
    ex = _explain(model, **_inputs(), masked_positions=positions)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1


def test_classification_forward_has_no_graph_breaks():
    torch.manual_seed(0)
    model = AlbertForSequenceClassification(_tiny_config(num_labels=3)).train()
    ex = _explain(model, **_inputs())
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1


def test_step_figures_stay_tensors_until_read(monkeypatch) -> None:
    """train_step converts nothing to Python floats (each would be a sync on GPU); the Averager
    sums tensors and reads floats once, at pop."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def loss_fn(m, b):
        out = m(b["x"])
        return out.pow(2).mean(), {"acc": (out > 0).float().mean()}

    batches = [{"x": torch.randn(3, 4)} for _ in range(2)]
    floats = {"n": 0}
    real = torch.Tensor.__float__

    def counting(self):
        floats["n"] += 1
        return real(self)

    monkeypatch.setattr(torch.Tensor, "__float__", counting)
    avg = tr.Averager()
    for _ in range(3):
        res = tr.train_step(model, batches, loss_fn, opt)
        avg.add(res.tensors())
    assert floats["n"] == 0
    assert isinstance(res.loss_t, torch.Tensor) and set(res.tensors()) == {
        "loss",
        "acc",
        "grad_norm",
    }
    means = avg.pop()
    assert floats["n"] == 3 and set(means) == {"loss", "acc", "grad_norm"}
    assert isinstance(res.loss, float) and res.grad_norm > 0 and 0 <= res.metrics["acc"] <= 1
