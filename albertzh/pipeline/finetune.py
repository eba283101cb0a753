"""``finetune``: train a classification head (and the encoder) on a task, keep the best epoch.

setup -> loop -> save, on the shared plumbing of :mod:`albertzh.train.loop`:

- setup: read train/dev with the task registry (labels of a generic task come from train),
  tokenize once, load the model dir with a fresh ``classifier`` head (or random weights with
  ``--random-init``), AdamW + linear warmup/decay, resume from the newest checkpoint;
- loop: per epoch a seeded permutation split over DDP ranks, ``train_step`` per optimizer step,
  dev evaluation at each epoch end (and every ``--eval-every`` steps), the best model by the task
  metric saved to ``best/``, early stopping after ``--patience`` evaluations without gain;
- save: the run dir becomes the best model (config.json with id2label/label2id, weights,
  tokenizer files, albertzh.json) plus ``metrics.json``; ``metrics.jsonl`` has the log.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from albertzh.console import Summary, err_console, progress
from albertzh.data import tasks as T
from albertzh.data.dataset import atomic_write_json
from albertzh.errors import ConfigError, InputError, ModelDirError
from albertzh.train.loop import TrainConfig

BEST_DIR = "best"
METRICS_JSON = "metrics.json"
# Metrics where smaller is better; everything else is maximised.
LOWER_IS_BETTER = {"loss", "mse"}


class FinetuneConfig(TrainConfig):
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
    max_seq_len: int = Field(128, ge=3, description="Truncate [CLS] a [SEP] b [SEP] to this.")
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
        return self


# --------------------------------------------------------------------------- setup helpers


def _load_data(cfg: FinetuneConfig) -> tuple[T.Task, dict[str, Any]]:
    """The task with its labels fixed, and {"train": (path, examples), "dev": ... or None}."""
    task = T.get_task(
        cfg.task, text_a=cfg.text_a, text_b=cfg.text_b, label=cfg.label, regression=cfg.regression
    )
    train_path, train = T.load_split(task, cfg.data_dir, "train", require_labels=True)
    task = T.labels_of(task, train, train_path)
    try:
        dev_path = T.split_file(task, cfg.data_dir, "dev")
    except InputError:  # no dev split: train without model selection
        dev = None
    else:
        dev = (dev_path, T.read_examples(task, dev_path, require_labels=True))
    if cfg.max_train_examples and cfg.max_train_examples < len(train):
        keep = np.sort(
            np.random.default_rng(cfg.seed).permutation(len(train))[: cfg.max_train_examples]
        )
        train = [train[i] for i in keep]
    return task, {"train": (train_path, train), "dev": dev}


def _label_ids(task: T.Task, examples: list[T.Example]) -> np.ndarray:
    if task.regression:
        return np.array([float(e.label) for e in examples], dtype=np.float32)
    index = {lab: i for i, lab in enumerate(task.labels or ())}
    return np.array([index[str(e.label)] for e in examples], dtype=np.int64)


def _head_config(task: T.Task) -> dict[str, Any]:
    if task.regression:
        return {"num_labels": 1, "id2label": None, "label2id": None, "problem_type": "regression"}
    labels = list(task.labels or ())
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {lab: i for i, lab in enumerate(labels)},
        "problem_type": "single_label_classification",
    }


def _dropout_overrides(cfg: FinetuneConfig) -> dict[str, Any]:
    if cfg.dropout is None:
        return {}
    return {
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.dropout,
        "classifier_dropout_prob": cfg.dropout,
    }


def build_model(cfg: FinetuneConfig, task: T.Task) -> Any:
    """The classifier: the model dir's encoder with a new head, or all-random (--random-init)."""
    from albertzh.model import AlbertConfig, AlbertForSequenceClassification

    overrides = {**_head_config(task), **_dropout_overrides(cfg)}
    if cfg.random_init:
        base = AlbertConfig.from_json(cfg.model)
        return AlbertForSequenceClassification(base.replace(**overrides))
    return AlbertForSequenceClassification.from_pretrained(cfg.model, **overrides)


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


# --------------------------------------------------------------------------- evaluation


def evaluate_dev(
    model: Any,
    encoded: list[tuple[list[int], list[int]]],
    examples: list[T.Example],
    task: T.Task,
    *,
    pad_id: int,
    batch_size: int,
    precision: str,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Any]:
    """Dev metrics; under DDP each rank scores every world-th row and the logits are gathered."""
    from albertzh.train.inference import predict_logits
    from albertzh.train.loop import all_gather_objects, unwrap_model

    bare = unwrap_model(model)
    idx = list(range(rank, len(encoded), world))
    logits = predict_logits(
        bare, [encoded[i] for i in idx], pad_id=pad_id, batch_size=batch_size, precision=precision
    )
    full = None
    for part_idx, part in all_gather_objects((idx, logits)):
        if full is None:
            full = np.zeros((len(encoded), part.shape[-1]), dtype=np.float32)
        full[part_idx] = part
    assert full is not None
    return T.score_logits(full, examples, list(task.labels or ()), task.regression)


# --------------------------------------------------------------------------- the stage


def run(cfg: FinetuneConfig) -> Summary:
    """Finetune ``cfg.model`` on ``cfg.task``; the run dir ends as the best model dir."""
    import torch

    from albertzh.model import AlbertForSequenceClassification
    from albertzh.tokenizer import load_tokenizer
    from albertzh.train import loop as tr
    from albertzh.train.inference import collate, encode_pairs

    t_start = time.perf_counter()
    # ---- setup
    dist = tr.init_distributed(cfg.device)
    try:
        precision = tr.resolve_precision(cfg.precision, dist.device)
        task, data = _load_data(cfg)
        metric = cfg.metric or task.metric
        valid = (
            {"loss", "pearson", "spearman", "mse"}
            if task.regression
            else {"loss", "accuracy", "macro_f1"}
        )
        if metric not in valid:
            raise ConfigError(f"--metric: {metric!r} is not one of {', '.join(sorted(valid))}")
        tokenizer = load_tokenizer(cfg.model)
        train_path, train = data["train"]
        train_enc = encode_pairs(tokenizer, ((e.text_a, e.text_b) for e in train), cfg.max_seq_len)
        train_y = _label_ids(task, train)
        dev_path, dev = data["dev"] if data["dev"] else (None, None)
        dev_enc = (
            encode_pairs(tokenizer, ((e.text_a, e.text_b) for e in dev), cfg.max_seq_len)
            if dev
            else None
        )

        micro_per_epoch = math.ceil((len(train) // dist.world_size) / cfg.batch_size)
        steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
        total = tr.total_steps(cfg, steps_per_epoch)
        warmup = tr.warmup_for(cfg, total)

        run_dir = Path(cfg.output)
        ckpt = tr.Checkpointer(run_dir, keep_last=cfg.keep_last, is_main=dist.is_main)
        resume_from = ckpt.latest() if cfg.resume else None
        tr.set_seed(cfg.seed)
        if resume_from is not None:
            _check_resume(resume_from, task)
            model = AlbertForSequenceClassification.from_pretrained(resume_from)
        else:
            model = build_model(cfg, task)
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ModelDirError(
                f"{cfg.model}: vocab has {tokenizer.vocab_size} tokens but the model only {model.config.vocab_size}"
            )
        # Every check has passed: only now create (or clear) the run dir.
        tr.prepare_run_dir(
            run_dir, resume=cfg.resume, overwrite=cfg.overwrite, is_main=dist.is_main
        )
        model = tr.wrap_model(model, dist, compile=cfg.compile)
        optimizer = tr.build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)
        scheduler = tr.build_scheduler(optimizer, cfg.schedule, warmup, total)
        scaler = tr.make_grad_scaler(precision, dist.device)

        state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "group": 0,  # optimizer steps already taken in this epoch
            "best": None,
            "best_step": None,
            "best_metrics": None,
            "bad_evals": 0,
            "history": [],
        }
        if resume_from is not None:
            # This also restores the rank's RNG: dropout goes on as if never interrupted.
            state.update(
                ckpt.load(resume_from, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
            )
            err_console.print(
                f"resuming from {resume_from} (step {state['step']})", highlight=False
            )
            _restore_best(run_dir, state, dist.is_main)
        else:
            tr.set_seed(cfg.seed + 1000 * dist.rank)  # dropout masks differ per rank
        log = tr.MetricsLog(
            run_dir, is_main=dist.is_main, resume_step=state["step"] if resume_from else None
        )
        meta = {
            "stage": "finetune",
            "task": task.name,
            "labels": list(task.labels or ()),
            "regression": task.regression,
            "fields": {"text_a": task.text_a, "text_b": task.text_b, "label": task.label},
            "max_seq_len": cfg.max_seq_len,
            "label_desc": T.label_descriptions(train) or None,
            "base_model": str(cfg.model),
            "random_init": cfg.random_init,
            "config": cfg.model_dump(mode="json"),
        }

        def loss_fn(m: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            logits = m(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
            ).logits
            loss = tr.unwrap_model(m).compute_loss(logits.float(), batch["labels"])
            if task.regression:
                return loss, {}
            acc = (logits.argmax(-1) == batch["labels"]).float().mean()
            return loss, {"accuracy": acc.detach()}

        def make_batch(idx: list[int]) -> dict[str, Any]:
            b = collate(train_enc, idx, tokenizer.pad_id)
            b["labels"] = torch.from_numpy(train_y[idx])
            return b

        def dev_eval() -> bool:
            """Evaluate, keep the best model; True when patience is exhausted."""
            if dev is None:
                return False
            m = evaluate_dev(
                model,
                dev_enc,
                dev,
                task,
                pad_id=tokenizer.pad_id,
                batch_size=cfg.eval_batch_size,
                precision=precision,
                rank=dist.rank,
                world=dist.world_size,
            )
            flat = {k: float(v) for k, v in m.items() if k != "per_class"}
            log.log(state["step"], "dev", epoch=state["epoch"], **flat)
            state["history"].append({"step": state["step"], "epoch": state["epoch"], **flat})
            if _better(metric, flat, state["best"]):
                state.update(best=flat, best_step=state["step"], best_metrics=m, bad_evals=0)
                if dist.is_main:
                    tr.unwrap_model(model).save_pretrained(
                        run_dir / BEST_DIR,
                        tokenizer=tokenizer,
                        meta={**meta, "step": state["step"], "metrics": flat},
                    )
                tr.barrier()
            else:
                state["bad_evals"] += 1
            return bool(cfg.patience) and state["bad_evals"] >= cfg.patience

        def save_checkpoint() -> None:
            ckpt.save(
                state["step"],
                model,
                tokenizer=tokenizer,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                train_state={k: v for k, v in state.items() if k != "step"},
                meta=meta,
            )

        # ---- loop
        stopped = "completed"
        avg = tr.Averager()
        last_eval_step = -1
        with tr.StopFlag() as stop, progress("finetune", total=total, enabled=dist.is_main) as bar:
            bar.skip(state["step"])
            while state["step"] < total and stopped == "completed":
                micro = epoch_batches(
                    len(train), cfg.batch_size, state["epoch"], cfg.seed, dist.rank, dist.world_size
                )
                groups = [
                    micro[i : i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)
                ]
                for group in groups[state["group"] :]:
                    res = tr.train_step(
                        model,
                        [make_batch(b) for b in group],
                        loss_fn,
                        optimizer,
                        scheduler,
                        scaler=scaler,
                        precision=precision,
                        device=dist.device,
                        max_grad_norm=cfg.max_grad_norm,
                    )
                    state["step"] += 1
                    state["group"] += 1
                    avg.add({"loss": res.loss, **res.metrics})
                    bar.advance(1)
                    if state["step"] % cfg.log_every == 0 or state["step"] == total:
                        means = tr.mean_across_ranks(avg.pop())
                        log.log(
                            state["step"],
                            "train",
                            epoch=state["epoch"],
                            lr=res.lr,
                            grad_norm=res.grad_norm,
                            **means,
                        )
                        bar.log(
                            step=state["step"], epoch=state["epoch"], loss=means["loss"], lr=res.lr
                        )
                    if cfg.eval_every and state["step"] % cfg.eval_every == 0:
                        last_eval_step = state["step"]
                        if dev_eval():
                            stopped = "early_stopping"
                    if cfg.save_every and state["step"] % cfg.save_every == 0:
                        save_checkpoint()
                    if stop.check():
                        stopped = "interrupted"
                    if stopped != "completed" or state["step"] >= total:
                        break
                if stopped == "completed" and state["group"] >= len(groups):
                    # Epoch end: evaluate, then checkpoint at the start of the next epoch.
                    if last_eval_step != state["step"]:
                        last_eval_step = state["step"]
                        if dev_eval():
                            stopped = "early_stopping"
                    state["epoch"] += 1
                    state["group"] = 0
                    save_checkpoint()
            if stopped == "completed" and last_eval_step != state["step"]:
                dev_eval()  # a run that ends mid-epoch (--steps, fractional --epochs)

        if stopped == "interrupted":
            save_checkpoint()
            log.close()
            return Summary(
                "finetune",
                {
                    "interrupted": True,
                    "signal": stop.signal_name,
                    "interrupted_at_step": state["step"],
                    "resume": f"albertzh finetune ... -o {run_dir} --resume",
                },
                exit_code=stop.exit_code,
            )

        # ---- save: the best model (or the last one without a dev split) becomes the run dir
        final_model: Any = model
        if dev is not None and dist.is_main and (run_dir / BEST_DIR).is_dir():
            final_model = AlbertForSequenceClassification.from_pretrained(run_dir / BEST_DIR)
        best_flat = None
        if state["best_metrics"] is not None:
            best_flat = {k: v for k, v in state["best_metrics"].items() if k != "per_class"}
        ckpt.finalize(
            final_model,
            tokenizer=tokenizer,
            meta={**meta, "step": state["best_step"] or state["step"], "metrics": best_flat},
        )
        seconds = time.perf_counter() - t_start
        report = {
            "task": task.name,
            "metric": metric,
            "labels": list(task.labels or ()),
            "best": (
                {"step": state["best_step"], **state["best_metrics"]}
                if state["best_metrics"]
                else None
            ),
            "dev_history": state["history"],
            "train": {
                "file": str(train_path),
                "examples": len(train),
                "steps": state["step"],
                "epochs_done": state["epoch"],
                "stopped": stopped,
                "seconds": round(seconds, 2),
            },
            "dev_file": str(dev_path) if dev_path else None,
        }
        if dist.is_main:
            atomic_write_json(run_dir / METRICS_JSON, report)
            shutil.rmtree(run_dir / BEST_DIR, ignore_errors=True)
        log.close()
        tr.barrier()
    finally:
        tr.cleanup_distributed()

    figures: dict[str, Any] = {
        "task": task.name,
        "output": str(run_dir),
        "train_examples": len(train),
        "dev_examples": len(dev) if dev else 0,
        "steps": state["step"],
        "stopped": stopped,
    }
    if best_flat:
        figures[f"best_dev_{metric}"] = round(float(best_flat[metric]), 6)
        figures["best_step"] = state["best_step"]
        if "accuracy" in best_flat and metric != "accuracy":
            figures["best_dev_accuracy"] = round(float(best_flat["accuracy"]), 6)
    figures["seconds"] = round(time.perf_counter() - t_start, 2)
    return Summary("finetune", figures)


def _check_resume(path: Path, task: T.Task) -> None:
    meta = json.loads((path / "albertzh.json").read_text(encoding="utf-8"))
    if meta.get("task") != task.name or meta.get("labels") != list(task.labels or ()):
        raise ConfigError(
            f"--resume: {path} was made for task {meta.get('task')} with labels {meta.get('labels')}"
        )


def _restore_best(run_dir: Path, state: dict[str, Any], is_main: bool) -> None:
    """A finished run keeps its best model in the run dir itself; put it back in ``best/``."""
    from albertzh.train.loop import barrier

    best = run_dir / BEST_DIR
    if is_main and state.get("best") and not best.is_dir() and (run_dir / "config.json").is_file():
        tmp = run_dir / f".{BEST_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for p in run_dir.iterdir():
            if p.is_file() and p.name not in (METRICS_JSON, "metrics.jsonl"):
                shutil.copy2(p, tmp / p.name)
        tmp.rename(best)
    barrier()
