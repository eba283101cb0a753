"""Permission denied on an output or an input: one line naming the path, exit 2, every command.

Root ignores file modes, so as root each denied run drops to the ``nobody`` user for its
duration (``seteuid``, in this process); the inputs live in a world-readable temp dir. Each
command first runs once with a writable output: that checks the case and loads every module the
command imports lazily (nobody cannot read root's Python installation).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import invoke, one_error_line, write_corpus
from tests.pipeline.test_finetune import make_model_dir, make_senti_data

NOBODY = 65534


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """The body runs as a user the file modes apply to."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture(scope="module")
def inputs() -> Iterator[dict[str, Path]]:
    base = Path(tempfile.mkdtemp(prefix="albertzh-perm-"))
    base.chmod(0o755)
    try:
        corpus = write_corpus(base / "corpus.txt", 20, seed=1)
        paths = {"base": base, "corpus": corpus, "senti": make_senti_data(base / "senti", 32, 8)}
        for name, args in (
            ("docs", ["clean", corpus]),
            ("words", ["segment", base / "docs"]),
            ("voc", ["build-vocab", base / "words"]),
        ):
            r = invoke(*args, "-o", base / name)
            assert r.exit_code == 0, r.output
            paths[name] = base / name
        paths["model"] = make_model_dir(base / "model")
        r = invoke(
            "finetune", "--task", "chnsenticorp", "--model", paths["model"], "--data-dir",
            paths["senti"], "-o", base / "clf", "--epochs", "1", "--batch-size", "16",
            "--max-seq-len", "16", "--device", "cpu",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        paths["clf"] = base / "clf"
        for root, dirs, files in os.walk(base):  # model dirs are written private (0700)
            for name in dirs:
                Path(root, name).chmod(0o755)
            for name in files:
                Path(root, name).chmod(0o644)
        (base / "ok").mkdir()
        (base / "open").mkdir()
        (base / "open").chmod(0o777)
        (base / "ro").mkdir(mode=0o555)
        (base / "ro").chmod(0o555)
        yield paths
    finally:
        shutil.rmtree(base, ignore_errors=True)


COMMANDS = {
    "clean": lambda p, out: ["clean", p["corpus"], "-o", out],
    "segment": lambda p, out: ["segment", p["docs"], "-o", out],
    "build-vocab": lambda p, out: ["build-vocab", p["words"], "-o", out],
    "make-shards": lambda p, out: ["make-shards", p["words"], "--vocab", p["voc"], "-o", out],
    "convert": lambda p, out: ["convert", "--from", "hf", p["model"], "-o", out],
    "export": lambda p, out: ["export", "--model", p["model"], "-o", out],
    "eval": lambda p, out: [
        "eval",
        "--model",
        p["clf"],
        "--task",
        "chnsenticorp",
        "--data-dir",
        p["senti"],
        "--predictions",
        out.with_suffix(".jsonl"),
        "--device",
        "cpu",
    ],  # fmt: skip
    "predict": lambda p, out: [
        "predict",
        p["corpus"],
        "--model",
        p["clf"],
        "-o",
        out.with_suffix(".jsonl"),
        "--device",
        "cpu",
    ],  # fmt: skip
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_output_in_a_read_only_directory(inputs: dict[str, Path], command: str) -> None:
    make = COMMANDS[command]
    r = invoke(*make(inputs, inputs["base"] / "ok" / command))
    assert r.exit_code == 0, r.output
    with unprivileged():
        r = invoke(*make(inputs, inputs["base"] / "ro" / command))
    line = one_error_line(r, str(inputs["base"] / "ro"))
    assert "permission denied" in line.lower(), line


def test_an_unreadable_input(inputs: dict[str, Path]) -> None:
    secret = inputs["base"] / "secret.txt"
    shutil.copy(inputs["corpus"], secret)
    secret.chmod(0)
    out = inputs["base"] / "open" / "secret"
    with unprivileged():
        r = invoke("clean", secret, "-o", out)
    line = one_error_line(r, str(secret))
    assert "permission denied" in line.lower(), line


def test_an_unreadable_config_file(inputs: dict[str, Path]) -> None:
    config = inputs["base"] / "run.yaml"
    config.write_text("workers: 1\n")
    config.chmod(0)
    with unprivileged():
        r = invoke(
            "clean", inputs["corpus"], "-o", inputs["base"] / "open" / "c", "--config", config
        )
    line = one_error_line(r, str(config))
    assert "permission denied" in line.lower(), line
