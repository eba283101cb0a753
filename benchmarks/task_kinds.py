"""NER, reading comprehension and multiple choice: pretrained vs random init, on the shared dev splits.

For each of MSRA NER (entity F1), CMRC 2018 (EM/F1) and C3 (accuracy): the same model config
and vocab finetuned from a pretrained albertzh model and from random init
(``finetune --random-init``), ``--seeds`` finetuning seeds per arm, fixed settings (below; no
search), and the figure read from the **last** dev evaluation of each run (not the best epoch,
so the split that reports is not also the one that picks). It also prints the seconds each
run took and, for one finetuned run per task, the largest difference between albertzh's
outputs and transformers' head class loading the same directory.

Usage (repository root, venv active, ``../shared/data`` present)::

    python benchmarks/task_kinds.py run -w work/kinds --model work/gain/pre-A2000 [--jobs 2]
    python benchmarks/task_kinds.py report work/kinds/results.json

Runs are cached in the work dir (a finished run is not redone). docs/finetuning.md shows the
table this prints.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretraining_gain import SHARED, albertzh  # noqa: E402  (the same subprocess runner)

# Fixed finetuning settings per task (a small model on 1 CPU thread; lr as chosen on dev for
# classification in docs/quality.md). The first metric is the headline.
TASKS: dict[str, dict[str, Any]] = {
    "msra_ner": {
        "metrics": ("f1", "precision", "recall"),
        "flags": ["--epochs", "6", "--batch-size", "32", "--max-seq-len", "128"],
    },
    "cmrc2018": {
        "metrics": ("f1", "em"),
        "flags": [
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--max-seq-len",
            "128",
            "--doc-stride",
            "64",
            "--max-query-len",
            "32",
            "--skip-bad-answers",
        ],  # one off-by-one answer_start in the shared train file
    },
    "c3": {
        "metrics": ("accuracy",),
        "flags": ["--epochs", "2", "--batch-size", "16", "--max-seq-len", "128"],
    },
}
ARMS = ("pretrained", "random")


def _run(a: argparse.Namespace, task: str, arm: str, seed: int) -> dict[str, Any]:
    """One finetuning run (cached): its last dev metrics and wall seconds."""
    run = a.work / task / f"{arm}-s{seed}"
    done = run / "kinds.json"
    if done.is_file():
        return json.loads(done.read_text())
    run.parent.mkdir(parents=True, exist_ok=True)
    flags = [
        "finetune",
        "--task",
        task,
        "--model",
        str(a.model),
        "--data-dir",
        str(SHARED / "tasks" / task),
        "-o",
        str(run),
        "--seed",
        str(seed),
        "--lr",
        str(a.lr),
        "--device",
        "cpu",
        "--overwrite",
        "--random-init" if arm == "random" else "--no-random-init",
        *TASKS[task]["flags"],
    ]
    if a.steps:
        flags += ["--steps", str(a.steps)]
    t0 = time.perf_counter()
    summary = albertzh(*flags, log=run.parent / f"{arm}-s{seed}.log", threads=a.threads)
    seconds = time.perf_counter() - t0
    last = json.loads((run / "metrics.json").read_text())["dev_history"][-1]
    rec = {
        "task": task,
        "arm": arm,
        "seed": seed,
        "seconds": round(seconds, 1),
        "steps": summary.get("steps", last.get("step")),
        "dev": {m: last[m] for m in TASKS[task]["metrics"]},
    }
    done.write_text(json.dumps(rec) + "\n")
    return rec


def hf_parity(run: Path) -> float:
    """Largest |albertzh - transformers| over every output of the head, on a fixed batch."""
    import torch
    import transformers

    from albertzh.model import HEAD_MODELS

    transformers.utils.logging.disable_progress_bar()
    from albertzh.model.onnx import model_inputs

    arch = json.loads((run / "config.json").read_text())["architectures"][0]
    ours = HEAD_MODELS[arch].from_pretrained(run).eval()
    theirs = getattr(transformers, arch).from_pretrained(run).eval()
    feeds = {k: torch.from_numpy(v) for k, v in model_inputs(ours, batch=4, seq=64).items()}
    with torch.no_grad():
        a, b = ours(**feeds), theirs(**feeds)
    names = [n for n in ("logits", "start_logits", "end_logits") if getattr(a, n, None) is not None]
    return max(float((getattr(a, n) - getattr(b, n)).abs().max()) for n in names)


def _spread(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"


def report(results: dict[str, Any]) -> None:
    print(f"model: {results['model']}  seeds: {results['seeds']}  lr: {results['lr']}")
    print(
        "| task | metric | pretrained | random init | gain | separated | seconds/run (pre, rand) | HF max diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for task, res in results["tasks"].items():
        for i, m in enumerate(TASKS[task]["metrics"]):
            p = [r["dev"][m] for r in res["pretrained"]]
            q = [r["dev"][m] for r in res["random"]]
            secs = "{:.0f}, {:.0f}".format(
                *(statistics.fmean(r["seconds"] for r in res[arm]) for arm in ARMS)
            )
            tail = f"{secs} | {res['hf_max_abs_diff']:.1e}" if i == 0 else " | "
            print(
                f"| {task if i == 0 else ''} | {m} | {_spread(p)} | {_spread(q)} | "
                f"{100 * (statistics.fmean(p) - statistics.fmean(q)):+.1f} | "
                f"{'yes' if min(p) > max(q) else 'no'} | {tail} |"
            )


def run(a: argparse.Namespace) -> None:
    a.work.mkdir(parents=True, exist_ok=True)
    jobs = [(t, arm, s) for t in a.tasks for s in range(a.seeds) for arm in ARMS]
    with ThreadPoolExecutor(a.jobs) as pool:  # each run is its own process
        recs = list(pool.map(lambda j: _run(a, *j), jobs))
    results: dict[str, Any] = {"model": str(a.model), "seeds": a.seeds, "lr": a.lr, "tasks": {}}
    for t in a.tasks:
        res: dict[str, Any] = {
            arm: [r for r in recs if r["task"] == t and r["arm"] == arm] for arm in ARMS
        }
        res["hf_max_abs_diff"] = hf_parity(a.work / t / "pretrained-s0")
        results["tasks"][t] = res
    (a.work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report(results)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="finetune every task, arm and seed; print the table")
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True, help="pretrained albertzh model dir")
    p.add_argument("--tasks", type=lambda s: s.split(","), default=list(TASKS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=None, help="override the epochs (for tests)")
    p.add_argument("--jobs", type=int, default=1, help="finetuning runs at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p = sub.add_parser("report", help="print the table of a results.json")
    p.add_argument("results", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "run":
        unknown = sorted(set(a.tasks) - set(TASKS))
        if unknown:
            ap.error(f"--tasks: unknown {', '.join(unknown)} (choose from {', '.join(TASKS)})")
        run(a)
    else:
        report(json.loads(a.results.read_text()))


if __name__ == "__main__":
    main()
