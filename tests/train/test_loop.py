"""Training plumbing: LAMB, schedules, the step, checkpoints, RNG, metrics, Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from albertzh.errors import ConfigError, InputError
from albertzh.train import loop as tr


class Toy(torch.nn.Module):
    """A tiny model with the save_pretrained hook the Checkpointer uses."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(4, 3)
        self.LayerNorm = torch.nn.LayerNorm(3)
        self.out = torch.nn.Linear(3, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.LayerNorm(self.dense(x)))

    def save_pretrained(self, path: Path, tokenizer=None, meta=None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, path / "w.st")
        (path / "albertzh.json").write_text(json.dumps(meta or {}))


def _loss_fn(model, batch):
    logits = model(batch["x"])
    loss = torch.nn.functional.cross_entropy(logits, batch["y"])
    return loss, {"acc": (logits.argmax(-1) == batch["y"]).float().mean()}


# --------------------------------------------------------------------------- LAMB


def test_lamb_matches_reference_formula() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(3, 4)
    b0 = torch.randn(4)
    w = torch.nn.Parameter(w0.clone())
    b = torch.nn.Parameter(b0.clone())
    lr, wd, eps, b1, b2 = 0.01, 0.1, 1e-6, 0.9, 0.999
    opt = tr.Lamb(
        [
            {"params": [w], "weight_decay": wd, "use_trust_ratio": True},
            {"params": [b], "weight_decay": 0.0, "use_trust_ratio": False},
        ],
        lr=lr,
        eps=eps,
    )
    grads = [(torch.randn(3, 4), torch.randn(4)) for _ in range(3)]
    # Reference: google-research/albert lamb_optimizer, written out by hand.
    rw, rb = w0.clone(), b0.clone()
    mw, vw, mb, vb = (torch.zeros_like(rw), torch.zeros_like(rw), torch.zeros(4), torch.zeros(4))
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        mw = b1 * mw + (1 - b1) * gw
        vw = b2 * vw + (1 - b2) * gw * gw
        upd = mw / (vw.sqrt() + eps) + wd * rw
        ratio = rw.norm() / upd.norm()
        rw = rw - lr * ratio * upd
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb * gb
        rb = rb - lr * (mb / (vb.sqrt() + eps))  # no decay, no trust ratio
    torch.testing.assert_close(w.detach(), rw, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.detach(), rb, rtol=1e-5, atol=1e-6)


def test_lamb_trust_ratio_is_one_for_zero_weights() -> None:
    w = torch.nn.Parameter(torch.zeros(2, 2))
    opt = tr.Lamb([w], lr=0.1)
    w.grad = torch.ones(2, 2)
    opt.step()
    # m = 0.1, v = 0.001 -> update = 0.1/(sqrt(0.001)+1e-6); ratio 1 because ||w|| = 0.
    expected = -0.1 * (0.1 / (math.sqrt(0.001) + 1e-6))
    torch.testing.assert_close(w.detach(), torch.full((2, 2), expected))


def test_param_groups_exclude_layernorm_and_bias() -> None:
    model = Toy()
    opt = tr.build_optimizer(model, "lamb", 1e-3, 0.01)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["dense.weight", "out.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "LayerNorm.bias",
        "LayerNorm.weight",
        "dense.bias",
    ]
    assert no_decay["weight_decay"] == 0.0 and no_decay["use_trust_ratio"] is False
    adamw = tr.build_optimizer(model, "adamw", 1e-3, 0.01)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["eps"] == 1e-6
    with pytest.raises(ConfigError, match="--optimizer"):
        tr.build_optimizer(model, "sgd", 1e-3, 0.0)


# --------------------------------------------------------------------------- schedules


def _lrs(kind: str, warmup: int, total: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = tr.build_scheduler(opt, kind, warmup, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_schedule_shape() -> None:
    lrs = _lrs("linear", 4, 14)
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # warmup reaches the peak
    decay = lrs[4:]
    assert decay[0] == pytest.approx(2.0)
    diffs = [a - b for a, b in zip(decay, decay[1:], strict=False)]
    assert all(d == pytest.approx(0.2) for d in diffs)  # straight line to 0 at step 14
    assert tr.lr_factor(14, "linear", 4, 14) == 0.0


def test_cosine_and_constant_schedules() -> None:
    lrs = _lrs("cosine", 0, 10)
    assert lrs[0] == pytest.approx(2.0) and lrs[5] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert set(_lrs("constant", 2, 6)[2:]) == {2.0}
    with pytest.raises(ConfigError, match="--schedule"):
        tr.build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]), "step", 0, 5)


def test_total_and_warmup_steps() -> None:
    cfg = tr.TrainConfig(output="o", epochs=2.5, warmup_ratio=0.1)
    assert tr.total_steps(cfg, 10) == 25 and tr.warmup_for(cfg, 25) == 2
    cfg = tr.TrainConfig(output="o", steps=7, epochs=3, warmup_steps=3)
    assert tr.total_steps(cfg, 10) == 7 and tr.warmup_for(cfg, 7) == 3
    with pytest.raises(ConfigError, match="--steps"):
        tr.total_steps(tr.TrainConfig(output="o"), 10)
    with pytest.raises(ValueError, match="--resume"):
        tr.TrainConfig(output="o", resume=True, overwrite=True)


# --------------------------------------------------------------------------- the step


def _batches(n: int, size: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"x": torch.randn(size, 4, generator=g), "y": torch.randint(0, 2, (size,), generator=g)}
        for _ in range(n)
    ]


def test_grad_accumulation_equals_one_big_batch() -> None:
    torch.manual_seed(1)
    a = Toy()
    b = Toy()
    b.load_state_dict(a.state_dict())
    micro = _batches(2, 3)
    big = {k: torch.cat([m[k] for m in micro]) for k in micro[0]}
    oa = tr.build_optimizer(a, "adamw", 1e-2, 0.01)
    ob = tr.build_optimizer(b, "adamw", 1e-2, 0.01)
    ra = tr.train_step(a, micro, _loss_fn, oa, max_grad_norm=0.0)
    rb = tr.train_step(b, [big], _loss_fn, ob, max_grad_norm=0.0)
    assert ra.loss == pytest.approx(rb.loss, rel=1e-5)
    assert ra.grad_norm == pytest.approx(rb.grad_norm, rel=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    assert all(p.grad is None for p in a.parameters())


def test_train_step_clips_and_steps_scheduler() -> None:
    torch.manual_seed(2)
    model = Toy()
    opt = tr.build_optimizer(model, "lamb", 1e-2, 0.0)
    sched = tr.build_scheduler(opt, "linear", 2, 10)
    before = [p.detach().clone() for p in model.parameters()]
    r = tr.train_step(model, _batches(1, 8), _loss_fn, opt, sched, max_grad_norm=1e-3)
    assert r.lr == pytest.approx(0.5e-2)  # first warmup step
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)
    assert r.grad_norm > 1e-3 and "acc" in r.metrics and not r.skipped
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_precision_and_device_resolution() -> None:
    cpu = torch.device("cpu")
    assert tr.resolve_precision("auto", cpu) == "fp32"
    assert tr.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="--precision fp16"):
        tr.resolve_precision("fp16", cpu)
    assert tr.make_grad_scaler("bf16", cpu) is None
    with tr.autocast("bf16", cpu):
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda"):
            tr.resolve_device("cuda")
    info = tr.init_distributed("cpu")
    assert info.world_size == 1 and info.is_main and not info.distributed


# --------------------------------------------------------------------------- RNG, checkpoints


def test_rng_state_roundtrip() -> None:
    import random

    import numpy as np

    tr.set_seed(5)
    state = tr.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    tr.set_seed(99)
    tr.set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_checkpointer_save_prune_load(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = Toy()
    opt = tr.build_optimizer(model, "lamb", 1e-2, 0.01)
    sched = tr.build_scheduler(opt, "linear", 1, 10)
    ck = tr.Checkpointer(tmp_path, keep_last=2)
    assert ck.latest() is None
    for step in (1, 2, 3):
        tr.train_step(model, _batches(1, 4, seed=step), _loss_fn, opt, sched)
        tr.set_seed(step)
        ck.save(step, model, optimizer=opt, scheduler=sched, train_state={"pos": step * 10})
    assert [s for s, _ in ck.list()] == [2, 3]  # pruned to keep_last
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000002",
        "step-00000003",
    ]
    latest = ck.latest()
    assert latest == tmp_path / "checkpoints" / "step-00000003"
    assert json.loads((latest / "albertzh.json").read_text())["step"] == 3
    expected_rand = torch.rand(3)  # the RNG right after the save of step 3
    saved_w = load_file(latest / "w.st")
    torch.testing.assert_close(saved_w["dense.weight"], model.dense.weight.detach())

    fresh = Toy()
    fresh.load_state_dict(saved_w)
    opt2 = tr.build_optimizer(fresh, "lamb", 1e-2, 0.01)
    sched2 = tr.build_scheduler(opt2, "linear", 1, 10)
    tr.set_seed(123)
    state = ck.load(latest, optimizer=opt2, scheduler=sched2)
    assert state == {"pos": 30, "step": 3}
    assert torch.equal(torch.rand(3), expected_rand)
    assert sched2.last_epoch == sched.last_epoch
    # Both continue identically.
    nxt = _batches(1, 4, seed=9)
    r1 = tr.train_step(model, nxt, _loss_fn, opt, sched)
    r2 = tr.train_step(fresh, nxt, _loss_fn, opt2, sched2)
    assert r1.loss == r2.loss
    for pa, pb in zip(model.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)

    with pytest.raises(ConfigError, match="same world size"):
        ck.load(latest, world_size=2, rank=0)
    with pytest.raises(InputError, match="not a complete checkpoint"):
        ck.load(tmp_path)


def test_checkpoint_without_state_is_ignored_and_finalize(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "step-00000009").mkdir(parents=True)  # a half-written one
    ck = tr.Checkpointer(tmp_path)
    assert ck.latest() is None
    ck.finalize(Toy(), meta={"stage": "toy"})
    assert (tmp_path / "w.st").is_file()
    assert json.loads((tmp_path / "albertzh.json").read_text()) == {"stage": "toy"}


def _saved_steps(tmp_path: Path, steps: tuple[int, ...], keep_last: int = 3) -> tr.Checkpointer:
    model = Toy()
    opt = tr.build_optimizer(model, "adamw", 1e-2, 0.01)
    ck = tr.Checkpointer(tmp_path, keep_last=keep_last)
    for step in steps:
        ck.save(step, model, optimizer=opt, train_state={"pos": step})
    return ck


def test_a_damaged_newest_checkpoint_falls_back_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ck = _saved_steps(tmp_path, (1, 2, 3))
    state = tmp_path / "checkpoints" / "step-00000003" / tr.STATE_DIR / tr.STATE_FILE
    state.write_bytes(state.read_bytes()[:-30])  # the zip directory at the end is cut off
    assert ck.latest() == tmp_path / "checkpoints" / "step-00000002"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "step-00000003" in err[0]
    assert "state/trainer.pt is truncated or corrupt" in err[0]
    with pytest.raises(InputError, match="trainer.pt: cannot read the checkpoint state"):
        ck.load(state.parent.parent)  # load itself refuses it in one line too
    for step in (1, 2):
        state = tmp_path / "checkpoints" / f"step-0000000{step}" / tr.STATE_DIR / tr.STATE_FILE
        state.write_bytes(b"")
    with pytest.raises(InputError, match="no complete checkpoint to resume from"):
        ck.latest()


def test_a_truncated_weights_file_counts_as_damage(tmp_path: Path) -> None:
    ck = _saved_steps(tmp_path, (1,))
    path = tmp_path / "checkpoints" / "step-00000001"
    assert tr.checkpoint_damage(path) is None
    weights = path / "model.safetensors"
    save_file({"a": torch.ones(3, 4), "b": torch.zeros(5)}, weights)
    assert tr.checkpoint_damage(path) is None
    weights.write_bytes(weights.read_bytes()[:-4])
    assert tr.checkpoint_damage(path) == "model.safetensors is truncated or corrupt"
    with pytest.raises(InputError, match="model.safetensors is truncated"):
        ck.latest()


def test_a_failed_save_leaves_no_temp_and_stale_temps_of_dead_processes_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import subprocess
    import sys

    from albertzh.errors import FileSystemError

    ck = _saved_steps(tmp_path, (1,))

    def full_disk(obj, f, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(FileSystemError, match="checkpoints: no space left on device"):
        _saved_steps(tmp_path, (2,))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = tmp_path / "checkpoints" / f".tmp-step-00000002-{os.getppid()}"  # a live writer
    stale = tmp_path / "checkpoints" / f".tmp-step-00000002-{dead.pid}"
    live.mkdir()
    stale.mkdir()
    assert ck.latest() == tmp_path / "checkpoints" / "step-00000001"
    assert live.is_dir() and not stale.exists()


def test_prepare_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    tr.prepare_run_dir(run)
    (run / "metrics.jsonl").write_text("1")
    with pytest.raises(InputError, match="not empty"):
        tr.prepare_run_dir(run)
    tr.prepare_run_dir(run, resume=True)
    assert (run / "metrics.jsonl").exists()
    tr.prepare_run_dir(run, overwrite=True)
    assert not (run / "metrics.jsonl").exists()
    # --overwrite deletes only what a run writes: a foreign file stops it, nothing deleted
    (run / "checkpoints" / "step-00000001").mkdir(parents=True)
    (run / "x").write_text("1")
    with pytest.raises(InputError, match="x was not written by albertzh"):
        tr.prepare_run_dir(run, overwrite=True)
    assert (run / "x").exists() and (run / "checkpoints" / "step-00000001").is_dir()


# --------------------------------------------------------------------------- metrics, signals


def test_metrics_log_and_resume_truncation(tmp_path: Path) -> None:
    log = tr.MetricsLog(tmp_path)
    for s in (10, 20, 30):
        log.log(s, loss=1.0 / s)
    log.log(20, "eval", mlm_accuracy=0.5)
    log.close()
    assert [r["step"] for r in tr.read_metrics(tmp_path, "train")] == [10, 20, 30]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "split": "tra')  # torn by a SIGKILL mid-write
    log = tr.MetricsLog(tmp_path, resume_step=20)
    log.log(30, loss=0.1)
    log.close()
    recs = tr.read_metrics(tmp_path)
    assert [(r["step"], r["split"]) for r in recs] == [
        (10, "train"),
        (20, "train"),
        (20, "eval"),
        (30, "train"),
    ]
    assert recs[-1]["loss"] == 0.1
    assert not tr.MetricsLog(tmp_path / "other", is_main=False).path.parent.exists()


def test_stop_flag_catches_sigint() -> None:
    with tr.StopFlag() as stop:
        assert not stop.check()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cycle_epochs_and_averager() -> None:
    it = tr.cycle_epochs(lambda e: iter(range(2)), start_epoch=3)
    assert [next(it) for _ in range(5)] == [(3, 0), (3, 1), (4, 0), (4, 1), (5, 0)]
    empty = tr.cycle_epochs(lambda e: iter(()))
    with pytest.raises(InputError, match="no batches"):
        next(empty)
    avg = tr.Averager()
    avg.add({"a": 1.0})
    avg.add({"a": 3.0})
    assert avg.pop() == {"a": 2.0} and avg.pop() == {}
    sp = tr.Speedometer(0, 10)
    info = sp.update(1, 100)
    assert info["tokens_per_s"] > 0 and info["eta_s"] >= 0


def test_speedometer_steady_rate_runs_from_the_first_mark_to_the_last(monkeypatch) -> None:
    clock = iter([0.0, 50.0, 50.0, 51.0, 52.0, 52.0, 53.0, 54.0, 54.0])
    monkeypatch.setattr(tr.time, "perf_counter", lambda: next(clock))
    sp = tr.Speedometer(0, 10)  # t0 = 0
    sp.update(1, 100)  # a slow first step (t = 50: compile, allocator)
    assert sp.steady_tokens_per_s() is None
    sp.mark()  # t = 50, 100 tokens
    sp.update(2, 100)  # t = 51
    sp.update(3, 100)  # t = 52
    sp.mark()  # t = 52, 300 tokens
    assert sp.steady_tokens_per_s() == 100.0  # 200 tokens in 2 s; the first step left out
    sp.update(4, 100)  # t = 53
    sp.update(5, 100)  # t = 54
    sp.mark()  # t = 54, 500 tokens
    assert sp.steady_tokens_per_s() == 100.0


def test_metrics_log_writes_tensorboard_when_importable(tmp_path: Path, monkeypatch) -> None:
    import sys
    import types

    scalars: list[tuple] = []

    class FakeWriter:
        def __init__(self, log_dir: str) -> None:
            scalars.append(("dir", log_dir))

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            scalars.append((tag, value, step))

        def close(self) -> None:
            scalars.append(("closed",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = tr.MetricsLog(tmp_path)
    log.log(5, "eval", mlm_accuracy=0.25, note="text is skipped")
    log.close()
    assert scalars == [
        ("dir", str(tmp_path / "tensorboard")),
        ("eval/mlm_accuracy", 0.25, 5),
        ("closed",),
    ]
