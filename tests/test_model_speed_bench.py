"""benchmarks/model_speed.py: the matmul peak, the FLOP count and a smoke run of the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from albertzh.model import AlbertConfig
from tests.benchmark_module import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "model_speed.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark module, imported by path (benchmarks/ is not a package)."""
    return load_benchmark("model_speed", "_model_speed_bench")


def test_matmul_peak_is_positive(bench):
    flops = bench.measure_matmul_peak("cpu", "fp32", n=64, repeats=3)
    assert flops > 0


def test_train_flops_per_step_matches_a_hand_count(bench):
    # H 8, E 4, V 10, F 16, 2 layers; batch 2, seq 5, 3 masked per sequence.
    cfg = AlbertConfig.preset(
        "tiny",
        vocab_size=10,
        embedding_size=4,
        hidden_size=8,
        num_attention_heads=2,
        intermediate_size=16,
        num_hidden_layers=2,
    )
    tokens = 2 * 5
    embedding = 2 * 4 * 8 * tokens  # E -> H: 640
    qkvo = 2 * 4 * 8 * 8 * tokens  # 5120 per layer
    ffn = 2 * 2 * 8 * 16 * tokens  # 5120 per layer
    attention = 2 * 2 * (5 * 5 * 8) * 2  # scores + context, 2 sequences: 1600 per layer
    head = 2 * (8 * 4 + 4 * 10) * (2 * 3)  # H -> E, E -> V at 6 positions: 864
    forward = embedding + 2 * (qkvo + ffn + attention) + head
    assert forward == 25_184
    assert bench.train_flops_per_step(cfg, batch=2, seq=5, masked=3) == 3 * forward


def test_cli_json_reports_share_of_matmul_peak():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--sizes", "tiny", "--batch", "2", "--seq", "16", "--steps", "1", "--rounds", "1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    peak_lines = [ln for ln in lines if ln.startswith("# fp32 matmul peak ")]
    assert len(peak_lines) == 1 and "GFLOP/s" in peak_lines[0], proc.stdout
    results = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert [r["size"] for r in results] == ["tiny"]
    r = results[0]
    assert r["albertzh_tok_s"] > 0
    assert r["albertzh_gflops"] > 0
    assert r["matmul_peak_gflops"] > 0
    assert 0 < r["share_of_peak"] < 1.5
    assert 0 < r["hf_share_of_peak"] < 1.5
    assert "mfu" not in r  # the spec-sheet MFU is for GPUs
