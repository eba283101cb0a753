"""``albertzh pretrain`` on the command line: a tiny run, and bad inputs -> exit 2, one line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import typer
from click.testing import CliRunner

import albertzh.cli
from albertzh.data import dataset as ds
from tests.train import test_instances as H  # the tiny-dataset builders

root_cmd = typer.main.get_command(albertzh.cli.app)
TINY = H.TINY_MODEL


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    vocab = H.make_vocab(root / "vocab")
    H.write_instances(root / "shards", 60, vocab=H.vocab_info(vocab), vocab_dir=vocab)
    other = H.make_vocab(root / "other_vocab", n_chars=41)
    H.write_instances(root / "static", 20, vocab=H.vocab_info(vocab), static=True)
    (root / "tiny.json").write_text(json.dumps(TINY))
    (root / "tiny50.json").write_text(json.dumps({**TINY, "vocab_size": 50}))
    (root / "empty").mkdir()
    half = ds.prepare_output(root / "half")
    ds.write_part(half, 0, pa.table({"input_ids": pa.array([[2, 3]], pa.list_(pa.int32()))}))
    return {
        "root": root,
        "vocab": vocab,
        "other": other,
        "shards": root / "shards",
        "static": root / "static",
        "tiny": root / "tiny.json",
        "tiny50": root / "tiny50.json",
        "empty": root / "empty",
        "half": half,
    }


def invoke(*args: str):
    return CliRunner().invoke(root_cmd, ["pretrain", *args])


def _base(files: dict[str, Path], out: Path) -> list[str]:
    return ["--data", str(files["shards"]), "-o", str(out), "--model-config", str(files["tiny"])]


def test_help_lists_the_flags() -> None:
    r = CliRunner().invoke(root_cmd, ["pretrain", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for flag in ("--data", "--size", "--model-config", "--init-from", "--resume", "--keep-last"):
        assert flag in r.stdout, flag
    assert "--model-config-file" not in r.stdout


def test_tiny_run_json_summary(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = invoke(
        *_base(files, out), "--steps", "3", "--batch-size", "8", "--eval-fraction", "0.2",
        "--log-every", "1", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["stage"] == "pretrain" and s["steps"] == 3 and s["model"]["hidden_size"] == 32
    assert s["eval_last"]["instances"] == 12
    assert s["peak_gpu_memory_gib"] is None and s["tokens_per_s"] > 0  # CPU: no GPU peak
    assert s["steady_tokens_per_s"] > 0  # steps 2-3: log lines at 1, 2 and 3
    assert (out / "config.json").is_file() and (out / "metrics.jsonl").is_file()
    # The tokenizer came from the vocab dir recorded in the shards' manifest.
    assert (out / "vocab.txt").read_bytes() == (files["vocab"] / "vocab.txt").read_bytes()
    # Resuming a finished run does no more steps; --epochs sets the length from the data.
    r = invoke(
        *_base(files, out), "--steps", "3", "--batch-size", "8", "--eval-fraction", "0.2",
        "--resume", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resumed_from_step"] == 3
    r = invoke(*_base(files, tmp_path / "ep"), "--epochs", "2", "--batch-size", "16", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps"] == 8  # ceil(60 / 16) = 4 batches per epoch


def test_init_from_a_model_dir(files: dict[str, Path], tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert invoke(*_base(files, first), "--steps", "2", "--batch-size", "8").exit_code == 0
    r = invoke(
        "--data", str(files["shards"]), "-o", str(tmp_path / "second"), "--init-from",
        str(first), "--steps", "1", "--batch-size", "8", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model"]["parameters"] > 0


def _one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_shards_made_with_another_vocab(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = invoke(*_base(files, out), "--vocab", str(files["other"]), "--steps", "1")
    _one_line_error(r, str(files["other"]), "another vocab")
    assert not out.exists()  # nothing written on bad input


def test_model_config_with_another_vocab_size(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = invoke(
        "--data", str(files["shards"]), "-o", str(out), "--model-config", str(files["tiny50"])
    )
    _one_line_error(r, str(files["tiny50"]), "vocab_size 50")
    assert not out.exists()


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("empty", "no manifest.json"),
        ("half", "no manifest.json"),
        ("missing", "no such directory"),
        ("static_as_dynamic", "--masking dynamic"),
    ],
)
def test_bad_data_dirs(files: dict[str, Path], tmp_path: Path, key: str, needle: str) -> None:
    extra: list[str] = []
    if key == "missing":
        data = files["root"] / "nope"
    elif key == "static_as_dynamic":
        data = files["static"]
        extra = ["--masking", "dynamic", "--vocab", str(files["vocab"])]
    else:
        data = files[key]
    out = tmp_path / "run"
    r = invoke("--data", str(data), "-o", str(out), "--model-config", str(files["tiny"]), *extra)
    _one_line_error(r, needle)
    if key != "static_as_dynamic":
        assert str(data) in r.stderr
    assert not out.exists()


def test_dataset_of_another_stage(files: dict[str, Path], tmp_path: Path) -> None:
    docs = ds.prepare_output(tmp_path / "docs")
    ds.write_part(docs, 0, pa.table({"doc_id": ["a"], "text": ["你好"], "source": ["x"]}))

    class _C(H.StageConfig):
        pass

    ds.finish_output(docs, "clean", _C(), [])
    r = invoke("--data", str(docs), "-o", str(tmp_path / "run"), "--size", "tiny")
    _one_line_error(r, str(docs), "expected make-shards")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--grad-accum", "0"], "--grad-accum"),
        (["--eval-fraction", "1.5"], "--eval-fraction"),
        (["--eval-fraction", "0.999"], "--eval-fraction"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16"),
        (["--lr", "-1"], "--lr"),
        (["--init-from", "somewhere"], "--model-config and --init-from"),
        (["--resume", "--overwrite"], "--resume and --overwrite"),
    ],
)
def test_bad_flags(files: dict[str, Path], tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "run"
    r = invoke(*_base(files, out), "--steps", "1", *args)
    _one_line_error(r, needle)
    assert not out.exists()


def test_unknown_size_and_missing_model_config(files: dict[str, Path], tmp_path: Path) -> None:
    r = invoke("--data", str(files["shards"]), "-o", str(tmp_path / "r"), "--size", "huge")
    assert r.exit_code == 2 and "--size" in r.stderr
    missing = tmp_path / "nope.json"
    r = invoke(
        "--data", str(files["shards"]), "-o", str(tmp_path / "r"), "--model-config", str(missing)
    )
    _one_line_error(r, str(missing), "not found")
    r = invoke(
        "--data", str(files["shards"]), "-o", str(tmp_path / "r"), "--init-from", str(missing)
    )
    _one_line_error(r, str(missing), "--init-from")


def test_non_empty_run_dir_needs_resume_or_overwrite(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = invoke(*_base(files, out), "--steps", "1", "--batch-size", "8")
    _one_line_error(r, str(out), "--resume", "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"


def test_print_config(files: dict[str, Path], tmp_path: Path) -> None:
    r = invoke(*_base(files, tmp_path / "r"), "--size", "tiny", "--print-config")
    assert r.exit_code == 2 and "--size and --model-config" in r.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {files['shards']}\noutput: {tmp_path / 'r'}\nsize: small\nsteps: 9\n")
    r = invoke("--config", str(cfg), "--steps", "5", "--print-config")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (
        got["size"] == "small"
        and got["steps"] == 5
        and got["optimizer"] == "auto"
        and got["lr"] is None
    )


def _losses(run: Path) -> list[float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["split"] == "train"]


@pytest.mark.slow
def test_workers_do_not_change_the_run(files: dict[str, Path], tmp_path: Path) -> None:
    common = ["--steps", "3", "--batch-size", "8", "--log-every", "1"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke(*_base(files, a), *common).exit_code == 0
    r = invoke(*_base(files, b), *common, "--num-workers", "2")
    assert r.exit_code == 0, r.output
    assert _losses(a) == _losses(b) and len(_losses(a)) == 3


def test_pad_multiple_leaves_the_losses_and_defaults_by_device(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """Padding to a multiple adds masked-out positions only: the same run, within rounding."""
    common = ["--steps", "3", "--batch-size", "8", "--log-every", "1", "--eval-fraction", "0.2"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke(*_base(files, a), *common).exit_code == 0
    r = invoke(*_base(files, b), *common, "--pad-multiple", "32", "--json")
    assert r.exit_code == 0, r.output
    assert _losses(b) == pytest.approx(_losses(a), abs=1e-4) and len(_losses(a)) == 3
    from albertzh.pipeline.pretrain import pad_multiple_for

    assert pad_multiple_for(None, torch.device("cpu")) == 1
    assert pad_multiple_for(None, torch.device("cuda", 0)) == 64
    assert pad_multiple_for(8, torch.device("cuda", 0)) == 8
    assert invoke(*_base(files, tmp_path / "c"), "--pad-multiple", "0").exit_code == 2
    # a multiple past the model's positions pads to max_position_embeddings, no further
    r = invoke(
        *_base(files, tmp_path / "d"),
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--pad-multiple",
        "100000",
    )
    assert r.exit_code == 0, r.output


def test_eval_data_static_shards_and_options(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = invoke(
        *_base(files, out), "--steps", "2", "--batch-size", "8", "--eval-data",
        str(files["static"]), "--eval-batches", "1", "--optimizer", "adamw", "--schedule",
        "cosine", "--precision", "bf16", "--length-buckets", "2", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["eval_last"]["instances"] == 8 and s["precision"] == "bf16"
    assert s["train"]["loss"] == s["train"]["loss"]  # not NaN
    # Training on static shards uses their stored masks.
    r = invoke(
        "--data", str(files["static"]), "-o", str(tmp_path / "st"), "--model-config",
        str(files["tiny"]), "--vocab", str(files["vocab"]), "--steps", "2", "--batch-size",
        "8", "--masking", "static", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps"] == 2


def test_overwrite_replaces_a_run_dir(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000009").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("{}\n")
    r = invoke(*_base(files, out), "--steps", "1", "--batch-size", "8", "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (out / "checkpoints" / "step-00000009").exists()
    assert (out / "model.safetensors").is_file()
    # a file a run does not write: --overwrite refuses, and deletes nothing
    (out / "old.txt").write_text("x")
    r = invoke(*_base(files, out), "--steps", "1", "--batch-size", "8", "--overwrite")
    _one_line_error(r, "old.txt", "was not written by albertzh")
    assert (out / "old.txt").exists() and (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_compile_flag(files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """--compile runs the model through torch.compile (dynamo); the eager backend keeps the
    test fast here (inductor's C++ codegen takes minutes on this CPU), the plumbing is the same."""
    import torch

    calls = []
    real = torch.compile

    def eager_compile(model, **kw):
        calls.append(type(model).__name__)
        return real(model, **{**kw, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", eager_compile)
    out = tmp_path / "run"
    r = invoke(*_base(files, out), "--steps", "2", "--batch-size", "8", "--compile", "--json")
    assert r.exit_code == 0, r.output
    assert calls == ["AlbertForPreTraining"]
    s = json.loads(r.stdout)
    # Saved under the plain HF key names (no "_orig_mod." prefix from the compiled wrapper).
    from albertzh.model import AlbertForPreTraining
    from albertzh.pipeline.pretrain import weights_digest

    assert weights_digest(AlbertForPreTraining.from_pretrained(out)) == s["weights_sha256"]


def test_off_a_terminal_progress_is_one_log_line_every_log_every_steps(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """Under nohup/tee/SLURM (stderr not a TTY) a long run still shows step, loss, lr,
    tokens/s and the ETA every --log-every steps."""
    r = invoke(*_base(files, tmp_path / "run"), "--steps", "6", "--batch-size", "8",
               "--log-every", "2", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pretrain  ")]
    assert len(lines) == 3, r.stderr
    for n, line in zip((2, 4, 6), lines, strict=True):
        assert f"{n}/6 " in line and f"step {n} " in line, line
        for field in ("loss ", "lr ", "tok_s ", "elapsed ", "eta "):
            assert field in line, (field, line)
    json.loads(r.stdout)  # stdout stays the summary alone


# --------------------------------------------------------------------------- issue 11: model config
# typos, resumed settings, damaged checkpoints, a full disk


def test_a_typo_in_the_model_config_is_refused_naming_the_closest_key(
    files: dict[str, Path], tmp_path: Path
) -> None:
    typo = tmp_path / "typo.json"
    tiny = {k: v for k, v in TINY.items() if k != "hidden_size"}
    typo.write_text(json.dumps({**tiny, "hiden_size": 32}))
    out = tmp_path / "run"
    r = invoke("--data", str(files["shards"]), "-o", str(out), "--model-config", str(typo))
    _one_line_error(r, str(typo), "unknown key 'hiden_size'", "did you mean 'hidden_size'")
    assert not out.exists()


def _resume_base(files: dict[str, Path], out: Path) -> list[str]:
    return [*_base(files, out), "--batch-size", "8", "--optimizer", "lamb", "--save-every", "2"]


def test_resume_refuses_settings_it_cannot_honour_and_applies_a_new_length(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert invoke(*_resume_base(files, out), "--steps", "2").exit_code == 0
    meta = (out / "albertzh.json").read_bytes()
    for args, needles in (
        (["--lr", "0.01"], ["--lr 0.01"]),
        (["--optimizer", "adamw"], ["--optimizer lamb", "--optimizer adamw"]),
        (["--seed", "7", "--weight-decay", "0.1"], ["--seed 42", "--seed 7", "--weight-decay"]),
        (["--size", "tiny"], ["--size/--model-config/--init-from", "hidden_size=32"]),
    ):
        base = _resume_base(files, out)
        if "--size" in args:
            base = [a for a in base if a not in ("--model-config", str(files["tiny"]))]
        r = invoke(*base, "--steps", "2", "--resume", *args)
        _one_line_error(r, "--resume", "step-00000002", *needles)
        assert (out / "albertzh.json").read_bytes() == meta  # nothing recorded
    # A longer run is what a resume is for: applied, and recorded as such.
    r = invoke(*_resume_base(files, out), "--steps", "4", "--resume", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["resumed_from_step"] == 2 and s["steps"] == 4 and s["optimizer"] == "lamb"
    recorded = json.loads((out / "albertzh.json").read_text())
    assert recorded["config"]["steps"] == 4 and recorded["optimizer"]["lr"] == s["lr"]


def test_a_truncated_checkpoint_state_falls_back_to_the_previous_checkpoint(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert invoke(*_resume_base(files, out), "--steps", "4").exit_code == 0
    ckpts = out / "checkpoints"
    state = ckpts / "step-00000004" / "state" / "trainer.pt"
    state.write_bytes(state.read_bytes()[:100])
    r = invoke(*_resume_base(files, out), "--steps", "6", "--resume", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resumed_from_step"] == 2
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1, r.stderr
    assert "step-00000004: state/trainer.pt is truncated" in warning[0]
    assert "resuming from" in warning[0] and "step-00000002" in warning[0]
    # Every checkpoint damaged: one line, nothing trained.
    for step in ckpts.iterdir():
        (step / "state" / "trainer.pt").write_bytes(b"PK\x03\x04 cut short")
    r = invoke(*_resume_base(files, out), "--steps", "8", "--resume")
    _one_line_error(r, "truncated or corrupt", "no complete checkpoint to resume from")


def _ends_with_one_error_line(r, *needles: str) -> None:
    """Exit 2 after training began: the progress lines, then one error line with the needles."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and r.stderr.strip().endswith(errors[0]), r.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_temp(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write fails as torch.save fails on a full disk (a RuntimeError whose context is the
    OSError); the temp dir goes, the one line names the checkpoints dir, and a later resume
    removes the temps that dead processes left."""
    import errno

    import torch

    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        try:
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    out = tmp_path / "run"
    assert invoke(*_resume_base(files, out), "--steps", "2").exit_code == 0
    monkeypatch.setattr(torch, "save", full_disk)
    r = invoke(*_resume_base(files, out), "--steps", "4", "--resume")
    _ends_with_one_error_line(
        r, f"{out / 'checkpoints'}: no space left on device", "step 4 not saved"
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002"]

    monkeypatch.setattr(torch, "save", real_save)
    stale = out / "checkpoints" / f".tmp-step-00000004-{_dead_pid()}"
    (stale / "state").mkdir(parents=True)
    r = invoke(*_resume_base(files, out), "--steps", "4", "--resume", "--keep-last", "1")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004"]


@pytest.mark.slow
def test_a_full_tmpfs(files: dict[str, Path], tmp_path: Path) -> None:
    """The same on a real 1 MB tmpfs, where the machine lets the tests mount one (root)."""
    import os
    import subprocess

    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mnt / "fill").write_bytes(b"\0" * (1024 * 1024 - 200 * 1024))  # ~200 KB left
        out = mnt / "run"
        r = invoke(*_resume_base(files, out), "--steps", "8", "--keep-last", "3")
        _ends_with_one_error_line(r, "no space left on device")
        assert not list((out / "checkpoints").glob(".tmp-*"))
    finally:  # lazily: the failed run's metrics log may still be open in this process
        subprocess.run(["umount", "-l", str(mnt)], check=True)
