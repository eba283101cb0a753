"""Does ``predict --int8`` agree with fp32? Predict a labelled split with both and compare.

The split is read and scored the way ``albertzh eval`` does it (``load_classifier`` ->
``Classifier.logits`` -> ``predict_logits``); the int8 model is ``load_classifier(int8=True)``,
what ``albertzh predict --int8`` loads (dynamic int8 quantization of the Linear layers, CPU).
Prints the share of rows whose predicted label is the same, the accuracy of each against the
split's labels (when it has them) and the seconds each took. Use a held-out split (dev), never
the test split. Classification models only.

    python benchmarks/int8_agreement.py --model runs/senti --task chnsenticorp \\
        --data-dir tasks/chnsenticorp --split dev [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from albertzh.data import tasks as T
from albertzh.train.inference import load_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="finetuned classifier directory")
    ap.add_argument("--task", required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-seq-len", type=int, default=None, help="default: the finetune value")
    ap.add_argument("--limit", type=int, default=0, help="only the first N rows (0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    clfs, seconds, logits = {}, {}, {}
    for name, int8 in (("fp32", False), ("int8", True)):
        t0 = time.perf_counter()
        clfs[name] = load_classifier(
            args.model, device="cpu", precision="fp32", max_seq_len=args.max_seq_len, int8=int8
        )
        seconds[f"load_{name}"] = time.perf_counter() - t0
    clf = clfs["fp32"]
    if clf.regression:
        raise SystemExit(f"{args.model}: a regression model (label agreement needs a classifier)")
    task = T.get_task(args.task)
    path = T.split_file(task, args.data_dir, args.split)
    examples = T.read_examples(task, path, labels=clf.labels)
    if args.limit:
        examples = examples[: args.limit]
    pairs = [(e.text_a, e.text_b) for e in examples]
    for name, c in clfs.items():
        t0 = time.perf_counter()
        logits[name] = c.logits(pairs, args.batch_size)
        seconds[name] = time.perf_counter() - t0

    pred = {name: v.argmax(-1) for name, v in logits.items()}
    report: dict = {
        "model": str(args.model),
        "task": task.name,
        "split": args.split,
        "file": str(path),
        "rows": len(examples),
        "threads": torch.get_num_threads(),
        "agreement": float((pred["fp32"] == pred["int8"]).mean()) if examples else 1.0,
        "max_abs_logit_diff": float(np.abs(logits["fp32"] - logits["int8"]).max(initial=0.0)),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "speedup_int8": seconds["fp32"] / seconds["int8"] if seconds["int8"] else None,
    }
    if examples and all(e.label is not None for e in examples):
        gold = np.array([clf.labels.index(str(e.label)) for e in examples])
        report["accuracy"] = {name: float((p == gold).mean()) for name, p in pred.items()}
    if not args.json:
        print(
            f"{task.name}/{args.split}: {len(examples)} rows, {report['threads']} thread(s), "
            f"batch {args.batch_size}"
        )
        print(f"label agreement int8 vs fp32: {report['agreement']:.4f} (target >= 0.99)")
        for name in ("fp32", "int8"):
            acc = report.get("accuracy", {}).get(name)
            acc_s = f"accuracy {acc:.4f}, " if acc is not None else ""
            print(f"{name}: {acc_s}{seconds[name]:.2f} s")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
