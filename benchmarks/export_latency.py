"""Batch-1 latency of a tiny ALBERT classifier: PyTorch vs onnxruntime fp32 vs onnxruntime int8.

The model is albert_tiny_zh's shape (H 312, 4 layers, E 128, vocab 21128) with random weights,
exported by ``albertzh export`` (fp32, and ``--quantize int8``). The three runtimes are timed
in alternating rounds in one process on the same inputs and thread count, because the CPU is
shared and timings drift; medians and ratios against PyTorch are printed.

    python benchmarks/export_latency.py                 # seq 128, 1 thread, 5 rounds x 30 runs
    python benchmarks/export_latency.py --threads 2 --seq 64 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from albertzh.model import AlbertConfig, AlbertForSequenceClassification
from albertzh.model import onnx as ex


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30, help="timed calls per runtime per round")
    ap.add_argument("--preset", default="tiny")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = AlbertConfig.preset(args.preset, vocab_size=21128, num_labels=2)
    model = AlbertForSequenceClassification(config).eval()
    feeds = ex.sample_inputs(config.vocab_size, batch=1, seq=args.seq, seed=0)
    feeds["attention_mask"][:] = 1  # one unpadded sentence

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        t0 = time.perf_counter()
        ex.export_onnx(model, "classifier", fp32)
        ex.quantize_int8(fp32, int8)
        export_s = time.perf_counter() - t0
        sizes = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}
        sessions = {
            "onnxruntime_fp32": ex.ort_session(fp32, threads=args.threads),
            "onnxruntime_int8": ex.ort_session(int8, threads=args.threads),
        }
        tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}

        def run_torch() -> np.ndarray:
            with torch.inference_mode():
                return model(**tensors).logits.numpy()

        runners = {
            "pytorch": run_torch,
            **{name: (lambda s=s: s.run(None, feeds)[0]) for name, s in sessions.items()},
        }
        ref = run_torch()
        diffs = {name: float(np.abs(fn() - ref).max()) for name, fn in runners.items()}
        for fn in runners.values():  # warm up
            for _ in range(5):
                fn()
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, fn in runners.items():
                t = time.perf_counter()
                for _ in range(args.runs):
                    fn()
                times[name].append((time.perf_counter() - t) / args.runs * 1000)

    medians = {name: statistics.median(v) for name, v in times.items()}
    base = medians["pytorch"]
    print(
        f"{args.preset} classifier, batch 1, seq {args.seq}, {args.threads} thread(s), "
        f"{args.rounds} rounds x {args.runs} runs (export + quantize {export_s:.1f} s)"
    )
    print(f"{'runtime':<18}{'median ms':>10}{'min ms':>9}{'speedup':>9}{'max|diff|':>11}")
    for name in runners:
        print(
            f"{name:<18}{medians[name]:>10.2f}{min(times[name]):>9.2f}"
            f"{base / medians[name]:>8.2f}x{diffs[name]:>11.2e}"
        )
    print(f"file size: fp32 {sizes['fp32'] / 1e6:.1f} MB, int8 {sizes['int8'] / 1e6:.1f} MB")
    print(
        json.dumps(
            {
                "seq": args.seq,
                "threads": args.threads,
                "median_ms": medians,
                "speedup_vs_pytorch": {k: base / v for k, v in medians.items()},
                "max_abs_diff_vs_pytorch": diffs,
                "bytes": sizes,
            }
        )
    )


if __name__ == "__main__":
    main()
