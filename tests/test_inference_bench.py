"""benchmarks/export_latency.py and benchmarks/int8_agreement.py run and report sane JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.test_finetune import cfg_for, make_model_dir, make_senti_data

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: object) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args), "--json"],
        capture_output=True, text=True, env=env, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = r.stdout.strip().splitlines()
    return json.loads(line)


@pytest.mark.slow
def test_export_latency_json() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rep = _run(
        "export_latency.py", "--rounds", "1", "--runs", "2", "--batch", "1,2", "--seq", "16",
        "--layers", "1", "--vocab-size", "200",
    )  # fmt: skip
    assert rep["seq"] == 16 and rep["threads"] == 1 and rep["target_ratio"] == 1.3
    assert set(rep["batches"]) == {"1", "2"}
    names = {"pytorch", "pytorch_predict", "torch_int8", "onnxruntime_fp32", "onnxruntime_int8"}
    for r in rep["batches"].values():
        assert set(r["median_ms"]) == set(r["ratio_vs_onnxruntime_fp32"]) == names
        assert all(v > 0 for v in r["median_ms"].values())
        assert all(v > 0 for v in r["ratio_vs_onnxruntime_fp32"].values())
        assert r["ratio_vs_onnxruntime_fp32"]["onnxruntime_fp32"] == 1.0
        assert r["max_abs_diff_vs_pytorch"]["pytorch_predict"] < 1e-4


def test_int8_agreement_json(tmp_path: Path) -> None:
    from albertzh.pipeline import finetune as ft

    model = make_model_dir(tmp_path / "base")
    data = make_senti_data(tmp_path / "data", n_train=64, n_dev=24, seed=2)
    ft.run(cfg_for(model, data, tmp_path / "out", epochs=1, max_seq_len=16))
    rep = _run(
        "int8_agreement.py", "--model", tmp_path / "out", "--task", "chnsenticorp",
        "--data-dir", data, "--split", "dev", "--threads", "1",
    )  # fmt: skip
    assert rep["rows"] == 24 and rep["split"] == "dev"
    assert 0.0 <= rep["agreement"] <= 1.0
    assert set(rep["accuracy"]) == {"fp32", "int8"}
    assert all(0.0 <= a <= 1.0 for a in rep["accuracy"].values())
    assert rep["seconds"]["fp32"] > 0 and rep["seconds"]["int8"] > 0
