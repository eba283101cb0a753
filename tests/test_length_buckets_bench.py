"""benchmarks/length_buckets.py: its padding figures, and a smoke run of the whole script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmark_module import load_benchmark
from tests.train import test_instances as H

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "length_buckets.py"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("buckets")
    vocab = H.make_vocab(root / "vocab")
    # rows of 6 to 60 tokens: batches padded to their longest row are mostly padding
    H.write_instances(
        root / "shards", 96, vocab=H.vocab_info(vocab), vocab_dir=vocab, min_len=6, max_len=60
    )
    (root / "tiny.json").write_text(json.dumps(H.TINY_MODEL))
    return {"shards": root / "shards", "tiny": root / "tiny.json"}


def test_buckets_cut_the_padding(files: dict[str, Path]) -> None:
    bench = load_benchmark("length_buckets", "_length_buckets_bench")
    data, spec = bench.open_shards(files["shards"], masked_lm_prob=0.4, max_predictions=8)
    off = bench.padding(data, spec, 1, batches=100, batch_size=8, seed=0)
    on = bench.padding(data, spec, 12, batches=100, batch_size=8, seed=0)
    assert off["batches"] == on["batches"] == 12  # 96 rows, batch 8: every row once
    assert 0.2 < off["token_padding"] < 0.8
    assert on["token_padding"] < off["token_padding"] / 2
    assert on["masked_slot_padding"] < off["masked_slot_padding"]
    # the same rows either way: the real tokens per batch do not change
    assert on["real_tokens_per_batch"] == off["real_tokens_per_batch"]


def test_cli_runs_both_settings_and_reports_the_ratio(files: dict[str, Path]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        "--data", str(files["shards"]), "--model-config", str(files["tiny"]),
        "--buckets", "4", "--batch-size", "8", "--batches", "6", "--steps", "4",
        "--log-every", "1", "--rounds", "1", "--warmup", "1", "--max-predictions", "8", "--json",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["buckets"]
    assert set(report) == {"1", "4"}  # 1 (the baseline) is always measured
    assert report["1"]["ratio_to_off"] == 1.0
    for row in report.values():
        assert row["median_tokens_per_s"] > 0
        assert row["eval_last"]["mlm_loss"] > 0 and 0 <= row["eval_last"]["mlm_accuracy"] <= 1
    assert report["4"]["padding"]["token_padding"] < report["1"]["padding"]["token_padding"]


def test_cli_names_a_failing_run(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**H.TINY_MODEL, "vocab_size": 99}))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(files["shards"]), "--model-config", str(bad),
         "--buckets", "1", "--batches", "2", "--steps", "2", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2  # albertzh pretrain's exit code for a bad config
    assert "--length-buckets 1 failed" in proc.stderr
    assert "vocab_size" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--buckets", "1,x"], "comma-separated whole numbers"),
        (["--buckets", "0,16"], "at least 1"),
        (["--data", "no/such/shards"], "no/such/shards"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    files: dict[str, Path], args: list[str], message: str
) -> None:
    base = ["--data", str(files["shards"]), "--model-config", str(files["tiny"]), "--no-speed"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *base, *args], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
