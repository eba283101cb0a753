"""Benchmark the corpus stages: clean -> segment -> build-vocab -> make-shards.

Each stage runs as ``python -m albertzh <stage>`` in its own process, exactly as a user runs it,
on the corpus and on a ``--scale``x larger copy of it (copy k >= 1 of every document gets a short
``【副本k】`` prefix so that de-duplication keeps it). Reported per stage and size:

- seconds and MB/s (always MB of the *raw corpus* per second, so stages compare directly);
- CPU seconds (user + system, from ``os.wait4``; steadier than wall time on a shared machine);
- peak RSS of the stage process tree's largest process (``os.wait4`` rusage, MB);
- the RSS ratio large/small (target: within 0.8-1.2, i.e. memory stays flat);
- the whole pipeline's throughput against bare ``jieba.lcut`` over the same lines, timed in the
  same run in its own process (dictionary loading excluded, which favours jieba; target >= 2x);
- the batched masking of :mod:`albertzh.data.masking` against an albert-style per-sequence
  Python loop (``--masking-only`` runs just this part).

Usage::

    .venv/bin/python benchmarks/preprocess.py                # CLUE sample, 1x and 10x
    .venv/bin/python benchmarks/preprocess.py --scale 3 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
DEFAULT_CORPUS = HERE.parents[2] / "shared" / "data" / "corpus" / "clue_corpus_small_sample.txt"
SHARED_VOCAB = HERE.parents[2] / "shared" / "data" / "vocab" / "bert_chinese_vocab.txt"

JIEBA_SNIPPET = r"""
import json, sys, time
import jieba
jieba.setLogLevel(60)
jieba.initialize()
t, c = time.perf_counter(), time.process_time()
n = 0
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        n += len(jieba.lcut(line.rstrip("\n")))
print(json.dumps({"seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c, "words": n}))
"""


def run_measured(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd``; return wall seconds, CPU seconds (user + system, the process and the
    workers it waited for) and the peak RSS (MB) reported by wait4."""
    env = {**os.environ, "COLUMNS": "120"}
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"seconds": seconds, "cpu_s": cpu, "rss_mb": usage.ru_maxrss / 1024.0}  # Linux: KB


def make_scaled(src: Path, dst: Path, scale: int) -> None:
    """``scale`` copies of ``src``; copy k >= 1 prefixes each document with 【副本k】."""
    with open(dst, "w", encoding="utf-8") as out:
        for k in range(scale):
            with open(src, encoding="utf-8") as f:
                for line in f:
                    if k and line.strip():
                        out.write(f"【副本{k}】")
                    out.write(line)


def stage_commands(
    corpus: Path, work: Path, args: argparse.Namespace
) -> list[tuple[str, list[str]]]:
    py = [sys.executable, "-m", "albertzh"]
    w = ["--workers", str(args.workers)]
    vocab_cmd = py + ["build-vocab", str(work / "words"), "-o", str(work / "vocab")]
    if args.from_vocab:
        vocab_cmd += ["--from-vocab", str(args.from_vocab)]
    return [
        ("clean", py + ["clean", str(corpus), "-o", str(work / "docs")] + w),
        ("segment", py + ["segment", str(work / "docs"), "-o", str(work / "words")] + w),
        ("build-vocab", vocab_cmd),
        (
            "make-shards",
            py
            + ["make-shards", str(work / "words"), "--vocab", str(work / "vocab")]
            + ["-o", str(work / "shards"), "--masking", args.masking]
            + w,
        ),
    ]


def has_command(name: str) -> bool:
    r = subprocess.run(
        [sys.executable, "-m", "albertzh", name, "--help"], capture_output=True, check=False
    )
    return r.returncode == 0


def bench_size(corpus: Path, work: Path, args: argparse.Namespace) -> dict[str, dict]:
    work.mkdir(parents=True, exist_ok=True)
    mb = corpus.stat().st_size / 1e6
    res: dict[str, dict] = {}
    for name, cmd in stage_commands(corpus, work, args):
        if name == "build-vocab" and not has_command("build-vocab"):
            # Stand-in until build-vocab lands: adopt the shared BERT vocab (not timed).
            (work / "vocab").mkdir(exist_ok=True)
            shutil.copy(SHARED_VOCAB, work / "vocab" / "vocab.txt")
            res[name] = {"seconds": 0.0, "cpu_s": 0.0, "rss_mb": 0.0, "missing": True}
            continue
        m = run_measured(cmd, work / f"{name}.log")
        m["mb_per_s"] = mb / m["seconds"]
        res[name] = m
    total = sum(r["seconds"] for r in res.values())
    res["pipeline"] = {
        "seconds": total,
        "cpu_s": sum(r["cpu_s"] for r in res.values()),
        "mb_per_s": mb / total,
        "rss_mb": max(r["rss_mb"] for r in res.values()),
    }
    out = subprocess.run(
        [sys.executable, "-c", JIEBA_SNIPPET, str(corpus)],
        capture_output=True,
        check=True,
        text=True,
    )
    j = json.loads(out.stdout.strip().splitlines()[-1])
    res["jieba.lcut"] = {
        "seconds": j["seconds"],
        "cpu_s": j["cpu_s"],
        "mb_per_s": mb / j["seconds"],
        "rss_mb": 0.0,
    }
    res["_meta"] = {"mb": mb}
    return res


def print_table(small: dict, large: dict, scale: int) -> None:
    names = ["clean", "segment", "build-vocab", "make-shards", "pipeline", "jieba.lcut"]
    head = (
        f"{'stage':<12} | {'1x s':>7} {'1x cpu':>7} {'1x MB/s':>8} {'1x RSS':>8} | "
        f"{f'{scale}x s':>7} {f'{scale}x cpu':>7} {f'{scale}x MB/s':>9} {f'{scale}x RSS':>8} | "
        f"{'RSS ratio':>9}"
    )
    print(f"corpus: {small['_meta']['mb']:.2f} MB (1x), {large['_meta']['mb']:.2f} MB ({scale}x)")
    print(head)
    print("-" * len(head))
    for n in names:
        a, b = small[n], large[n]
        if a.get("missing"):
            print(f"{n:<12} | {'(not available: shared BERT vocab adopted, untimed)':>60}")
            continue
        ratio = f"{b['rss_mb'] / a['rss_mb']:.2f}" if a["rss_mb"] else "-"
        rss_a = f"{a['rss_mb']:.0f}MB" if a["rss_mb"] else "-"
        rss_b = f"{b['rss_mb']:.0f}MB" if b["rss_mb"] else "-"
        print(
            f"{n:<12} | {a['seconds']:7.2f} {a['cpu_s']:7.2f} {a['mb_per_s']:8.3f} {rss_a:>8} | "
            f"{b['seconds']:7.2f} {b['cpu_s']:7.2f} {b['mb_per_s']:9.3f} {rss_b:>8} | {ratio:>9}"
        )
    for label, r in (("1x", small), (f"{scale}x", large)):
        wall = r["pipeline"]["mb_per_s"] / r["jieba.lcut"]["mb_per_s"]
        cpu = r["jieba.lcut"]["cpu_s"] / r["pipeline"]["cpu_s"]
        print(
            f"pipeline / jieba.lcut throughput ({label}): {wall:.2f}x by wall time, "
            f"{cpu:.2f}x by CPU time (target >= 2x)"
        )


def _python_masking(ids, ws, rng, budget_prob, max_pred, ngram, specials, mask_id, vocab_size):
    """Baseline: albert-style whole-word n-gram masking, one sequence at a time in Python."""
    import numpy as np

    words: list[list[int]] = []
    for j, t in enumerate(ids):
        if t in specials:
            continue
        if ws[j] or not words or ids[j - 1] in specials:
            words.append([j])
        else:
            words[-1].append(j)
    n_pred = min(max_pred, max(1, round(sum(len(w) for w in words) * budget_prob)))
    pvals = 1.0 / np.arange(1, ngram + 1)
    pvals /= pvals.sum()
    starts = list(range(len(words)))
    rng.shuffle(starts)
    covered: set[int] = set()
    out = list(ids)
    picked: list[int] = []
    for s0 in starts:
        if len(picked) >= n_pred:
            break
        top = min(ngram, len(words) - s0)
        n = int(rng.choice(np.arange(1, top + 1), p=pvals[:top] / pvals[:top].sum()))
        while n > 0:
            span = [j for w in words[s0 : s0 + n] for j in w]
            if len(picked) + len(span) <= n_pred:
                break
            n -= 1
        if n == 0 or any(j in covered for j in span):
            continue
        for w in words[s0 : s0 + n]:
            u = rng.random()
            for j in w:
                covered.add(j)
                picked.append(j)
                if u < 0.8:
                    out[j] = mask_id
                elif u < 0.9:
                    out[j] = int(rng.integers(5, vocab_size))
    picked.sort()
    return out, picked, [ids[j] for j in picked]


def bench_masking(batches: int = 20, batch_size: int = 64, seq_len: int = 128) -> dict[str, float]:
    """CPU time of :func:`mask_batch` on padded batches and of the per-sequence Python
    baseline (CPU time, as wall time swings with the load of a shared machine)."""
    import numpy as np

    from albertzh.data.masking import MaskingOptions, mask_batch

    rng = np.random.default_rng(0)
    specials = {0, 1, 2, 3, 4}
    ids = rng.integers(5, 21128, size=(batch_size, seq_len)).astype(np.int32)
    ids[:, 0], ids[:, seq_len // 2], ids[:, -1] = 2, 3, 3
    ws = rng.random((batch_size, seq_len)) < 0.6
    opts = MaskingOptions()
    t = time.process_time()
    for _ in range(batches):
        mask_batch(ids, ws, rng, opts, vocab_size=21128, mask_id=4, special_ids=specials)
    fast = (time.process_time() - t) / batches
    rows, wsl = ids.tolist(), ws.tolist()
    t = time.process_time()
    for _ in range(max(1, batches // 4)):
        for r, w in zip(rows, wsl, strict=True):
            _python_masking(r, w, rng, 0.15, 20, 3, specials, 4, 21128)
    slow = (time.process_time() - t) / max(1, batches // 4)
    return {"batch_ms": fast * 1e3, "baseline_batch_ms": slow * 1e3, "speedup": slow / fast}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--scale", type=int, default=10, help="Size of the larger copy (default 10x).")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--masking", choices=["dynamic", "static"], default="dynamic")
    ap.add_argument("--from-vocab", type=Path, help="Pass --from-vocab FILE to build-vocab.")
    ap.add_argument("--keep", type=Path, help="Work in this directory and keep it.")
    ap.add_argument("--json", action="store_true", help="Also print all figures as JSON.")
    ap.add_argument("--masking-only", action="store_true", help="Only time the masking.")
    args = ap.parse_args(argv)
    if args.masking_only:
        m = bench_masking()
        print(
            f"masking, 64x128 batch, CPU time: mask_batch {m['batch_ms']:.2f} ms, per-sequence "
            f"Python baseline {m['baseline_batch_ms']:.1f} ms ({m['speedup']:.0f}x)"
        )
        return 0
    if not args.corpus.is_file():
        print(f"{args.corpus}: corpus not found", file=sys.stderr)
        return 2

    base = args.keep or Path(tempfile.mkdtemp(prefix="albertzh-bench-"))
    try:
        if base.exists() and args.keep:
            shutil.rmtree(base)
        base.mkdir(parents=True, exist_ok=True)
        big = base / f"corpus-x{args.scale}.txt"
        make_scaled(args.corpus, big, args.scale)
        small = bench_size(args.corpus, base / "x1", args)
        large = bench_size(big, base / f"x{args.scale}", args)
        print_table(small, large, args.scale)
        masking = bench_masking()
        print(
            f"masking, 64x128 batch, CPU time: mask_batch {masking['batch_ms']:.2f} ms, per-sequence "
            f"Python baseline {masking['baseline_batch_ms']:.1f} ms ({masking['speedup']:.0f}x)"
        )
        if args.json:
            print(json.dumps({"x1": small, f"x{args.scale}": large, "masking": masking}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
