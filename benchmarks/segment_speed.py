"""Throughput of ``albertzh segment`` (rjieba vs jieba, 1 and 2 workers) on the CLUE sample.

All figures are measured in this run (the machine is shared: compare ratios, not absolutes):

- baselines: bare ``rjieba.cut`` and bare ``jieba.lcut`` over the same documents in one process
  (dictionary loading excluded);
- the segment stage, each configuration in its own process (``run()`` timed from reading the
  docs dataset to the manifest, dictionary loading included), MB of document text per second,
  and its ratio to bare ``jieba.lcut``;
- CPU seconds of each stage process (incl. its workers), less noisy than wall time here.

The docs dataset is made once with ``albertzh clean`` from the corpus repeated ``--scale``
times (each copy's lines prefixed so de-duplication keeps them).

Usage: .venv/bin/python benchmarks/segment_speed.py [CORPUS] [--scale 3] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "corpus" / "clue_corpus_small_sample.txt"

CHILD = """
import json, resource, sys, time
from albertzh.pipeline.segment import SegmentConfig, run
cfg = SegmentConfig.model_validate(json.loads(sys.argv[1]))
t0 = time.perf_counter()
s = run(cfg)
dt = time.perf_counter() - t0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
print(json.dumps({"seconds": dt, "cpu": cpu, "mb": s.figures["mb"], "words": s.figures["words"]}))
"""

BASELINE = """
import json, logging, sys, time
import pyarrow.parquet as pq
texts = []
for p in sorted(__import__("pathlib").Path(sys.argv[1]).glob("part-*.parquet")):
    texts += pq.read_table(p, columns=["text"]).column("text").to_pylist()
mb = sum(len(t.encode()) for t in texts) / 1e6
out = {"mb": mb}
import rjieba
r = rjieba.Jieba()
t0 = time.perf_counter(); n = sum(len(r.cut(t, True)) for t in texts)
out["rjieba_s"] = time.perf_counter() - t0
import jieba
jieba.setLogLevel(logging.WARNING); jieba.initialize()
t0 = time.perf_counter(); n = sum(len(jieba.lcut(t)) for t in texts)
out["jieba_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def _py(code: str, *args: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--scale", type=int, default=1, help="repeat the corpus this many times")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration (median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = tmp / "corpus.txt"
        lines = args.corpus.read_text(encoding="utf-8").splitlines()
        raw.write_text(
            "\n".join(
                f"{'' if k == 0 else f'【副本{k}】'}{x}" for k in range(args.scale) for x in lines
            )
            + "\n",
            encoding="utf-8",
        )
        subprocess.run(
            [sys.executable, "-m", "albertzh", "clean", str(raw), "-o", str(tmp / "docs")],
            check=True,
            capture_output=True,
        )
        base = _py(BASELINE, str(tmp / "docs"))
        mb = base["mb"]
        results: dict[str, dict] = {
            "bare rjieba.cut": {"mb_per_s": mb / base["rjieba_s"]},
            "bare jieba.lcut": {"mb_per_s": mb / base["jieba_s"]},
        }
        for engine in ("rjieba", "jieba"):
            for workers in (1, 2):
                runs = []
                for k in range(args.repeat):
                    cfg = {
                        "input": str(tmp / "docs"),
                        "output": str(tmp / f"w-{engine}-{workers}-{k}"),
                        "engine": engine,
                        "workers": workers,
                    }
                    runs.append(_py(CHILD, json.dumps(cfg)))
                sec = statistics.median(r["seconds"] for r in runs)
                cpu = statistics.median(r["cpu"] for r in runs)
                results[f"segment {engine} x{workers}"] = {
                    "mb_per_s": runs[0]["mb"] / sec,
                    "seconds": sec,
                    "cpu_s": cpu,
                }
        jieba_rate = results["bare jieba.lcut"]["mb_per_s"]
        for v in results.values():
            v["vs_bare_jieba"] = v["mb_per_s"] / jieba_rate
    if args.json:
        print(json.dumps({"mb": mb, "scale": args.scale, "results": results}, indent=2))
        return
    print(f"docs text: {mb:.2f} MB (corpus x{args.scale})")
    print(f"{'configuration':<24}{'MB/s':>8}{'x jieba.lcut':>14}{'wall s':>9}{'cpu s':>8}")
    for name, v in results.items():
        wall = f"{v['seconds']:.2f}" if "seconds" in v else "-"
        cpu = f"{v['cpu_s']:.2f}" if "cpu_s" in v else "-"
        print(f"{name:<24}{v['mb_per_s']:>8.2f}{v['vs_bare_jieba']:>14.2f}{wall:>9}{cpu:>8}")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"(benchmark took {time.perf_counter() - t:.0f} s)", file=sys.stderr)
