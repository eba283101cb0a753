"""How ``albertzh`` ends a process that ran a torch.distributed process group.

Such a process leaves through ``os._exit`` (gloo can abort a finished worker during the normal
interpreter shutdown); these tests check that nothing is lost on the way: buffered output, the
exit status of success and of a user error. The real 2-process run is in test_pretrain.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import write_corpus

# Marks the process as one that tore down a process group, registers an atexit hook (which a
# hard exit skips, so the test can tell which way the process ended), leaves a line in stdout's
# buffer (a pipe: block-buffered), then runs the CLI.
RUNNER = """
import atexit, sys
sys.stdout.write("BUFFERED\\n")
from albertzh.train import loop as training
training.PROCESS_GROUP_DESTROYED = {distributed}
atexit.register(lambda: print("ATEXIT", file=sys.stderr, flush=True))
from albertzh.cli import main
main(sys.argv[1:])
"""


def _albertzh(tmp_path: Path, *args: object, distributed: bool) -> subprocess.CompletedProcess:
    code = RUNNER.format(distributed=distributed)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )


@pytest.mark.parametrize("distributed", [True, False])
def test_success_keeps_buffered_output_and_status(tmp_path: Path, distributed: bool) -> None:
    corpus = write_corpus(tmp_path / "in.txt", 30, seed=1)
    r = _albertzh(
        tmp_path, "clean", corpus, "-o", tmp_path / "docs", "--json", distributed=distributed
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # stdout is a pipe: block-buffered
    assert summary["stage"] == "clean" and summary["rows_out"] > 0
    assert r.stdout.startswith("BUFFERED\n")
    assert ("ATEXIT" in r.stderr) is not distributed  # a distributed worker skipped shutdown
    assert (tmp_path / "docs" / "manifest.json").is_file()


@pytest.mark.parametrize("distributed", [True, False])
def test_user_error_keeps_its_message_and_exit_code(tmp_path: Path, distributed: bool) -> None:
    r = _albertzh(
        tmp_path,
        "clean",
        tmp_path / "missing.txt",
        "-o",
        tmp_path / "docs",
        distributed=distributed,
    )
    assert r.returncode == 2
    assert "missing.txt" in r.stderr and r.stdout == "BUFFERED\n"
    assert ("ATEXIT" in r.stderr) is not distributed
    assert not (tmp_path / "docs").exists()
