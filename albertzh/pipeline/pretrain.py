"""pretrain: ALBERT masked-LM + sentence-order prediction on make-shards instances.

setup (data, vocab, model, run dir) -> loop (train_step, log, eval, checkpoint) -> save (the run
dir becomes the final model dir); ``_run`` reads top to bottom as ``_prepare`` -> ``_train`` ->
``_finish`` (and ``_summary``). What setup builds is a ``_Run`` the loop only reads; what the loop
changes (step, data position, last metrics) is a ``_TrainState``, whose step and data position a
checkpoint carries. The plumbing (LAMB, schedule, checkpoints, DDP, Ctrl-C) is
:mod:`albertzh.train.loop`; the batches come from :mod:`albertzh.train.instances`.

Losses and metrics are albert_zh's: masked-LM cross-entropy averaged over the real predictions
(padding slots ignored), SOP cross-entropy, their sum as the training loss, and the accuracy of
both. :func:`evaluate_pretraining` computes them on a whole instances dataset (``albertzh eval
--shards``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, model_validator

from albertzh import outputs
from albertzh.config import PathOrURL
from albertzh.console import Summary, err_console, progress
from albertzh.data.dataset import VERIFY_HELP
from albertzh.data.masking import IGNORE_INDEX
from albertzh.errors import ConfigError, InputError, VocabMismatchError
from albertzh.train import loop as tr
from albertzh.train.instances import (
    InstanceData,
    MaskSpec,
    Unit,
    batches_per_epoch,
    make_loader,
    split_units,
)
from albertzh.train.pretraining import (
    check_vocab,
    evaluate_units,
    mask_spec,
    pretraining_loss,
    recorded_vocab_dirs,
    roles_of,
    tokenizer_for,
)

SIZES = ("tiny", "small", "base", "large", "xlarge", "xxlarge")


class PretrainConfig(tr.TrainConfig):
    """Options of ``albertzh pretrain``."""

    data: PathOrURL = Field(
        ..., description="Instances dataset written by make-shards (a local path or a URL)."
    )
    size: Literal["tiny", "small", "base", "large", "xlarge", "xxlarge"] | None = Field(
        None,
        description="Model size preset (albert_zh sizes); base when no --model-config/--init-from.",
    )
    model_config_file: Path | None = Field(
        None,
        description="A config.json (HF AlbertConfig fields) describing the model to train.",
        json_schema_extra={"flag": "--model-config"},
    )
    init_from: Path | None = Field(
        None, description="Continue pretraining from this albertzh or HF ALBERT model directory."
    )
    vocab: Path | None = Field(
        None,
        description="Vocab directory (build-vocab output); default: the one recorded in the shards.",
    )
    eval_data: PathOrURL | None = Field(
        None,
        description="Instances dataset to evaluate on, a local path or a URL (else --eval-fraction of --data).",
    )
    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Hold out this fraction of --data rows for evaluation."
    )
    eval_batches: int | None = Field(
        None, ge=1, description="Evaluate on at most this many batches per rank."
    )
    sentence_task: Literal["sop", "nsp"] = Field(
        "sop",
        description="What the [CLS] head learns: sop = are the two segments in order or swapped "
        "(ALBERT); nsp = is the second segment the continuation or from another document "
        "(BERT; drawn at load time, needs dynamic masking).",
    )
    objective: Literal["mlm", "rtd"] = Field(
        "mlm",
        description="mlm = ALBERT's masked LM; rtd = ELECTRA's replaced-token detection: a "
        "small generator fills the masked positions and the model learns, at every token, "
        "whether it was replaced (the saved model is the encoder, a normal ALBERT directory).",
    )
    generator_size: float = Field(
        0.25,
        gt=0,
        le=1,
        description="--objective rtd: the generator's width as a fraction of the model's "
        "(of its attention heads, at least one; same depth, shared embeddings).",
    )
    rtd_weight: float = Field(
        50.0,
        gt=0,
        description="--objective rtd: weight of the replaced-token loss against the "
        "generator's MLM loss (ELECTRA's 50).",
    )
    cls_bow_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of a bag-of-words term: the pooled [CLS] alone predicts every "
        "masked token of its sequence (through the MLM head, no new weights), so the vector "
        "finetuning classifies from learns what a whole text is about. 0 = off.",
    )
    masking: Literal["auto", "dynamic", "static"] = Field(
        "auto",
        description="Mask at load time (dynamic) or use the shards' stored masks (static); auto follows the shards.",
    )
    masked_lm_prob: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Dynamic masking: fraction of tokens to predict (default: shards').",
    )
    max_predictions: int | None = Field(
        None, ge=1, description="Dynamic masking: most predictions per sequence (default: shards')."
    )
    shuffle_buffer: int = Field(
        10000, ge=1, description="Rows held in the shuffle buffer (1 = no shuffling: file order)."
    )
    length_buckets: int = Field(
        1,
        ge=1,
        description="Sort windows of N batches by length to cut padding (1 = off). Faster "
        "(1.75x real tokens/s on CPU with 16 on a mixed-length corpus) but, measured, the "
        "models finetune worse on topics: see docs/quality.md.",
    )
    pad_multiple: int | None = Field(
        None,
        ge=1,
        description="Pad each batch's length and its masked positions to a multiple of N, so "
        "that few shapes recur (kernels planned per shape, e.g. cuDNN attention and "
        "torch.compile graphs, are reused); default: 64 on CUDA, 1 (the longest row) elsewhere.",
    )
    optimizer: Literal["auto", "lamb", "adamw"] = Field(
        "auto",
        description="Optimizer; auto = AdamW below 1024 sequences per step (batch size x "
        "grad accum x processes), LAMB from 1024 on (LAMB's layer-wise steps are for large "
        "batches: at 16-32 sequences it stays at the uniform loss for hundreds of steps).",
    )
    lr: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate; default: 1e-3 for AdamW, and for LAMB albert_zh's "
        "0.00176 at 4096 sequences per step scaled by sqrt(sequences per step / 4096).",
    )
    warmup_ratio: float = Field(
        0.025, ge=0, lt=1, description="Warmup as a fraction of the total steps."
    )
    verify: bool = Field(False, description=VERIFY_HELP)

    # ``model_config_file`` starts with pydantic's reserved "model_" prefix; allow it.
    model_config = ConfigDict(protected_namespaces=())

    @model_validator(mode="after")
    def _check_pretrain(self) -> PretrainConfig:
        given = [
            n
            for n, v in (
                ("--size", self.size),
                ("--model-config", self.model_config_file),
                ("--init-from", self.init_from),
            )
            if v is not None
        ]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} exclude each other; give one")
        if self.eval_data is not None and self.eval_fraction > 0:
            raise ValueError("--eval-data and --eval-fraction exclude each other")
        return self


# --------------------------------------------------------------------------- loss and metrics


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (sorted keys, raw bytes): equal digests = identical weights."""
    h = hashlib.sha256()
    for k, v in sorted(tr.unwrap_model(model).state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _data_digest(batch: Mapping[str, torch.Tensor], prev: int) -> int:
    """A running CRC of the *unmasked* token ids a rank trained on (shows ranks' data differ)."""
    ids = batch["input_ids"].clone()
    labels, pos = batch["masked_labels"], batch["masked_positions"]
    real = labels != IGNORE_INDEX
    ids.scatter_(1, torch.where(real, pos, 0), torch.where(real, labels, ids[:, :1]))
    ids = ids * batch["attention_mask"]
    return zlib.crc32(ids.to(torch.int32).numpy().tobytes(), prev)


# --------------------------------------------------------------------------- setup helpers


def _model_config(cfg: PretrainConfig, vocab_size: int) -> Any:
    from albertzh.model import AlbertConfig

    if cfg.model_config_file is not None:
        path = cfg.model_config_file
        if not path.is_file():
            raise InputError(f"{path}: --model-config file not found")
        mc = AlbertConfig.from_json(path)
        if mc.vocab_size != vocab_size:
            raise VocabMismatchError(
                f"{path}: vocab_size {mc.vocab_size} does not match the shards' vocab ({vocab_size})"
            )
        return mc
    return AlbertConfig.preset(cfg.size or "base", vocab_size=vocab_size)


@dataclass
class _Setup:
    data: InstanceData
    train_units: list[Unit]
    eval_units: list[Unit]
    eval_spec: MaskSpec | None
    spec: MaskSpec
    tokenizer: Any
    model_config: Any


def _setup(cfg: PretrainConfig) -> _Setup:
    """Check every input before the run dir is touched (bad input leaves nothing behind)."""
    data = InstanceData(cfg.data, verify=cfg.verify)
    if cfg.init_from is not None and not cfg.init_from.is_dir():
        raise InputError(f"{cfg.init_from}: --init-from model directory not found")
    tok = tokenizer_for(data, cfg.vocab, cfg.init_from)
    check_vocab(data, tok, cfg.vocab or cfg.data)
    size = int(data.vocab["size"])
    if cfg.init_from is not None:
        from albertzh.model import AlbertConfig

        mc = AlbertConfig.from_json(cfg.init_from / "config.json")
        if mc.vocab_size != size:
            raise VocabMismatchError(
                f"{cfg.init_from}: model vocab_size {mc.vocab_size} does not match the shards' vocab ({size})"
            )
        from albertzh.tokenizer import load_tokenizer

        has_tok = (cfg.init_from / "vocab.txt").is_file() or (
            cfg.init_from / "spiece.model"
        ).is_file()
        if has_tok and load_tokenizer(cfg.init_from).hash != tok.hash:
            raise VocabMismatchError(
                f"{cfg.init_from}: the model's tokenizer is another vocab than the shards'"
            )
    else:
        mc = _model_config(cfg, size)
    if cfg.objective == "rtd" and cfg.cls_bow_weight > 0:
        raise ConfigError("--cls-bow-weight: for --objective mlm only")
    if cfg.objective == "rtd" and mc.embedding_layout != "google":
        raise ConfigError(
            "--objective rtd: the model has embedding_layout brightmart; it needs google "
            "(the generator shares E-wide embeddings)"
        )
    if data.max_seq_len and data.max_seq_len > mc.max_position_embeddings:
        raise ConfigError(
            f"{cfg.data}: max_seq_len {data.max_seq_len} exceeds the model's max_position_embeddings {mc.max_position_embeddings}"
        )
    spec = mask_spec(
        data, roles_of(tok), cfg.masked_lm_prob, cfg.max_predictions, cfg.masking, cfg.sentence_task
    )
    train_units, eval_units = split_units(data.units, cfg.eval_fraction)
    eval_spec = spec if eval_units else None
    if cfg.eval_data is not None:
        edata = InstanceData(cfg.eval_data, verify=cfg.verify)
        check_vocab(edata, tok, cfg.eval_data)
        eval_units = edata.units
        eval_spec = mask_spec(
            edata, roles_of(tok), cfg.masked_lm_prob, cfg.max_predictions, "auto", cfg.sentence_task
        )
    return _Setup(data, train_units, eval_units, eval_spec, spec, tok, mc)


def _train_batches(
    cfg: PretrainConfig,
    setup: _Setup,
    dist: tr.DistInfo,
    start_epoch: int,
    start_batch: int,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(epoch, batch)`` forever, resuming at ``start_batch`` of ``start_epoch``."""

    def epoch_iter(epoch: int) -> Iterator[dict[str, Any]]:
        return iter(
            make_loader(
                setup.train_units,
                setup.spec,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                epoch=epoch,
                rank=dist.rank,
                world_size=dist.world_size,
                shuffle=cfg.shuffle_buffer > 1,
                shuffle_buffer=cfg.shuffle_buffer,
                bucket=cfg.length_buckets,
                skip_batches=start_batch if epoch == start_epoch else 0,
                num_workers=cfg.num_workers,
                pin_memory=dist.device.type == "cuda",
            )
        )

    yield from tr.cycle_epochs(epoch_iter, start_epoch)


# --------------------------------------------------------------------------- run


def run(cfg: PretrainConfig) -> Summary:
    """Pretrain and return the summary; the run dir ends as a model directory."""
    inputs = {
        "--data": cfg.data,
        "--eval-data": cfg.eval_data,
        "--vocab": cfg.vocab,
        "--init-from": cfg.init_from,
        "--model-config": cfg.model_config_file,
    }
    outputs.check_apart(cfg.output, inputs)
    dist = tr.init_distributed(cfg.device)
    try:
        with tr.run_dir_lock(cfg.output, break_lock=cfg.break_lock, is_main=dist.is_main):
            summary = _run(cfg, dist)
            # Let every rank finish its last collective before gloo/NCCL is torn down; a rank
            # that destroys the group while a peer is still talking to it can abort that peer.
            tr.barrier()
        return summary
    finally:
        tr.cleanup_distributed()


LAMB_FROM_BATCH = 1024  # sequences per optimizer step from which --optimizer auto picks LAMB
LAMB_REFERENCE = (0.00176, 4096)  # albert_zh's LAMB learning rate at its batch size
ADAMW_LR = 1e-3


def resolve_optimizer(cfg: PretrainConfig, world_size: int = 1) -> tuple[str, float]:
    """The optimizer and peak learning rate that ``--optimizer``/``--lr`` stand for.

    ``auto`` picks by the global batch (sequences per optimizer step): LAMB adapts each
    layer's step to its weight norm, which suits the large batches it was made for but moves
    small-init weights by ~lr of their norm per step, too slow for a short run at 16-32
    sequences; AdamW below :data:`LAMB_FROM_BATCH`. LAMB's default lr follows the
    square-root rule from albert_zh's 0.00176 at 4096 sequences.
    """
    batch = cfg.batch_size * cfg.grad_accum * world_size
    kind = cfg.optimizer
    if kind == "auto":
        kind = "lamb" if batch >= LAMB_FROM_BATCH else "adamw"
    if cfg.lr is not None:
        return kind, cfg.lr
    if kind == "lamb":
        ref_lr, ref_batch = LAMB_REFERENCE
        return kind, ref_lr * (batch / ref_batch) ** 0.5
    return kind, ADAMW_LR


# --------------------------------------------------------------------------- the run's state


@dataclass
class _Run:
    """What setup builds and the loop only reads (the objects inside keep their own state)."""

    cfg: PretrainConfig
    dist: tr.DistInfo
    setup: _Setup
    precision: str
    total: int  # optimizer steps of the whole run
    run_dir: Path
    ckpt: tr.Checkpointer
    resume_from: Path | None  # the checkpoint this run went on from (None: a fresh run)
    start_step: int  # the step this run started at (the checkpoint's on a resume)
    model: Any  # DDP-wrapped (and compiled) when asked
    bare: Any  # the model itself
    optimizer_kind: str
    lr: float
    optimizer: Any
    scheduler: Any
    scaler: Any
    log: tr.MetricsLog
    meta: dict[str, Any]  # albertzh.json of the checkpoints and the final model dir


@dataclass
class _TrainState:
    """What the loop changes. A checkpoint carries ``step`` and this rank's data position
    (:meth:`to_checkpoint`); the rest is this process's record for the metrics and the summary.
    """

    step: int = 0
    epoch: int = 0  # the epoch of the last micro-batch trained on
    batch: int = 0  # micro-batches of that epoch this rank has consumed
    tokens: int = 0  # tokens trained on, all ranks together
    data_digest: int = 0  # running CRC of the token ids this rank trained on
    last_train: dict[str, float] = field(default_factory=dict)  # the last train log line's means
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"step", **eval metrics}
    last_saved: int = -1  # the step of the newest checkpoint (-1: none yet)

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> _TrainState:
        step = int(saved.get("step", 0))
        return cls(
            step=step,
            epoch=int(saved["epoch"]),
            batch=int(saved["batch"]),
            tokens=saved["tokens"],
            data_digest=saved.get("data_digest", 0),
            last_saved=step,
        )

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "tokens": self.tokens,
            "data_digest": self.data_digest,
        }

    def metrics(self) -> dict[str, Any]:
        """The metrics a checkpoint's (and the final model's) albertzh.json records."""
        return {"train": self.last_train, "eval": self.evals[-1] if self.evals else {}}


def _run(cfg: PretrainConfig, dist: tr.DistInfo) -> Summary:
    # ---- setup: every input checked, then the run dir, model, optimizer (and a resume)
    r, st = _prepare(cfg, dist)

    # ---- loop: optimizer steps, with train log lines, evaluations and checkpoints
    batches = _train_batches(cfg, r.setup, dist, st.epoch, st.batch)
    speed = tr.Speedometer(st.step, r.total)
    if dist.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dist.device)  # the summary's peak is this run's
    t0 = time.perf_counter()
    if dist.is_main and r.resume_from is not None:
        err_console.print(f"resuming from {r.resume_from} (step {st.step})", highlight=False)
    with (
        tr.StopFlag() as stop,
        progress("pretrain", total=r.total, enabled=dist.is_main) as bar,
    ):
        bar.skip(st.step)
        interrupted = _train(r, st, batches, stop, bar, speed)
    batches.close()  # shuts down DataLoader workers now, not at garbage collection

    # ---- save: a last evaluation and checkpoint; the run dir becomes the model dir
    _finish(r, st, interrupted)
    return _summary(r, st, stop, interrupted, speed, t0)


# --------------------------------------------------------------------------- setup


GPU_PAD_MULTIPLE = 64  # --pad-multiple's default on CUDA


def pad_multiple_for(asked: int | None, device: torch.device) -> int:
    """--pad-multiple, or its default: 64 on CUDA (few batch shapes, so cuDNN attention plans
    and compiled graphs are reused), 1 elsewhere (on CPU every padded position costs time)."""
    if asked is not None:
        return asked
    return GPU_PAD_MULTIPLE if device.type == "cuda" else 1


def _prepare(cfg: PretrainConfig, dist: tr.DistInfo) -> tuple[_Run, _TrainState]:
    """Check the inputs, then build the run; on --resume, restore where it stopped."""
    setup = _setup(cfg)
    pad = {
        "pad_multiple": pad_multiple_for(cfg.pad_multiple, dist.device),
        "pad_limit": setup.model_config.max_position_embeddings,
    }
    setup.spec = dataclasses.replace(setup.spec, **pad)
    if setup.eval_spec is not None:
        setup.eval_spec = dataclasses.replace(setup.eval_spec, **pad)
    if cfg.vocab is None:  # the vocab the shards name is an input too
        outputs.check_apart(cfg.output, {"the shards' vocab": recorded_vocab_dirs(setup.data)})
    precision = tr.resolve_precision(cfg.precision, dist.device)
    total = _total_steps(cfg, setup, dist)
    run_dir = tr.prepare_run_dir(
        cfg.output, resume=cfg.resume, overwrite=cfg.overwrite, is_main=dist.is_main
    )
    ckpt = tr.Checkpointer(run_dir, cfg.keep_last, dist.is_main)
    resume_from = ckpt.latest() if cfg.resume else None
    if resume_from is not None:
        _check_resume_settings(cfg, setup, resume_from, dist.world_size)

    tr.set_seed(cfg.seed)
    model = tr.wrap_model(_load_model(cfg, setup, resume_from), dist, compile=cfg.compile)
    kind, lr = resolve_optimizer(cfg, dist.world_size)
    optimizer = tr.build_optimizer(model, kind, lr, cfg.weight_decay)
    scheduler = tr.build_scheduler(optimizer, cfg.schedule, tr.warmup_for(cfg, total), total)
    scaler = tr.make_grad_scaler(precision, dist.device)

    st = _TrainState()
    if resume_from is not None:
        # This also restores the rank's RNG: masking and dropout go on as if never interrupted.
        saved = ckpt.load(resume_from, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        st = _TrainState.from_checkpoint(saved)
    log = tr.MetricsLog(
        run_dir, dist.is_main, resume_step=st.step if resume_from is not None else None
    )
    r = _Run(
        cfg=cfg,
        dist=dist,
        setup=setup,
        precision=precision,
        total=total,
        run_dir=run_dir,
        ckpt=ckpt,
        resume_from=resume_from,
        start_step=st.step,
        model=model,
        bare=tr.unwrap_model(model),
        optimizer_kind=kind,
        lr=lr,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        log=log,
        meta=_model_meta(cfg, setup, kind, lr, dist.world_size),
    )
    return r, st


def _check_resume_settings(
    cfg: PretrainConfig, setup: _Setup, checkpoint: Path, world_size: int
) -> None:
    """A resume goes on with the checkpoint's model, optimizer state and data order: refuse
    settings it could not honour (one line naming them) instead of recording them."""
    from albertzh.model import AlbertConfig
    from albertzh.model.io import read_meta

    saved = read_meta(checkpoint)
    also = []
    kind, lr = resolve_optimizer(cfg, world_size)
    opt = saved.get("optimizer") or {}
    if opt and opt.get("kind") != kind:
        also.append(("--optimizer", opt.get("kind"), kind))
    if opt and opt.get("lr") != lr:
        also.append(("--lr", opt.get("lr"), lr))
    model, want = AlbertConfig.from_json(checkpoint).to_hf_dict(), setup.model_config.to_hf_dict()
    diff = sorted(k for k in model.keys() | want.keys() if model.get(k) != want.get(k))
    if diff:
        flag = "--size/--model-config/--init-from"
        also.append((flag, _fields(model, diff), _fields(want, diff)))
    data = saved.get("data") or {}
    rows, vocab = setup.data.rows, setup.data.vocab
    if data and (data.get("rows"), data.get("vocab")) != (rows, vocab):
        also.append(
            ("--data", f"{data.get('path')} ({data.get('rows')} rows)", f"{cfg.data} ({rows} rows)")
        )
    skip = (
        "data",
        "vocab",
        "eval_data",
        "size",
        "model_config_file",
        "init_from",
        "optimizer",
        "lr",
    )
    tr.check_resume_settings(checkpoint, cfg, skip=skip, also=also)


def _fields(d: dict[str, Any], keys: list[str]) -> str:
    return "(" + ", ".join(f"{k}={d.get(k)}" for k in keys) + ")"


def _total_steps(cfg: PretrainConfig, setup: _Setup, dist: tr.DistInfo) -> int:
    """Optimizer steps of the run: --steps, or --epochs (one epoch when neither is given)."""
    per_epoch = (
        batches_per_epoch(
            setup.train_units,
            cfg.batch_size,
            seed=cfg.seed,
            world_size=dist.world_size,
            shuffle=cfg.shuffle_buffer > 1,
        )
        // cfg.grad_accum
    )
    return tr.total_steps(
        cfg if (cfg.steps or cfg.epochs) else cfg.model_copy(update={"epochs": 1.0}), per_epoch
    )


def _load_model(cfg: PretrainConfig, setup: _Setup, resume_from: Path | None) -> Any:
    """The checkpoint's model on --resume, else --init-from's, else new random weights."""
    from albertzh.model import AlbertForPreTraining
    from albertzh.model.albert import AlbertForReplacedTokenDetection

    source = resume_from if resume_from is not None else cfg.init_from
    if cfg.objective == "rtd":
        if source is not None:
            return AlbertForReplacedTokenDetection.from_pretrained(
                source, generator_size=cfg.generator_size
            )
        return AlbertForReplacedTokenDetection(
            setup.model_config, generator_size=cfg.generator_size
        )
    if source is not None:
        model = AlbertForPreTraining.from_pretrained(source)
    else:
        model = AlbertForPreTraining(setup.model_config)
    model.cls_bow = cfg.cls_bow_weight > 0
    return model


def _model_meta(
    cfg: PretrainConfig, setup: _Setup, kind: str, lr: float, world_size: int
) -> dict[str, Any]:
    """albertzh.json of the checkpoints and the final model dir (less step and metrics)."""
    return {
        "stage": "pretrain",
        "config": cfg.model_dump(mode="json"),
        "optimizer": {"kind": kind, "lr": lr},
        "data": {"path": str(cfg.data), "vocab": setup.data.vocab, "rows": setup.data.rows},
        "world_size": world_size,
    }


# --------------------------------------------------------------------------- loop


def _train(
    r: _Run,
    st: _TrainState,
    batches: Iterator[tuple[int, dict[str, Any]]],
    stop: tr.StopFlag,
    bar: Any,
    speed: tr.Speedometer,
) -> bool:
    """Optimizer steps from ``st.step`` to the last one or a stop request; True when stopped.

    Every rank takes the same steps and calls the same collectives in the same order (the means
    of a log line, evaluation, checkpoints, the stop request agreed over all ranks).
    """
    cfg = r.cfg
    avg = tr.Averager()
    while st.step < r.total:
        micro = _next_micro_batches(cfg, st, batches)
        tokens = sum(int(b.pop("num_tokens")) for b in micro)
        result = _train_step(r, micro)
        st.step += 1
        st.tokens += tokens * r.dist.world_size
        avg.add(result.tensors())  # summed on the device: no sync per step
        rate = speed.update(st.step, tokens * r.dist.world_size)
        bar.advance(1)
        bar.update(lr=result.lr, tok_s=round(rate["tokens_per_s"]))  # loss: on log lines
        if st.step % cfg.log_every == 0 or st.step == r.total:
            _log_train(r, st, avg.pop(), result, rate, bar)
            speed.mark()  # the log line waited for the device: a point for the steady rate
        if r.setup.eval_spec is not None and cfg.eval_every and st.step % cfg.eval_every == 0:
            _evaluate(r, st)
        if cfg.save_every and st.step % cfg.save_every == 0 and st.step < r.total:
            _save_checkpoint(r, st)
        if stop.check():  # asked at every step: it is a collective under DDP
            return True
    return False


def _next_micro_batches(
    cfg: PretrainConfig, st: _TrainState, batches: Iterator[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The ``--grad-accum`` micro-batches of the next step; ``st`` follows the data position."""
    micro = []
    for _ in range(cfg.grad_accum):
        epoch, batch = next(batches)
        st.epoch, st.batch = epoch, int(batch.pop("batch_index")) + 1
        st.data_digest = _data_digest(batch, st.data_digest)
        micro.append(batch)
    return micro


def _train_step(r: _Run, micro: list[dict[str, Any]]) -> tr.StepResult:
    """One optimizer step over ``micro`` (its batches' ``num_tokens`` already taken out)."""
    return tr.train_step(
        r.model,
        micro,
        functools.partial(
            pretraining_loss, rtd_weight=r.cfg.rtd_weight, cls_bow_weight=r.cfg.cls_bow_weight
        ),
        r.optimizer,
        r.scheduler,
        scaler=r.scaler,
        precision=r.precision,
        device=r.dist.device,
        max_grad_norm=r.cfg.max_grad_norm,
    )


def _log_train(
    r: _Run,
    st: _TrainState,
    sums: dict[str, float],
    result: tr.StepResult,
    rate: dict[str, float],
    bar: Any,
) -> None:
    """A train line on the progress bar and in metrics.jsonl (means over the steps and ranks)."""
    st.last_train = tr.mean_across_ranks(sums)
    bar.log(
        step=st.step,
        loss=st.last_train["loss"],
        mlm_acc=st.last_train.get("mlm_accuracy"),
        rtd_acc=st.last_train.get("rtd_accuracy"),  # None (not shown) unless --objective rtd
        lr=result.lr,
        tok_s=round(rate["tokens_per_s"]),
    )
    r.log.log(
        st.step,
        "train",
        **st.last_train,
        lr=result.lr,
        tokens=st.tokens,
        tokens_per_s=rate["tokens_per_s"],
        epoch=st.epoch,
    )


def _evaluate(r: _Run, st: _TrainState) -> None:
    """Evaluate on the held-out instances (split over the ranks) and log it."""
    cfg, dist, setup = r.cfg, r.dist, r.setup
    assert setup.eval_spec is not None
    ev = evaluate_units(
        r.model,
        setup.eval_units,
        setup.eval_spec,
        batch_size=cfg.batch_size,
        device=dist.device,
        precision=r.precision,
        max_batches=cfg.eval_batches,
        seed=cfg.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    st.evals.append({"step": st.step, **ev})
    r.log.log(st.step, "eval", **ev)


def _save_checkpoint(r: _Run, st: _TrainState) -> None:
    """A checkpoint at ``st.step`` (a collective: every rank calls it)."""
    r.ckpt.save(
        st.step,
        r.model,
        tokenizer=r.setup.tokenizer,
        optimizer=r.optimizer,
        scheduler=r.scheduler,
        scaler=r.scaler,
        train_state=st.to_checkpoint(),
        meta={**r.meta, "metrics": st.metrics()},
    )
    st.last_saved = st.step


# --------------------------------------------------------------------------- save


def _finish(r: _Run, st: _TrainState, interrupted: bool) -> None:
    """Evaluate the last step and checkpoint it (unless done); a completed run's dir becomes
    the model dir."""
    evaluated = bool(st.evals) and st.evals[-1]["step"] == st.step
    if not interrupted and r.setup.eval_spec is not None and not evaluated:
        _evaluate(r, st)
    if st.last_saved != st.step:
        _save_checkpoint(r, st)
    if not interrupted:
        r.ckpt.finalize(
            r.model,
            tokenizer=r.setup.tokenizer,
            meta={**r.meta, "step": st.step, "metrics": st.metrics()},
        )
    r.log.close()


def _rounded(x: float | None) -> int | None:
    return None if x is None else round(x)


def _peak_gpu_memory_gib(device: Any) -> float | None:
    """This rank's peak of allocated CUDA memory in GiB since the loop began (None on CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def _summary(
    r: _Run,
    st: _TrainState,
    stop: tr.StopFlag,
    interrupted: bool,
    speed: tr.Speedometer,
    t0: float,
) -> Summary:
    """The run's summary (exit 130/143 when a signal stopped it); ranks compare their weights."""
    elapsed = time.perf_counter() - t0
    digests = tr.all_gather_objects(weights_digest(r.bare))
    bare = r.bare
    figures: dict[str, Any] = {
        "run_dir": str(r.run_dir),
        "model": {
            "parameters": bare.num_parameters(),
            "hidden_size": bare.config.hidden_size,
            "layers": bare.config.num_hidden_layers,
            "vocab_size": bare.config.vocab_size,
            "objective": r.cfg.objective,
        },
        "steps": st.step,
        "total_steps": r.total,
        "optimizer": r.optimizer_kind,
        "lr": r.lr,
        "resumed_from_step": r.start_step if r.resume_from is not None else None,
        "interrupted": interrupted,
        "signal": stop.signal_name if interrupted else None,
        "world_size": r.dist.world_size,
        "device": str(r.dist.device),
        "precision": r.precision,
        "weights_sha256": digests[0],
        "ranks_in_sync": len(set(digests)) == 1,
        "train": st.last_train,
        "tokens_per_s": round(speed.overall_tokens_per_s()),
        # from the first log line to the last: without the first steps' warm-up or compile
        "steady_tokens_per_s": _rounded(speed.steady_tokens_per_s()),
        "peak_gpu_memory_gib": _peak_gpu_memory_gib(r.dist.device),
        "seconds": round(elapsed, 1),
    }
    if st.evals:
        figures["eval_first"] = st.evals[0]
        figures["eval_last"] = st.evals[-1]
    if interrupted and r.dist.is_main:
        err_console.print(
            f"interrupted: checkpoint at step {st.step} in {r.ckpt.dir}; continue with --resume",
            highlight=False,
        )
    return Summary("pretrain", figures, exit_code=stop.exit_code if interrupted else 0)
