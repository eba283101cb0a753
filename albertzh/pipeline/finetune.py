"""``finetune``: train a head (and the encoder) on a task, keep the best epoch.

setup -> loop -> save, on the shared plumbing of :mod:`albertzh.train.loop`; :func:`run` reads
top to bottom as ``_setup`` -> ``_train`` -> ``_finish``. What setup builds is a ``_Run`` the loop
only reads; what the loop changes (step, epoch, best result, patience) is a ``_TrainState``, which
is also what a checkpoint carries. What depends on the task's kind (sentence classification,
token classification; its reader, rows, batches, loss, dev metrics and head) is the
:class:`albertzh.train.kinds.TaskKind` of the task, which this module only calls.

- setup: read train/dev with the task registry (labels of a generic or NER task come from train
  or label2id.json), tokenize once, load the model dir with a fresh ``classifier`` head (or random
  weights with ``--random-init``), AdamW + linear warmup/decay, resume from the newest checkpoint;
- loop: per epoch a seeded permutation of the rows (sentences, or windows of long ones) split over
  DDP ranks, ``train_step`` per optimizer step, dev evaluation at each epoch end (and every
  ``--eval-every`` steps), the best model by the task metric saved to ``best/``, early stopping
  after ``--patience`` evaluations without gain;
- save: the run dir becomes the best model (config.json with id2label/label2id, weights,
  tokenizer files, albertzh.json) plus ``metrics.json``; ``metrics.jsonl`` has the log.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from albertzh import outputs
from albertzh.console import Summary, err_console, progress
from albertzh.data import tasks as T
from albertzh.data.dataset import atomic_write_json
from albertzh.errors import ConfigError, InputError, ModelDirError
from albertzh.train import loop as tr
from albertzh.train.kinds import TaskKind, kind_of_task

BEST_DIR = "best"
METRICS_JSON = "metrics.json"
# Metrics where smaller is better; everything else is maximised.
LOWER_IS_BETTER = {"loss", "mse"}


class FinetuneConfig(tr.TrainConfig):
    """Options of ``albertzh finetune`` (the training flags are shared with pretrain)."""

    task: str = Field(..., description=f"Task: {', '.join(T.task_names())}.")
    model: Path = Field(
        ..., description="Pretrained model directory (albertzh or HF ALBERT; vocab from the dir)."
    )
    data_dir: Path = Field(..., description="Directory with the task's train/dev(/test) files.")
    text_a: str | None = Field(None, description="generic task: field of the first text.")
    text_b: str | None = Field(None, description="generic task: field of the second text.")
    label: str | None = Field(None, description="generic task: field of the label.")
    regression: bool = Field(False, description="generic task: numeric labels (regression).")
    max_seq_len: int = Field(
        128,
        ge=3,
        description="Truncate [CLS] a [SEP] b [SEP] to this; NER: longer sentences are read in "
        "windows of this many tokens.",
    )
    doc_stride: int | None = Field(
        None,
        ge=1,
        description="NER: tokens between the starts of the overlapping windows a sentence longer "
        "than --max-seq-len is read in (default: half a window); span extraction: the same for "
        "a context.",
    )
    max_query_len: int | None = Field(
        None,
        ge=1,
        description="Span extraction: keep at most this many question tokens (default 64).",
    )
    max_answer_len: int | None = Field(
        None,
        ge=1,
        description="Span extraction: the longest answer (tokens) dev scoring and eval/predict "
        "pick (default 30).",
    )
    skip_bad_answers: bool = Field(
        False,
        description="Span extraction: leave out training questions whose answer is not at its "
        "answer_start (counted in the summary) instead of stopping.",
    )
    tag_scheme: Literal["auto", "bio", "bioes"] = Field(
        "auto",
        description="NER: the tags entity spans (JSON) become, and the label set inferred from "
        "train; auto: BIOES if label2id.json or train has E-/S- tags, else BIO.",
    )
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Override hidden, attention and classifier dropout of the model config.",
    )
    patience: int = Field(
        0, ge=0, description="Stop after N dev evaluations without improvement (0 = never)."
    )
    metric: str | None = Field(
        None, description="Dev metric that picks the best model (default: the task's)."
    )
    random_init: bool = Field(
        False, description="Use only the model dir's config and vocab; start from random weights."
    )
    max_train_examples: int | None = Field(
        None, ge=1, description="Train on a seeded random subset of this many rows."
    )
    eval_batch_size: int = Field(64, ge=1, description="Rows per forward pass in dev evaluation.")
    # Finetuning defaults differ from pretraining's.
    epochs: float | None = Field(3.0, gt=0, description="Passes over the training data.")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate.")
    optimizer: Literal["adamw", "lamb"] = Field("adamw", description="Optimizer.")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Warmup as a fraction of the total steps."
    )
    save_every: int = Field(
        0, ge=0, description="Also checkpoint every N steps (epoch ends always are)."
    )
    keep_last: int = Field(1, ge=1, description="Keep only the newest N checkpoints.")
    # Task data is tokenized once in memory; there is no DataLoader to give workers to.
    num_workers: int = Field(
        0, ge=0, description="Unused by finetune.", json_schema_extra={"cli": False}
    )

    @model_validator(mode="after")
    def _check_finetune(self) -> FinetuneConfig:
        known = T.task_names()
        if self.task not in known:
            raise ValueError(f"--task: unknown task {self.task!r} (known: {', '.join(known)})")
        kind = T.kind_of(self.task)
        if kind not in (T.TOKEN_CLASSIFICATION, T.SPAN_EXTRACTION) and self.doc_stride is not None:
            raise ValueError(
                "--doc-stride only applies to token classification (NER) and span extraction tasks"
            )
        if kind != T.TOKEN_CLASSIFICATION and self.tag_scheme != "auto":
            raise ValueError("--tag-scheme only applies to token classification (NER) tasks")
        for flag, given in (
            ("--max-query-len", self.max_query_len is not None),
            ("--max-answer-len", self.max_answer_len is not None),
            ("--skip-bad-answers", self.skip_bad_answers),
        ):
            if given and kind != T.SPAN_EXTRACTION:
                raise ValueError(f"{flag} only applies to span extraction tasks")
        return self


# --------------------------------------------------------------------------- setup helpers


def _load_data(cfg: FinetuneConfig) -> tuple[T.Task, TaskKind, dict[str, Any]]:
    """The task with its labels fixed, its kind, and {"train": (path, examples), "dev": ... or
    None}."""
    task = T.get_task(
        cfg.task, text_a=cfg.text_a, text_b=cfg.text_b, label=cfg.label, regression=cfg.regression
    )
    kind = kind_of_task(task)
    task, train_path, train = kind.read_train(task, cfg.data_dir, cfg)
    try:
        dev_path = T.split_file(task, cfg.data_dir, "dev")
    except InputError:  # no dev split: train without model selection
        dev = None
    else:
        dev = (dev_path, kind.read_split(task, dev_path))
    keep = train_sample(len(train), cfg.max_train_examples, cfg.seed)
    if keep is not None:
        train = [train[i] for i in keep]
    return task, kind, {"train": (train_path, train), "dev": dev}


def train_sample(rows: int, limit: int | None, seed: int) -> np.ndarray | None:
    """The train rows ``--max-train-examples limit --seed seed`` keeps (sorted indices), or None
    when it keeps them all."""
    if not limit or limit >= rows:
        return None
    return np.sort(np.random.default_rng(seed).permutation(rows)[:limit])


def _dropout_overrides(cfg: FinetuneConfig) -> dict[str, Any]:
    if cfg.dropout is None:
        return {}
    return {
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.dropout,
        "classifier_dropout_prob": cfg.dropout,
    }


def build_model(cfg: FinetuneConfig, task: T.Task) -> Any:
    """The task kind's model: the model dir's encoder with a new head, or all-random
    (--random-init)."""
    from albertzh.model import AlbertConfig

    kind = kind_of_task(task)
    overrides = {**kind.head_config(task), **_dropout_overrides(cfg)}
    if cfg.random_init:
        base = AlbertConfig.from_json(cfg.model)
        return kind.model_class()(base.replace(**overrides))
    return kind.model_class().from_pretrained(cfg.model, **overrides)


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world: int = 1
) -> list[list[int]]:
    """This rank's micro-batches of epoch ``epoch``: a seeded permutation, dealt over ranks.

    Every rank gets the same number of rows (the remainder of ``n`` / ``world`` is left out),
    so all ranks take the same number of steps.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    mine = perm[rank::world][: n // world]
    return [mine[i : i + batch_size].tolist() for i in range(0, len(mine), batch_size)]


def _better(metric: str, new: dict[str, float], old: dict[str, float] | None) -> bool:
    """Is ``new`` a better dev result than ``old``? Ties on the metric go to the lower loss."""
    if old is None:
        return True
    a, b = new[metric], old[metric]
    if a == b:
        return metric != "loss" and new["loss"] < old["loss"]
    return a < b if metric in LOWER_IS_BETTER else a > b


# --------------------------------------------------------------------------- the run's state


@dataclass
class _Data:
    """The task, its kind and metric, and its splits made into model rows once (setup's part
    that writes nothing)."""

    task: T.Task
    kind: TaskKind
    metric: str
    tokenizer: Any
    train_path: Path
    train: list[Any]  # the kind's examples
    train_rows: Any  # the kind's rows (sized: an epoch is a permutation of them)
    dev_path: Path | None
    dev: list[Any] | None
    dev_rows: Any
    figures: dict[str, Any]  # what the kind says about the data (summary, metrics.json)


@dataclass
class _Run:
    """What setup builds and the loop only reads (the objects inside keep their own state)."""

    cfg: FinetuneConfig
    dist: tr.DistInfo
    precision: str
    data: _Data
    total: int  # optimizer steps of the whole run
    run_dir: Path
    ckpt: tr.Checkpointer
    model: Any  # DDP-wrapped (and compiled) when asked
    optimizer: Any
    scheduler: Any
    scaler: Any
    log: tr.MetricsLog
    meta: dict[str, Any]  # albertzh.json of checkpoints, best/ and the final model dir


@dataclass
class _TrainState:
    """What the loop changes; a checkpoint carries all of it (``step`` in its own field)."""

    step: int = 0
    epoch: int = 0
    group: int = 0  # optimizer steps already taken in this epoch
    best: dict[str, float] | None = None  # dev metrics of the best evaluation (no per_class)
    best_step: int | None = None
    best_metrics: dict[str, Any] | None = None  # the same with per_class, for metrics.json
    bad_evals: int = 0  # evaluations in a row without gain (--patience)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> _TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})

    def to_checkpoint(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "step"}


# --------------------------------------------------------------------------- the stage


def run(cfg: FinetuneConfig) -> Summary:
    """Finetune ``cfg.model`` on ``cfg.task``; the run dir ends as the best model dir."""
    t_start = time.perf_counter()
    outputs.check_apart(cfg.output, {"--model": cfg.model, "--data-dir": cfg.data_dir})
    dist = tr.init_distributed(cfg.device)
    try:
        with tr.run_dir_lock(cfg.output, break_lock=cfg.break_lock, is_main=dist.is_main):
            return _run(cfg, dist, t_start)
    finally:
        tr.cleanup_distributed()


def _run(cfg: FinetuneConfig, dist: tr.DistInfo, t_start: float) -> Summary:
    # ---- setup: every check first, then the run dir, model, optimizer (and a resume)
    r, st = _setup(cfg, dist)

    # ---- loop: epochs of steps; dev evaluation keeps the best model in best/
    with tr.StopFlag() as stop, progress("finetune", total=r.total, enabled=dist.is_main) as bar:
        bar.skip(st.step)
        stopped = _train(r, st, stop, bar)
    if stopped == "interrupted":
        return _interrupted(r, st, stop)

    # ---- save: the best model (or the last one without a dev split) becomes the run dir
    best_flat = _finish(r, st, stopped, t_start)
    return Summary("finetune", _figures(r, st, stopped, best_flat, t_start))


# --------------------------------------------------------------------------- setup


def _setup(cfg: FinetuneConfig, dist: tr.DistInfo) -> tuple[_Run, _TrainState]:
    """Read and check the inputs, then build the run; on --resume, restore where it stopped."""
    precision = tr.resolve_precision(cfg.precision, dist.device)
    data = _read_data(cfg)
    micro_per_epoch = math.ceil((len(data.train_rows) // dist.world_size) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total = tr.total_steps(cfg, steps_per_epoch)
    warmup = tr.warmup_for(cfg, total)

    run_dir = Path(cfg.output)
    ckpt = tr.Checkpointer(run_dir, keep_last=cfg.keep_last, is_main=dist.is_main)
    resume_from = ckpt.latest() if cfg.resume else None
    model = _load_model(cfg, data, resume_from)
    # Every check has passed: only now create (or clear) the run dir.
    tr.prepare_run_dir(run_dir, resume=cfg.resume, overwrite=cfg.overwrite, is_main=dist.is_main)
    model = tr.wrap_model(model, dist, compile=cfg.compile)
    optimizer = tr.build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)
    scheduler = tr.build_scheduler(optimizer, cfg.schedule, warmup, total)
    scaler = tr.make_grad_scaler(precision, dist.device)

    st = _TrainState()
    if resume_from is not None:
        # This also restores the rank's RNG: dropout goes on as if never interrupted.
        saved = ckpt.load(resume_from, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        st = _TrainState.from_checkpoint(saved)
        err_console.print(f"resuming from {resume_from} (step {st.step})", highlight=False)
        _restore_best(run_dir, bool(st.best), dist.is_main)
    else:
        tr.set_seed(cfg.seed + 1000 * dist.rank)  # dropout masks differ per rank
    log = tr.MetricsLog(run_dir, is_main=dist.is_main, resume_step=st.step if resume_from else None)
    r = _Run(
        cfg=cfg,
        dist=dist,
        precision=precision,
        data=data,
        total=total,
        run_dir=run_dir,
        ckpt=ckpt,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        log=log,
        meta=_model_meta(cfg, data),
    )
    return r, st


def _read_data(cfg: FinetuneConfig) -> _Data:
    """The task and its splits, as model rows; the --metric is checked against the task's kind."""
    from albertzh.tokenizer import load_tokenizer

    task, kind, data = _load_data(cfg)
    metric = cfg.metric or task.metric
    valid = kind.metrics(task)
    if metric not in valid:
        raise ConfigError(f"--metric: {metric!r} is not one of {', '.join(sorted(valid))}")
    tokenizer = load_tokenizer(cfg.model)
    train_path, train = data["train"]
    dev_path, dev = data["dev"] if data["dev"] else (None, None)
    return _Data(
        task=task,
        kind=kind,
        metric=metric,
        tokenizer=tokenizer,
        train_path=train_path,
        train=train,
        train_rows=kind.encode(task, train, tokenizer, cfg),
        dev_path=dev_path,
        dev=dev,
        dev_rows=kind.encode(task, dev, tokenizer, cfg) if dev else None,
        figures=kind.describe(task, train, dev),
    )


def _load_model(cfg: FinetuneConfig, data: _Data, resume_from: Path | None) -> Any:
    """The model to train: the checkpoint's on --resume, else the model dir's (new head)."""
    tr.set_seed(cfg.seed)  # the new head's initial weights
    if resume_from is not None:
        _check_resume(resume_from, cfg, data)
        model = data.kind.model_class().from_pretrained(resume_from)
    else:
        model = build_model(cfg, data.task)
    data.kind.check_config(cfg, model.config)
    if data.tokenizer.vocab_size > model.config.vocab_size:
        raise ModelDirError(
            f"{cfg.model}: vocab has {data.tokenizer.vocab_size} tokens but the model only {model.config.vocab_size}"
        )
    return model


def _model_meta(cfg: FinetuneConfig, data: _Data) -> dict[str, Any]:
    """albertzh.json of the model dirs this run writes (eval and predict read it back)."""
    task = data.task
    return {
        "stage": "finetune",
        "task": task.name,
        "kind": task.kind,
        "labels": list(task.labels or ()),
        "regression": task.regression,
        "fields": {"text_a": task.text_a, "text_b": task.text_b, "label": task.label},
        "max_seq_len": cfg.max_seq_len,
        **data.kind.meta(task, data.train, cfg),
        "base_model": str(cfg.model),
        "random_init": cfg.random_init,
        "config": cfg.model_dump(mode="json"),
    }


def _check_resume(path: Path, cfg: FinetuneConfig, data: _Data) -> None:
    """The checkpoint is of this task and labels, and was made with these settings (a resume
    cannot honour other ones: it goes on with the checkpoint's model, optimizer and order)."""
    from albertzh.tokenizer import load_tokenizer

    task = data.task
    meta = json.loads((path / "albertzh.json").read_text(encoding="utf-8"))
    if meta.get("task") != task.name or meta.get("labels") != list(task.labels or ()):
        raise ConfigError(
            f"--resume: {path} was made for task {meta.get('task')} with labels {meta.get('labels')}"
        )
    also = []
    if load_tokenizer(path).hash != data.tokenizer.hash:  # --model may move, its vocab may not
        also.append(("--model", f"{meta.get('base_model')} (its vocab)", f"{cfg.model}"))
    tr.check_resume_settings(path, cfg, skip=("model", "patience"), also=also)


def _restore_best(run_dir: Path, has_best: bool, is_main: bool) -> None:
    """A finished run keeps its best model in the run dir itself; put it back in ``best/``."""
    best = run_dir / BEST_DIR
    if is_main and has_best and not best.is_dir() and (run_dir / "config.json").is_file():
        tmp = run_dir / f".{BEST_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        logs = (METRICS_JSON, "metrics.jsonl")
        for p in run_dir.iterdir():  # the model's files (not the lock, temp files or logs)
            if p.is_file() and not p.name.startswith(".") and p.name not in logs:
                shutil.copy2(p, tmp / p.name)
        tmp.rename(best)
    tr.barrier()


# --------------------------------------------------------------------------- loop


def _train(r: _Run, st: _TrainState, stop: tr.StopFlag, bar: Any) -> str:
    """Optimizer steps from where ``st`` stands until the last one, early stopping or a stop
    request; returns which: ``completed``, ``early_stopping`` or ``interrupted``.

    Every rank takes the same steps and reaches the same decisions (the dev metrics and the stop
    request are agreed over all ranks), so the collectives line up.
    """
    cfg = r.cfg
    avg = tr.Averager()
    last_eval_step = -1  # the step this process last evaluated (not carried over a resume)
    while st.step < r.total:
        groups = _step_groups(r, st.epoch)
        for group in groups[st.group :]:  # a resume goes on mid-epoch
            res = _train_step(r, group)
            st.step += 1
            st.group += 1
            avg.add({"loss": res.loss_t, **res.metrics_t})  # on the device: no sync per step
            bar.advance(1)
            if st.step % cfg.log_every == 0 or st.step == r.total:
                _log_train(r, st, avg.pop(), res, bar)
            stop_early = False
            if cfg.eval_every and st.step % cfg.eval_every == 0:
                last_eval_step = st.step
                stop_early = _evaluate(r, st)
            if cfg.save_every and st.step % cfg.save_every == 0:
                _save_checkpoint(r, st)
            if stop.check():  # asked at every step: it is a collective under DDP
                return "interrupted"
            if stop_early:
                return "early_stopping"
            if st.step >= r.total:
                break
        if st.group >= len(groups):
            # Epoch end: evaluate, then checkpoint at the start of the next epoch.
            stop_early = False
            if last_eval_step != st.step:
                last_eval_step = st.step
                stop_early = _evaluate(r, st)
            st.epoch += 1
            st.group = 0
            _save_checkpoint(r, st)
            if stop_early:
                return "early_stopping"
    if last_eval_step != st.step:
        _evaluate(r, st)  # a run that ends mid-epoch (--steps, fractional --epochs)
    return "completed"


def _step_groups(r: _Run, epoch: int) -> list[list[list[int]]]:
    """This rank's optimizer steps of ``epoch``: its micro-batches, ``--grad-accum`` per step."""
    cfg, dist = r.cfg, r.dist
    micro = epoch_batches(
        len(r.data.train_rows), cfg.batch_size, epoch, cfg.seed, dist.rank, dist.world_size
    )
    return [micro[i : i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]


def _train_step(r: _Run, group: list[list[int]]) -> tr.StepResult:
    """One optimizer step over the micro-batches of ``group`` (rows of train)."""
    data = r.data
    return tr.train_step(
        r.model,
        [data.kind.batch(data.train_rows, rows, data.tokenizer.pad_id) for rows in group],
        data.kind.loss,
        r.optimizer,
        r.scheduler,
        scaler=r.scaler,
        precision=r.precision,
        device=r.dist.device,
        max_grad_norm=r.cfg.max_grad_norm,
    )


def _log_train(
    r: _Run, st: _TrainState, sums: dict[str, float], res: tr.StepResult, bar: Any
) -> None:
    """A train line in metrics.jsonl and on the progress bar (means over the steps and ranks)."""
    means = tr.mean_across_ranks(sums)
    r.log.log(st.step, "train", epoch=st.epoch, lr=res.lr, grad_norm=res.grad_norm, **means)
    bar.log(step=st.step, epoch=st.epoch, loss=means["loss"], lr=res.lr)


# --------------------------------------------------------------------------- dev and the best model


def _evaluate(r: _Run, st: _TrainState) -> bool:
    """Score dev, log it and keep the best model; True when --patience is exhausted."""
    data = r.data
    if data.dev is None:
        return False
    m = data.kind.evaluate(
        r.model,
        data.dev_rows,
        data.dev,
        data.task,
        pad_id=data.tokenizer.pad_id,
        batch_size=r.cfg.eval_batch_size,
        precision=r.precision,
        rank=r.dist.rank,
        world=r.dist.world_size,
    )
    # Numbers go to the log and history; tables (per class, per type) only to metrics.json.
    flat = {k: float(v) for k, v in m.items() if isinstance(v, int | float)}
    r.log.log(st.step, "dev", epoch=st.epoch, **flat)
    st.history.append({"step": st.step, "epoch": st.epoch, **flat})
    _track_best(r, st, m, flat)
    return bool(r.cfg.patience) and st.bad_evals >= r.cfg.patience


def _track_best(r: _Run, st: _TrainState, m: dict[str, Any], flat: dict[str, float]) -> None:
    """A new best evaluation is written to ``best/`` (rank 0); any other counts as a bad one."""
    if not _better(r.data.metric, flat, st.best):
        st.bad_evals += 1
        return
    st.best, st.best_step, st.best_metrics, st.bad_evals = flat, st.step, m, 0
    if r.dist.is_main:
        tr.unwrap_model(r.model).save_pretrained(
            r.run_dir / BEST_DIR,
            tokenizer=r.data.tokenizer,
            meta={**r.meta, "step": st.step, "metrics": flat},
        )
    tr.barrier()


# --------------------------------------------------------------------------- checkpoints


def _save_checkpoint(r: _Run, st: _TrainState) -> None:
    """A checkpoint at ``st.step`` (a collective: every rank calls it)."""
    r.ckpt.save(
        st.step,
        r.model,
        tokenizer=r.data.tokenizer,
        optimizer=r.optimizer,
        scheduler=r.scheduler,
        scaler=r.scaler,
        train_state=st.to_checkpoint(),
        meta=r.meta,
    )


# --------------------------------------------------------------------------- finish


def _interrupted(r: _Run, st: _TrainState, stop: tr.StopFlag) -> Summary:
    """Checkpoint where the run stopped; the summary says how to resume (exit 130/143)."""
    _save_checkpoint(r, st)
    r.log.close()
    return Summary(
        "finetune",
        {
            "interrupted": True,
            "signal": stop.signal_name,
            "interrupted_at_step": st.step,
            "resume": f"albertzh finetune ... -o {r.run_dir} --resume",
        },
        exit_code=stop.exit_code,
    )


def _finish(r: _Run, st: _TrainState, stopped: str, t_start: float) -> dict[str, Any] | None:
    """Make the run dir the best model and write metrics.json; returns the best dev metrics."""
    final_model: Any = r.model
    if r.data.dev is not None and r.dist.is_main and (r.run_dir / BEST_DIR).is_dir():
        final_model = r.data.kind.model_class().from_pretrained(r.run_dir / BEST_DIR)
    best_flat = None
    if st.best_metrics is not None:
        best_flat = {k: v for k, v in st.best_metrics.items() if isinstance(v, int | float)}
    r.ckpt.finalize(
        final_model,
        tokenizer=r.data.tokenizer,
        meta={**r.meta, "step": st.best_step or st.step, "metrics": best_flat},
    )
    report = _report(r, st, stopped, seconds=time.perf_counter() - t_start)
    if r.dist.is_main:
        atomic_write_json(r.run_dir / METRICS_JSON, report)
        shutil.rmtree(r.run_dir / BEST_DIR, ignore_errors=True)
    r.log.close()
    tr.barrier()
    return best_flat


def _report(r: _Run, st: _TrainState, stopped: str, seconds: float) -> dict[str, Any]:
    """metrics.json: the best dev result, every evaluation and how training went."""
    data = r.data
    return {
        "task": data.task.name,
        "metric": data.metric,
        "labels": list(data.task.labels or ()),
        "best": {"step": st.best_step, **st.best_metrics} if st.best_metrics else None,
        "dev_history": st.history,
        "train": {
            "file": str(data.train_path),
            "examples": len(data.train),
            "rows": len(data.train_rows),
            **data.figures,
            "steps": st.step,
            "epochs_done": st.epoch,
            "stopped": stopped,
            "seconds": round(seconds, 2),
        },
        "dev_file": str(data.dev_path) if data.dev_path else None,
    }


def _figures(
    r: _Run, st: _TrainState, stopped: str, best_flat: dict[str, Any] | None, t_start: float
) -> dict[str, Any]:
    """The summary's figures: sizes, steps, why it stopped and the best dev result."""
    data, metric = r.data, r.data.metric
    figures: dict[str, Any] = {
        "task": data.task.name,
        "output": str(r.run_dir),
        "train_examples": len(data.train),
        "dev_examples": len(data.dev) if data.dev else 0,
        **data.figures,
        "steps": st.step,
        "stopped": stopped,
    }
    if best_flat:
        figures[f"best_dev_{metric}"] = round(float(best_flat[metric]), 6)
        figures["best_step"] = st.best_step
        for name in data.kind.summary_metrics:
            if name in best_flat and name != metric:
                figures[f"best_dev_{name}"] = round(float(best_flat[name]), 6)
    figures["seconds"] = round(time.perf_counter() - t_start, 2)
    return figures
