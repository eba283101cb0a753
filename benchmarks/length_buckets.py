"""What ``pretrain --length-buckets N`` saves: padding, and real tokens/s of whole runs.

Each batch is padded to its longest row, so on a corpus of short and long documents much of a
step's work is padding. ``--length-buckets N`` sorts windows of N batches by length before
cutting them into batches (issued in a random order). Two figures per N, on the same shards:

1. **padding** (no model): over the first ``--batches`` batches of epoch 0, the share of the
   token slots and of the masked-position slots that are padding, from the loader itself;
2. **speed**: ``albertzh pretrain`` runs of ``--steps`` steps with that N, in alternating
   rounds (the machine is shared and drifts, so every N is measured in every round); the median
   of each N's steady real tokens/s (pretrain's ``steady_tokens_per_s``: from its first log
   line to its last) and its ratio to N = 1 from the same rounds.

Equal steps are equal rows for every N, so the runs' held-out MLM figures (``--eval-fraction``
with the same rows held out) say whether bucketed batches teach the masked-LM as much per row.
That is not the whole answer: on the shards of docs/quality.md they did, and the bucketed
models still finetuned worse (measured there, not here).

    python benchmarks/length_buckets.py --data work/gain/shards \\
        --model-config work/gain/model-128-128-4-4-512.json --buckets 1,16,64 --steps 100
    python benchmarks/length_buckets.py --data DIR --model-config CFG --no-speed   # padding only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from albertzh.errors import AlbertzhError  # noqa: E402
from albertzh.train import instances as idata  # noqa: E402
from albertzh.train.pretraining import mask_spec, roles_of, tokenizer_for  # noqa: E402


def open_shards(
    data_dir: Path, masked_lm_prob: float, max_predictions: int
) -> tuple[idata.InstanceData, idata.MaskSpec]:
    """The shards and the masking pretrain would use on them (opened once, for every N)."""
    data = idata.InstanceData(data_dir)
    tok = tokenizer_for(data, None, None)
    return data, mask_spec(data, roles_of(tok), masked_lm_prob, max_predictions, "auto", "sop")


def padding(
    data: idata.InstanceData,
    spec: idata.MaskSpec,
    bucket: int,
    *,
    batches: int,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """Padding shares of the first ``batches`` batches of epoch 0 with this bucket setting."""
    loader = idata.make_loader(
        data.units, spec, batch_size=batch_size, seed=seed, bucket=bucket, num_workers=0
    )
    real = slots = masked = mslots = n = 0
    for b in loader:
        real += int(b["attention_mask"].sum())
        slots += b["attention_mask"].numel()
        masked += int((b["masked_labels"] != -100).sum())
        mslots += b["masked_labels"].numel()
        n += 1
        if n == batches:
            break
    return {
        "batches": n,
        "token_padding": round(1 - real / slots, 4),
        "masked_slot_padding": round(1 - masked / mslots, 4),
        "real_tokens_per_batch": round(real / n, 1),
    }


def pretrain_once(args, bucket: int, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    cmd = [
        sys.executable, "-m", "albertzh", "pretrain", "--data", str(args.data),
        "--model-config", str(args.model_config), "-o", str(out), "--overwrite",
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--optimizer", "adamw", "--warmup-steps", str(args.warmup),
        "--masked-lm-prob", str(args.masked_lm_prob),
        "--max-predictions", str(args.max_predictions),
        "--length-buckets", str(bucket), "--log-every", str(args.log_every),
        "--eval-fraction", "0.02", "--eval-every", str(args.steps), "--eval-batches", "16",
        "--save-every", "0", "--seed", str(args.seed), "--json",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"pretrain with --length-buckets {bucket} failed: {tail}", file=sys.stderr)
        sys.exit(done.returncode)  # albertzh's own: 2 for bad input
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="make-shards output")
    ap.add_argument("--model-config", type=Path, required=True, help="model config JSON")
    ap.add_argument(
        "--buckets", default="1,16,64", help="comma-separated N (1 = off, the baseline)"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=500, help="batches counted for the padding")
    ap.add_argument("--steps", type=int, default=100, help="pretraining steps per run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (median is kept)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--masked-lm-prob", type=float, default=0.4)
    ap.add_argument("--max-predictions", type=int, default=51)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run")
    ap.add_argument("--no-speed", action="store_true", help="padding figures only")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    try:
        buckets = sorted({int(b) for b in args.buckets.split(",")} | {1})  # 1: the baseline
    except ValueError:
        ap.error(f"--buckets {args.buckets!r}: comma-separated whole numbers expected")
    if buckets[0] < 1:
        ap.error(f"--buckets {args.buckets!r}: every N must be at least 1")
    try:
        report = measure(args, buckets)
    except AlbertzhError as exc:  # bad --data: one line, exit 2 like albertzh itself
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{'N':>4}  {'token pad':>9}  {'masked pad':>10}  {'tok/s (median)':>14}  {'ratio':>6}  eval MLM"
    )
    for b, row in report["buckets"].items():
        p = row["padding"]
        ev = row.get("eval_last", {})
        print(
            f"{b:>4}  {p['token_padding']:>9.1%}  {p['masked_slot_padding']:>10.1%}  "
            f"{row.get('median_tokens_per_s', '-'):>14}  {row.get('ratio_to_off', '-'):>6}  "
            f"{ev.get('mlm_loss', '-')} / {ev.get('mlm_accuracy', '-')}"
        )


def measure(args: argparse.Namespace, buckets: list[int]) -> dict[str, Any]:
    """The padding figures of every N, then (unless --no-speed) the alternating speed runs."""
    data, spec = open_shards(args.data, args.masked_lm_prob, args.max_predictions)
    report: dict[str, Any] = {"buckets": {}}
    for b in buckets:
        rows = padding(
            data, spec, b, batches=args.batches, batch_size=args.batch_size, seed=args.seed
        )
        report["buckets"][b] = {"padding": rows}
    if not args.no_speed:
        rates: dict[int, list[float]] = {b: [] for b in buckets}
        with tempfile.TemporaryDirectory(prefix="albertzh-buckets-") as tmp:
            for r in range(args.rounds):
                for b in buckets if r % 2 == 0 else buckets[::-1]:
                    s = pretrain_once(args, b, Path(tmp) / f"run-{b}")
                    rates[b].append(float(s["steady_tokens_per_s"]))
                    ev = s.get("eval_last") or {}
                    report["buckets"][b]["eval_last"] = {
                        k: round(float(ev[k]), 4) for k in ("mlm_loss", "mlm_accuracy") if k in ev
                    }
        base = statistics.median(rates[1])
        for b in buckets:
            med = statistics.median(rates[b])
            report["buckets"][b].update(
                tokens_per_s=[round(x) for x in rates[b]],
                median_tokens_per_s=round(med),
                ratio_to_off=round(med / base, 3),
            )
    return report


if __name__ == "__main__":
    main()
