"""``benchmarks/gpu_check.sh`` in its CPU form: exit 0, one skip line, and its figures.

Slow (about 2 minutes on one thread): it runs the corpus chain, a tiny pretrain, a torchrun
pretrain and model_speed.py. On a CUDA machine it runs the CPU form too (``GPU_CHECK_CPU=1``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
SKIP_LINE = (
    "gpu_check: no CUDA device: skipping the CUDA parts "
    "(gpu tests, base bf16 pretrain, torchrun NCCL, MFU)"
)


def test_the_script_parses() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    r = subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_cpu_form_runs_and_prints_its_figures() -> None:
    pytest.importorskip("snownlp")
    pytest.importorskip("transformers")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GPU_CHECK_CPU": "1",
        "PYTHON": sys.executable,
        # the torchrun step finds torch.distributed.run through this interpreter's PATH entry
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    r = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    lines = r.stdout.splitlines()
    assert lines.count(SKIP_LINE) == 1, r.stdout
    assert sum("no CUDA device" in x for x in lines) == 1
    figures = dict(
        re.match(r"gpu_check: figure (\S+) = (.*)$", x).groups()  # type: ignore[union-attr]
        for x in lines
        if x.startswith("gpu_check: figure ")
    )
    assert "skipped" in figures["gpu_tests"] and "failed" not in figures["gpu_tests"]
    assert int(figures["vocab_size"]) > 1000 and int(figures["instances_seq128"]) > 0
    assert float(figures["pretrain-tiny-cpu-fp32_tokens_per_s"]) > 0
    assert figures["torchrun-1_ranks_in_sync"] == "True (world_size 1)"
    assert float(figures["torchrun-1_tokens_per_s"]) > 0
    assert float(figures["model_speed_tiny-cpu_albertzh_tok_s"]) > 0
    assert float(figures["model_speed_tiny-cpu_ratio"]) > 0
    assert figures["graph_breaks"] == "0 (graphs: 1)"
    # the summary table repeats every figure, after the summary line
    start = lines.index(next(x for x in lines if x.startswith("gpu_check: summary (cpu, ")))
    table = [x.split()[0] for x in lines[start + 1 :] if x.startswith("  ")]
    assert table == list(figures)
    assert lines[-1] == "gpu_check: all checks passed"


def test_keep_going_reports_a_timed_out_step_and_runs_the_next(tmp_path: Path) -> None:
    """GPU_CHECK_STEP_TIMEOUT=1 stops the first step (the gpu tests); with
    GPU_CHECK_KEEP_GOING=1 the script goes on to the next one, keeps every step's log in
    GPU_CHECK_LOGS, and still exits non-zero."""
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("bash or timeout not found")
    pytest.importorskip("snownlp")
    logs = tmp_path / "logs"
    env = {
        **os.environ,
        "GPU_CHECK_CPU": "1",
        "GPU_CHECK_KEEP_GOING": "1",
        "GPU_CHECK_STEP_TIMEOUT": "1",
        "GPU_CHECK_LOGS": str(logs),
        "PYTHON": sys.executable,
    }
    r = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode != 0, r.stdout
    assert "gpu_check: FAILED: gpu-tests (exit 124, timed out," in r.stderr, r.stderr[-2000:]
    assert (logs / "gpu-tests.log").is_file() and (logs / "demo-text.log").is_file()
    assert "all checks passed" not in r.stdout
