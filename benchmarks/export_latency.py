"""CPU latency of a tiny ALBERT classifier: PyTorch (as predict runs it) vs onnxruntime fp32/int8.

The model is albert_tiny_zh's shape (H 312, 4 layers, E 128, vocab 21128) with random weights,
exported by ``albertzh export`` (fp32, and ``--quantize int8``). Per batch size (``--batch``,
unpadded rows of ``--seq`` tokens) these are timed in alternating rounds in one process on the
same inputs and thread count, because the CPU is shared and timings drift:

- ``pytorch``: the model forward in eval mode under ``torch.inference_mode()`` on ready tensors;
- ``pytorch_predict``: ``albertzh.train.inference.predict_logits``, the path ``predict`` and
  ``eval`` take (batching, collate from token lists, numpy out);
- ``torch_int8``: ``predict_logits`` on the model after ``quantize_int8`` (``predict --int8``:
  ``torch.ao.quantization.quantize_dynamic`` of the Linear layers);
- ``onnxruntime_fp32`` / ``onnxruntime_int8``: ``InferenceSession.run`` on the same feeds.

Medians (wall time, and CPU time of the process: steadier on a shared CPU) are printed with
the ratio to onnxruntime_fp32 (target for pytorch_predict <= 1.3), then one JSON line
(``--json``: only the JSON line).

    python benchmarks/export_latency.py                   # seq 128, batch 1 and 32, 1 thread
    python benchmarks/export_latency.py --batch 1 --threads 2 --seq 64 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from albertzh.model import AlbertConfig, AlbertForSequenceClassification
from albertzh.model import onnx as ex
from albertzh.train.inference import predict_logits, quantize_int8

RUNTIMES = ("pytorch", "pytorch_predict", "torch_int8", "onnxruntime_fp32", "onnxruntime_int8")


def _runners(
    model: torch.nn.Module,
    qmodel: torch.nn.Module,
    sessions: dict[str, object],
    feeds: dict[str, np.ndarray],
) -> dict[str, Callable[[], np.ndarray]]:
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    encoded = [
        (ids.tolist(), types.tolist())
        for ids, types in zip(feeds["input_ids"], feeds["token_type_ids"], strict=True)
    ]
    batch = len(encoded)

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return model(**tensors).logits.numpy()

    def run_predict(m: torch.nn.Module) -> np.ndarray:
        return predict_logits(m, encoded, pad_id=0, batch_size=batch, device=torch.device("cpu"))

    return {
        "pytorch": run_torch,
        "pytorch_predict": lambda: run_predict(model),
        "torch_int8": lambda: run_predict(qmodel),
        **{name: (lambda s=s: s.run(None, feeds)[0]) for name, s in sessions.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=0, help="timed calls per runtime per round "
                    "(default: 30 at batch 1, fewer for larger batches: about 30 rows' worth, "
                    "at least 3)")  # fmt: skip
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--layers", type=int, default=0, help="override the preset's layer count")
    ap.add_argument("--vocab-size", type=int, default=21128)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--onnx-dir", type=Path, default=None, help="keep the exported files here "
                    "and reuse them on the next run with the same --preset (seeded weights)")  # fmt: skip
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",") if b.strip()]

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = {"num_hidden_layers": args.layers} if args.layers else {}
    config = AlbertConfig.preset(args.preset, vocab_size=args.vocab_size, num_labels=2, **layers)
    model = AlbertForSequenceClassification(config).eval()
    qmodel = quantize_int8(copy.deepcopy(model))

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        where = args.onnx_dir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        tag = f"{args.preset}-L{config.num_hidden_layers}-V{config.vocab_size}"
        fp32, int8 = where / f"{tag}-fp32.onnx", where / f"{tag}-int8.onnx"
        t0 = time.perf_counter()
        if not (fp32.is_file() and int8.is_file()):
            ex.export_onnx(model, "classifier", fp32)
            ex.quantize_int8(fp32, int8)
        export_s = time.perf_counter() - t0
        sizes = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}
        sessions = {
            "onnxruntime_fp32": ex.ort_session(fp32, threads=args.threads),
            "onnxruntime_int8": ex.ort_session(int8, threads=args.threads),
        }
        for b in batches:
            feeds = ex.sample_inputs(config.vocab_size, batch=b, seq=args.seq, seed=0)
            feeds["attention_mask"][:] = 1  # unpadded rows (predict batches rows by length)
            runners = _runners(model, qmodel, sessions, feeds)
            runs = args.runs or max(3, 30 // b)
            ref = runners["pytorch"]()
            diffs = {name: float(np.abs(fn() - ref).max()) for name, fn in runners.items()}
            for fn in runners.values():  # warm up
                for _ in range(3 if b < 8 else 1):
                    fn()
            times: dict[str, list[float]] = {name: [] for name in runners}
            cpu: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(args.rounds):
                for name, fn in runners.items():
                    t, c = time.perf_counter(), time.process_time()
                    for _ in range(runs):
                        fn()
                    cpu[name].append((time.process_time() - c) / runs * 1000)
                    times[name].append((time.perf_counter() - t) / runs * 1000)
            med = {name: statistics.median(v) for name, v in times.items()}
            cpu_med = {name: statistics.median(v) for name, v in cpu.items()}
            ort = med["onnxruntime_fp32"]
            results[str(b)] = {
                "runs": runs,
                "median_ms": med,
                "min_ms": {name: min(v) for name, v in times.items()},
                "ratio_vs_onnxruntime_fp32": {name: v / ort for name, v in med.items()},
                # CPU time of this process: what the work costs, less the waits on a shared CPU
                "cpu_median_ms": cpu_med,
                "cpu_ratio_vs_onnxruntime_fp32": {
                    name: v / cpu_med["onnxruntime_fp32"] for name, v in cpu_med.items()
                },
                "max_abs_diff_vs_pytorch": diffs,
            }

    report = {
        "preset": args.preset,
        "layers": config.num_hidden_layers,
        "seq": args.seq,
        "threads": args.threads,
        "rounds": args.rounds,
        "batches": results,
        "target_ratio": 1.3,
        "bytes": sizes,
        "export_s": round(export_s, 2),
    }
    if not args.json:
        print(
            f"{args.preset} classifier, seq {args.seq}, {args.threads} thread(s), {args.rounds} "
            f"rounds (export + quantize {export_s:.1f} s); ratio = median / onnxruntime_fp32"
        )
        for b, r in results.items():
            print(f"\nbatch {b} ({r['runs']} runs per round)")
            print(
                f"{'runtime':<18}{'median ms':>10}{'min ms':>9}{'ratio':>8}"
                f"{'cpu ms':>9}{'cpu ratio':>10}{'max|diff|':>11}"
            )
            for name in RUNTIMES:
                print(
                    f"{name:<18}{r['median_ms'][name]:>10.2f}{r['min_ms'][name]:>9.2f}"
                    f"{r['ratio_vs_onnxruntime_fp32'][name]:>8.2f}"
                    f"{r['cpu_median_ms'][name]:>9.2f}"
                    f"{r['cpu_ratio_vs_onnxruntime_fp32'][name]:>10.2f}"
                    f"{r['max_abs_diff_vs_pytorch'][name]:>11.2e}"
                )
            verdict = "ok" if r["ratio_vs_onnxruntime_fp32"]["pytorch_predict"] <= 1.3 else "SLOW"
            print(f"pytorch_predict / onnxruntime_fp32 <= 1.3: {verdict}")
        print(f"\nfile size: fp32 {sizes['fp32'] / 1e6:.1f} MB, int8 {sizes['int8'] / 1e6:.1f} MB")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
