"""benchmarks/step_efficiency.py on a tiny model: albertzh and a plain transformers loop agree.

Both implementations get the same batches, the same initial weights and the same dropout
draws, so they should agree to float rounding. Tolerances, from short runs of this tiny model
(fp32 CPU, AdamW lr 1e-3): at step 0 the held-out MLM losses differ by ~4e-7 (albertzh computes
the last layer and the MLM head only at the masked positions, with a boolean SDPA mask and one
fused GELU; transformers over every token, with an additive mask); after 6 steps by < 1e-6.
Adam divides each update by sqrt(v), so those rounding differences are amplified, not damped:
with lr 1e-2 the gap is ~6e-6 after 40 steps, and LAMB at lr 1e-2 reaches ~1e-4. The test
asserts 1e-5 at step 0 and 1e-4 after the steps: orders of magnitude below a real mistake
(a wrong loss weighting, mask or schedule moves the loss by 1e-3 to 1e-1 in a few steps).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.benchmark_module import load_benchmark
from tests.train.test_instances import TINY_MODEL, make_vocab, vocab_info, write_instances

pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_efficiency.py"


se = load_benchmark("step_efficiency")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("step_efficiency")
    vocab = make_vocab(root / "vocab")
    write_instances(root / "shards", 120, vocab=vocab_info(vocab), vocab_dir=vocab, max_len=40)
    (root / "tiny.json").write_text(json.dumps(TINY_MODEL))
    return {"root": root, "shards": root / "shards", "model": root / "tiny.json"}


def _argv(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(inputs["shards"]),
        "--model-config",
        str(inputs["model"]),
        "--batch-size",
        "8",
        "--eval-batches",
        "2",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def result(inputs: dict[str, Path]) -> dict:
    out = inputs["root"] / "out"
    argv = _argv(inputs, out, "--steps", "6", "--checkpoints", "3,6", "--seeds", "0,1")
    argv += ["--warmup-steps", "0", "--lr", "1e-3"]
    assert se.main(argv) == 0
    return {"out": out, "json": json.loads((out / se.JSON_NAME).read_text())}


def test_json_has_both_curves_at_the_checkpoints(result: dict) -> None:
    rec = result["json"]
    assert rec["checkpoints"] == [0, 3, 6]
    assert "--checkpoints 3,6" in rec["command"]
    for impl in ("albertzh", "reference"):
        curve = rec["curves"][impl]
        assert curve["step"] == [0, 3, 6]
        for m in ("mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy"):
            assert len(curve[m]) == 3
        for seed in ("0", "1"):
            assert rec["per_seed"][seed]["curves"][impl]["step"] == [0, 3, 6]
    assert {(r["step"], r["metric"]) for r in rec["summary"]} == {
        (s, m) for s in (0, 3, 6) for m in ("mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy")
    }
    assert rec["ln_vocab"] == pytest.approx(3.80666, abs=1e-4)  # ln 45
    assert all(v > 0 for v in rec["tokens_per_s"].values())
    # Seeds differ (init and batches), so the seed-to-seed spread is defined.
    assert (
        rec["per_seed"]["0"]["train_batches_sha256"] != rec["per_seed"]["1"]["train_batches_sha256"]
    )
    assert all(r["seed_spread"] is not None for r in rec["summary"])


def test_png_written(result: dict) -> None:
    png = result["out"] / se.PNG_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


def test_same_init_same_loss_at_step_0(result: dict) -> None:
    for seed in ("0", "1"):
        c = result["json"]["per_seed"][seed]["curves"]
        assert c["albertzh"]["step"][0] == 0
        assert abs(c["albertzh"]["mlm_loss"][0] - c["reference"]["mlm_loss"][0]) < 1e-5
        assert abs(c["albertzh"]["sop_loss"][0] - c["reference"]["sop_loss"][0]) < 1e-5
        assert c["albertzh"]["mlm_accuracy"][0] == c["reference"]["mlm_accuracy"][0]


def test_curves_agree_step_for_step(result: dict) -> None:
    for seed in ("0", "1"):
        r = result["json"]["per_seed"][seed]
        a, ref = r["curves"]["albertzh"], r["curves"]["reference"]
        for j in range(3):
            assert abs(a["mlm_loss"][j] - ref["mlm_loss"][j]) < 1e-4
            assert abs(a["mlm_accuracy"][j] - ref["mlm_accuracy"][j]) < 1e-9
        # Training losses of every step, and the same lr each step (no warmup: same schedule).
        t = r["train"]
        assert len(t["albertzh_mlm_loss"]) == 6
        assert (
            max(
                abs(x - y)
                for x, y in zip(t["albertzh_mlm_loss"], t["reference_mlm_loss"], strict=True)
            )
            < 1e-4
        )
        assert t["albertzh_lr"] == pytest.approx(t["reference_lr"], rel=1e-12)
        # The models did train: the loss moved.
        assert a["mlm_loss"][-1] != a["mlm_loss"][0]


def test_warmup_offset_is_one_step(inputs: dict[str, Path], tmp_path: Path) -> None:
    """albertzh warms up as (s+1)/W, transformers as s/W: the reference lags by one step."""
    argv = _argv(inputs, tmp_path, "--steps", "3", "--checkpoints", "3", "--seeds", "0")
    assert se.main([*argv, "--warmup-steps", "2", "--lr", "1e-3"]) == 0
    t = json.loads((tmp_path / se.JSON_NAME).read_text())["per_seed"]["0"]["train"]
    assert t["albertzh_lr"] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert t["reference_lr"] == pytest.approx([0.0, 5e-4, 1e-3])


def test_missing_dependency_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert se.main(["--data", "x", "--model-config", "y", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "matplotlib" in err and "pip install" in err


def test_jobs_run_seeds_in_processes_with_the_same_figures(
    inputs: dict[str, Path], result: dict, tmp_path: Path
) -> None:
    """--jobs 2 runs the two seeds in processes of their own; every figure is the sequential one."""
    import subprocess

    argv = _argv(inputs, tmp_path, "--steps", "6", "--checkpoints", "3,6", "--seeds", "0,1")
    argv += ["--warmup-steps", "0", "--lr", "1e-3", "--jobs", "2", "--threads", "1"]
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], cwd=root, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    par = json.loads((tmp_path / se.JSON_NAME).read_text())
    seq = result["json"]
    assert par["seeds"] == seq["seeds"] == [0, 1]
    for s in ("0", "1"):
        for impl in ("albertzh", "reference"):
            a = par["per_seed"][s]["curves"][impl]
            b = seq["per_seed"][s]["curves"][impl]
            assert a["step"] == b["step"]
            assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-5)
    # the two seeds differ, so the processes did not run one seed twice
    assert par["per_seed"]["0"]["curves"]["albertzh"]["mlm_loss"] != pytest.approx(
        par["per_seed"]["1"]["curves"]["albertzh"]["mlm_loss"], rel=1e-5
    )


def test_bad_jobs_and_threads_are_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    for flag in ("--jobs", "--threads"):
        with pytest.raises(SystemExit) as exc:
            se.main([*_argv(inputs, tmp_path), flag, "0"])
        assert exc.value.code == 2
