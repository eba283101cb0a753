"""Throughput and peak RSS of ``albertzh clean`` on the shared CLUE sample.

Prints, all measured in this run (the machine is shared, so compare ratios, not absolutes):
- MB/s of a bare baseline (read lines + NFKC + write nothing) on the same text;
- MB/s of the clean stage with 1 and 2 workers (``--chunk-mb 0.5`` so the 1.9 MB sample is
  4 work units), and their ratios;
- peak RSS of a 1-worker clean on the sample and on a 10x larger copy (each line prefixed
  with its copy number so that dedup does not collapse it), and their ratio;
- MB/s with 2 workers on that 10x copy, where the pool start-up is amortized.
CPU seconds spent in ``run()`` (main process + pool workers, no interpreter start-up) are
printed too: they are much less sensitive than wall time to other jobs on a shared machine.

Usage: .venv/bin/python benchmarks/clean_speed.py [CORPUS] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "corpus" / "clue_corpus_small_sample.txt"

CHILD = """
import json, resource, sys, time
from albertzh.pipeline.clean import CleanConfig, run
cfg = CleanConfig.model_validate(json.loads(sys.argv[1]))
def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime
t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF)
s = run(cfg)
dt = time.perf_counter() - t0
used = cpu(resource.RUSAGE_SELF) - c0 + cpu(resource.RUSAGE_CHILDREN)  # pool workers included
print(json.dumps({"seconds": dt, "cpu": used, "bytes": s.figures["bytes_in"],
                  "rows_out": s.figures["rows_out"],
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def baseline(path: Path) -> float:
    """Seconds to read the file's lines and NFKC-normalize them: the floor of any cleaner."""
    t0 = time.perf_counter()
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            n += len(unicodedata.normalize("NFKC", line.strip()))
    return time.perf_counter() - t0


def clean(path: Path, out: Path, **kw: object) -> dict:
    cfg = {"inputs": [str(path)], "output": str(out), "overwrite": True, **kw}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    corpus: Path = args.corpus
    mb = corpus.stat().st_size / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        base = min(baseline(corpus) for _ in range(args.repeat))
        best: dict[int, float] = {}
        cpu: dict[int, float] = {}
        for workers in (1, 2):
            runs = [
                clean(corpus, tmpd / f"w{workers}", workers=workers, chunk_mb=0.5)
                for _ in range(args.repeat)
            ]
            best[workers] = min(r["seconds"] for r in runs)
            cpu[workers] = min(r["cpu"] for r in runs)
        big = tmpd / "big.txt"
        with open(corpus, encoding="utf-8") as src, open(big, "w", encoding="utf-8") as dst:
            lines = src.readlines()
            for k in range(10):
                dst.writelines(f"第{k}份。{line}" for line in lines)
        small = clean(corpus, tmpd / "rss1", chunk_mb=0.5)
        large = clean(big, tmpd / "rss10", chunk_mb=0.5)
        large2 = clean(big, tmpd / "big2", chunk_mb=0.5, workers=2)

    print(f"corpus: {corpus} ({mb:.2f} MB)")
    print(f"baseline read+NFKC     : {mb / base:8.2f} MB/s")
    for w, sec in best.items():
        print(
            f"clean --workers {w}      : {mb / sec:8.2f} MB/s  ({sec:.3f} s wall, "
            f"{cpu[w]:.3f} CPU-s in run() incl. workers = {mb / cpu[w]:.2f} MB/CPU-s, "
            f"best of {args.repeat})"
        )
    print(f"speed-up 2 vs 1 workers: {best[1] / best[2]:8.2f}x")
    print(f"clean 1 worker / baseline: {base / best[1]:6.3f}x")
    print(
        f"peak RSS 1x: {small['maxrss_mb']:.0f} MB   10x: {large['maxrss_mb']:.0f} MB   "
        f"ratio {large['maxrss_mb'] / small['maxrss_mb']:.2f}   "
        f"(10x clean: {10 * mb / large['seconds']:.2f} MB/s)"
    )
    print(
        f"10x copy, 2 workers: {10 * mb / large2['seconds']:.2f} MB/s, "
        f"speed-up vs 1 worker {large['seconds'] / large2['seconds']:.2f}x"
    )


if __name__ == "__main__":
    main()
