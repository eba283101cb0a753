"""Training plumbing shared by ``pretrain`` and ``finetune`` (setup -> loop -> save).

Nothing here knows about MLM, SOP or classification; a stage brings its model, data and a
``loss_fn`` and reuses these pieces. The API (keep it stable, finetune codes against it):

Config
    ``TrainConfig(StageConfig)``: the shared flags (``output/-o``, ``seed``, ``device``,
    ``precision``, ``compile``, ``batch_size`` per device, ``grad_accum``, ``steps``, ``epochs``,
    ``lr``, ``weight_decay``, ``optimizer``, ``schedule``, ``warmup_steps``, ``warmup_ratio``,
    ``max_grad_norm``, ``save_every``, ``keep_last``, ``resume``, ``overwrite``, ``log_every``,
    ``eval_every``, ``num_workers``). Stage configs subclass it (and may redefine defaults).
    ``total_steps(cfg, steps_per_epoch)`` and ``warmup_for(cfg, total)`` turn them into numbers.

Setup
    ``init_distributed(device) -> DistInfo(rank, world_size, local_rank, device, is_main)``
    reads torchrun's env vars (NCCL on GPU, gloo on CPU; a no-op in one process);
    ``cleanup_distributed()``; ``barrier()``; ``all_gather_objects(obj)``;
    ``resolve_precision(p, device)``; ``set_seed(seed)``; ``rng_state()`` / ``set_rng_state()``;
    ``run_dir_lock(dir, break_lock=, is_main=)`` (one writer per run dir, rank 0 holds it) and,
    inside it, ``prepare_run_dir(dir, resume=, overwrite=, is_main=)``;
    ``wrap_model(model, dist, compile=)`` (torch.compile + DDP) and ``unwrap_model(m)``;
    ``build_optimizer(model, kind, lr, weight_decay)`` (``Lamb`` or AdamW; no decay and no
    trust ratio for LayerNorm and bias), ``build_scheduler(opt, kind, warmup_steps, total)``
    (linear warmup, then power-1 polynomial decay to 0, or cosine, or constant);
    ``make_grad_scaler(precision, device)``; ``autocast(precision, device)``.

Loop
    ``train_step(model, micro_batches, loss_fn, optimizer, scheduler, scaler=, precision=,
    device=, max_grad_norm=) -> StepResult`` does one optimizer step over ``grad_accum``
    micro-batches: autocast forward, scaled backward (DDP gradient sync only on the last
    micro-batch), unscale, clip, optimizer, scheduler, zero grads. ``loss_fn(model, batch)``
    returns ``(loss, {name: detached scalar tensor})``; ``StepResult`` holds the mean loss, the
    mean metrics, the grad norm, the lr and whether the scaler skipped the step.
    ``to_device(batch, device)`` moves a dict of tensors. ``StopFlag`` turns Ctrl-C/SIGTERM into
    "save at the next step boundary and exit" (a second Ctrl-C aborts). ``Speedometer`` gives
    tokens/s and ETA for the progress bar.

Save
    ``Checkpointer(run_dir, keep_last, is_main)``: ``save(step, model, tokenizer=, optimizer=,
    scheduler=, scaler=, train_state=, meta=)`` must be called on *every* rank (it gathers each
    rank's RNG state and ``train_state``); rank 0 writes ``checkpoints/step-00000042/`` (a full
    model dir via ``model.save_pretrained(dir, tokenizer=, meta=)`` plus ``state/trainer.pt``)
    into a temp dir, renames it into place and prunes to ``keep_last``; a failed write (a full
    disk) removes its temp dir and raises ``FileSystemError`` naming the checkpoints dir.
    ``latest()`` is the newest complete checkpoint whose files are whole (a truncated one is
    passed over with a warning; none whole is an error), and removes temp dirs of dead
    processes; ``load(path, optimizer=, scheduler=, scaler=) -> train_state`` restores this
    rank's RNG and returns its ``train_state`` (with ``step``). ``check_resume_settings(ckpt,
    cfg, skip=, also=)`` refuses a resume whose settings differ from the checkpoint's
    (:data:`RESUME_MAY_CHANGE` may differ).
    ``finalize(model, tokenizer=, meta=)`` writes the final weights into ``run_dir`` itself, so
    the run dir is a model dir. ``MetricsLog(run_dir, is_main, resume_step=)``: ``log(step,
    split, **metrics)`` appends to ``metrics.jsonl`` (and TensorBoard when importable).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import random
import shutil
import signal
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as tdist
from pydantic import Field, model_validator

from albertzh import outputs
from albertzh.config import BreakLock, StageConfig, cli_name
from albertzh.console import print_error, print_warning
from albertzh.errors import AlbertzhError, ConfigError, InputError, from_os_error
from albertzh.model.io import CONFIG_FILE, META_FILE, WEIGHTS_FILE
from albertzh.tokenizer import SPIECE, TOKENIZER_CONFIG, VOCAB_JSON, VOCAB_TXT

CHECKPOINTS = "checkpoints"
STATE_DIR = "state"
STATE_FILE = "trainer.pt"
METRICS_FILE = "metrics.jsonl"
NO_DECAY_KEYS = ("LayerNorm", "layer_norm", "bias")
# What pretrain and finetune write in a run directory (finetune: also best/ and metrics.json);
# --overwrite deletes these and refuses a run directory holding anything else.
RUN_DIR_LAYOUT = outputs.Layout(
    "run directory",
    owned=(
        *(METRICS_FILE, "best", "metrics.json"),
        *(CONFIG_FILE, WEIGHTS_FILE, META_FILE, VOCAB_TXT, SPIECE, TOKENIZER_CONFIG, VOCAB_JSON),
    ),
    inside=(
        (CHECKPOINTS, outputs.Layout("checkpoints", owned=("step-*", ".tmp-step-*"))),
        ("tensorboard", outputs.Layout("tensorboard logs", owned=("events.out.tfevents.*",))),
    ),
)


# --------------------------------------------------------------------------- config


class TrainConfig(StageConfig):
    """Options that pretrain and finetune share."""

    output: Path = Field(
        ...,
        description="Run directory: checkpoints, metrics.jsonl, and the final model.",
        json_schema_extra={"short": "-o"},
    )
    seed: int = Field(42, description="Seed for init, data order, masking and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train; auto = cuda when available."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast precision; auto = fp32 on CPU, bf16 on GPUs that support it (else fp16).",
    )
    compile: bool = Field(False, description="Compile the model with torch.compile.")
    batch_size: int = Field(32, ge=1, description="Sequences per micro-batch on each device.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    steps: int | None = Field(None, ge=1, description="Optimizer steps to train (or --epochs).")
    epochs: float | None = Field(
        None, gt=0, description="Passes over the training data (used when --steps is not given)."
    )
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(
        0.01, ge=0, description="Weight decay (never on LayerNorm weights or biases)."
    )
    optimizer: Literal["lamb", "adamw"] = Field("lamb", description="Optimizer.")
    schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear",
        description="LR after warmup: linear (polynomial power 1) or cosine decay to 0, or constant.",
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warmup steps (overrides --warmup-ratio)."
    )
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Warmup as a fraction of the total steps."
    )
    max_grad_norm: float = Field(
        1.0, ge=0, description="Clip the global gradient norm to this (0 = no clipping)."
    )
    save_every: int = Field(
        1000, ge=0, description="Save a checkpoint every N steps (0 = only at the end)."
    )
    keep_last: int = Field(3, ge=1, description="Keep only the newest N checkpoints.")
    resume: bool = Field(
        False, description="Continue from the newest checkpoint in the run directory."
    )
    overwrite: bool = Field(
        False,
        description="Delete what albertzh wrote in the run directory first (a directory "
        "holding other files is refused).",
    )
    break_lock: BreakLock = False
    log_every: int = Field(10, ge=1, description="Log training metrics every N steps.")
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (0 = only at the end).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per device.")

    @model_validator(mode="after")
    def _check_train(self) -> TrainConfig:
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        return self


def total_steps(cfg: TrainConfig, steps_per_epoch: int | None) -> int:
    """Optimizer steps of the run: ``--steps``, else ``--epochs`` x steps per epoch."""
    if cfg.steps is not None:
        return cfg.steps
    if cfg.epochs is None:
        raise ConfigError("--steps/--epochs: give one of them")
    if not steps_per_epoch:
        raise ConfigError("--epochs: the training data is smaller than one optimizer step")
    return max(1, math.ceil(cfg.epochs * steps_per_epoch))


def warmup_for(cfg: TrainConfig, total: int) -> int:
    """Warmup steps: ``--warmup-steps`` if given, else ``--warmup-ratio`` x total."""
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return int(cfg.warmup_ratio * total)


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda:local_rank when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not tdist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, dev, rank == 0)


# Set once this process has torn down a process group; the CLI then ends the process with
# os._exit (see albertzh.cli.main) instead of a normal interpreter shutdown.
PROCESS_GROUP_DESTROYED = False


def cleanup_distributed() -> None:
    global PROCESS_GROUP_DESTROYED
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
        PROCESS_GROUP_DESTROYED = True


def _dist_on() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def barrier() -> None:
    if _dist_on():
        tdist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in one process)."""
    if not _dist_on():
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def raise_together(error: BaseException | None) -> None:
    """Under DDP: if any rank hit an error, every rank raises it (the lowest rank's), so all
    ranks stop together with one message instead of the others waiting at their next
    collective for a peer that is gone. Raises ``error`` itself in one process.

    A user error is printed by its own rank *before* the ranks meet — once one rank exits,
    torchrun stops the others, which could otherwise kill the rank that was about to say why —
    and every copy is marked ``reported`` so that the CLI does not print it again.
    """
    if not _dist_on():
        if error is not None:
            raise error
        return
    if isinstance(error, AlbertzhError):
        print_error(str(error))
        error.reported = True
    errors = all_gather_objects(error)
    rank = tdist.get_rank()
    origin = next((r for r, e in enumerate(errors) if e is not None), None)
    if origin is None:
        return
    if origin == rank:
        assert error is not None
        raise error
    shared = errors[origin]
    if isinstance(shared, AlbertzhError):
        shared.reported = True
    raise shared


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is set on any rank (so all ranks stop together)."""
    if not _dist_on():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if tdist.get_backend() == "nccl":
        t = t.cuda()
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_across_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (identity in one process)."""
    if not _dist_on():
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if tdist.get_backend() == "nccl":
        t = t.cuda()
    tdist.all_reduce(t)
    t /= tdist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def sum_across_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Sum scalar counters over ranks (identity in one process)."""
    if not _dist_on():
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if tdist.get_backend() == "nccl":
        t = t.cuda()
    tdist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


# --------------------------------------------------------------------------- precision, seeds


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp32 on CPU, bf16 on GPUs that have it, else fp16; fp16 on CPU is refused."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16: needs a CUDA device (use bf16 or fp32 on CPU)")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for bf16/fp16; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A grad scaler for fp16 (None otherwise: bf16 and fp32 need none)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def set_seed(seed: int) -> None:
    """Seed python, numpy's global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch, cuda), storable with torch.save."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- run dir, model


def prepare_run_dir(
    path: Path, *, resume: bool = False, overwrite: bool = False, is_main: bool = True
) -> Path:
    """Create the run dir; a non-empty one needs ``--resume`` or ``--overwrite``, which deletes
    only what a run wrote there (:data:`RUN_DIR_LAYOUT`) and refuses a directory holding
    anything else. Call it once every input is checked, under :func:`run_dir_lock`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: run directory exists and is not a directory")
    error = None
    if is_main:  # one rank decides; under DDP all ranks then raise its error (or go on) together
        try:
            outputs.prepare_dir(path, RUN_DIR_LAYOUT, resume=resume, overwrite=overwrite)
        except (InputError, OSError) as exc:
            error = (
                exc if isinstance(exc, InputError) else InputError(f"{path}: {exc.strerror or exc}")
            )
    raise_together(error)
    return path


@contextlib.contextmanager
def run_dir_lock(path: Path, *, break_lock: bool = False, is_main: bool = True) -> Iterator[None]:
    """Hold the run dir's lock (:func:`albertzh.outputs.locked`) while the body runs.

    Only rank 0 takes it; when it cannot, every rank raises its error together.
    """
    with contextlib.ExitStack() as stack:
        error = None
        if is_main:
            try:
                stack.enter_context(outputs.locked(Path(path), break_lock=break_lock))
            except AlbertzhError as exc:
                error = exc
        raise_together(error)
        yield


def wrap_model(model: torch.nn.Module, dist: DistInfo, *, compile: bool = False) -> torch.nn.Module:
    """Move to the device, optionally torch.compile, and wrap in DDP when distributed."""
    model = model.to(dist.device)
    if compile:
        model = torch.compile(model)
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = DDP(model, device_ids=ids)
    return model


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# --------------------------------------------------------------------------- optimizer, schedule


class Lamb(torch.optim.Optimizer):
    """LAMB as in google-research/albert (and albert_zh): Adam moments without bias correction,
    decoupled weight decay added to the update, then a layer-wise trust ratio ||w|| / ||update||.

    Param groups may set ``use_trust_ratio=False`` (LayerNorm and bias params in ALBERT, which
    also get ``weight_decay=0``).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        use_trust_ratio: bool = True,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "use_trust_ratio": use_trust_ratio,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                update = m / (v.sqrt() + group["eps"])
                w = p.float()
                if group["weight_decay"]:
                    update.add_(w, alpha=group["weight_decay"])
                ratio = 1.0
                if group["use_trust_ratio"]:
                    w_norm, u_norm = w.norm(), update.norm()
                    # Trust ratio is 1 where either norm is 0 (fresh zero-init params, zero update).
                    ratio = torch.where(
                        (w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm)
                    )
                p.add_((update * ratio).to(p.dtype), alpha=-group["lr"])
        return loss


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and LayerNorm/bias params (no decay, no trust ratio)."""
    decay, no_decay = [], []
    for name, p in unwrap_model(model).named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if any(k in name for k in NO_DECAY_KEYS) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "use_trust_ratio": True}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "use_trust_ratio": False})
    return groups


def _all_on_cuda(groups: Sequence[Mapping[str, Any]]) -> bool:
    """True when there are parameters and every one of them is on a CUDA device."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.device.type == "cuda" for p in params)


def build_optimizer(
    model: torch.nn.Module, kind: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """LAMB (eps 1e-6) or AdamW (eps 1e-6), β 0.9/0.999, no decay on LayerNorm and biases.

    AdamW is PyTorch's fused (one-kernel) implementation when every parameter is on a CUDA
    device, and its default (foreach) one otherwise.
    """
    groups = param_groups(model, weight_decay)
    if kind == "lamb":
        return Lamb(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)
    if kind == "adamw":
        for g in groups:
            g.pop("use_trust_ratio")
        extra = {"fused": True} if _all_on_cuda(groups) else {}
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, **extra)
    raise ConfigError(f"--optimizer: unknown optimizer {kind!r} (lamb or adamw)")


def lr_factor(step: int, kind: str, warmup_steps: int, total_steps: int) -> float:
    """The LR multiplier at ``step`` (0-based): linear warmup, then decay to 0 at ``total``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if kind == "linear":  # polynomial decay with power 1, as albert_zh
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"--schedule: unknown schedule {kind!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following :func:`lr_factor`; call ``.step()`` once per optimizer step."""
    if kind not in ("linear", "cosine", "constant"):
        raise ConfigError(f"--schedule: unknown schedule {kind!r}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, kind, warmup_steps, total_steps)
    )


# --------------------------------------------------------------------------- the step


@dataclass
class StepResult:
    """One optimizer step's figures, kept as tensors on the training device: reading ``loss``,
    ``metrics`` or ``grad_norm`` as floats waits for the step to finish (a host-device sync on
    GPU), so the loops accumulate :meth:`tensors` every step and read floats on log steps only."""

    loss_t: torch.Tensor
    metrics_t: dict[str, torch.Tensor]
    grad_norm_t: torch.Tensor
    lr: float
    skipped: bool = False

    @property
    def loss(self) -> float:
        return float(self.loss_t)

    @property
    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metrics_t.items()}

    @property
    def grad_norm(self) -> float:
        return float(self.grad_norm_t)

    def tensors(self) -> dict[str, torch.Tensor]:
        """``loss``, every metric and ``grad_norm`` as device tensors (no sync)."""
        return {"loss": self.loss_t, **self.metrics_t, "grad_norm": self.grad_norm_t}


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch dict to ``device`` (non-blocking from pinned memory)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


LossFn = Callable[
    [torch.nn.Module, Mapping[str, Any]], tuple[torch.Tensor, dict[str, torch.Tensor]]
]


def train_step(
    model: torch.nn.Module,
    micro_batches: Sequence[Mapping[str, Any]],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    *,
    scaler: torch.amp.GradScaler | None = None,
    precision: str = "fp32",
    device: torch.device | None = None,
    max_grad_norm: float = 1.0,
) -> StepResult:
    """One optimizer step over ``micro_batches`` (gradient accumulation)."""
    device = device or next(model.parameters()).device
    model.train()
    n = len(micro_batches)
    total = torch.zeros((), device=device)
    sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        batch = to_device(batch, device)
        # DDP: all-reduce gradients only on the last micro-batch of the step.
        sync = i == n - 1 or not hasattr(model, "no_sync")
        ctx = contextlib.nullcontext() if sync else model.no_sync()
        with ctx:
            with autocast(precision, device):
                loss, metrics = loss_fn(model, batch)
            scaled = loss / n
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach().float()
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if max_grad_norm and max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        grad_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params])
        )
    lr = optimizer.param_groups[0]["lr"]
    skipped = False
    if scaler is not None:
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped = scaler.get_scale() < before
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(
        loss_t=total / n,
        metrics_t={k: v / n for k, v in sums.items()},
        grad_norm_t=grad_norm.detach().float(),
        lr=float(lr),
        skipped=skipped,
    )


class StopFlag:
    """Context manager: Ctrl-C (SIGINT) or SIGTERM sets ``.requested`` instead of killing.

    The loop checks ``stop.requested`` (``stop.check()`` agrees across DDP ranks) at each step
    boundary, saves a checkpoint and exits. A second Ctrl-C raises KeyboardInterrupt.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = self.signum or signum

    @property
    def exit_code(self) -> int:
        """The shell's status for death by the signal: 130 for SIGINT, 143 for SIGTERM (a rank
        stopped because another rank was signalled reports SIGTERM's)."""
        return 128 + int(self.signum or signal.SIGTERM)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum or signal.SIGTERM).name

    def check(self) -> bool:
        """Whether to stop now. Under DDP the ranks agree by a collective every step: a
        host-device sync, kept on purpose so that a SIGTERM (a scheduler's notice) is acted on
        at the next step boundary, however long the steps are."""
        return any_rank(self.requested)

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class Speedometer:
    """Tokens/s over the recent steps and an ETA for the remaining ones."""

    def __init__(self, start_step: int, total_steps: int) -> None:
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self.tokens = 0
        self._win: list[tuple[float, int, int]] = [(self.t0, 0, start_step)]
        self._first_mark: tuple[float, int] | None = None
        self._last_mark: tuple[float, int] | None = None

    def update(self, step: int, tokens: int) -> dict[str, float]:
        now = time.perf_counter()
        self.tokens += tokens
        self._win.append((now, self.tokens, step))
        self._win = self._win[-50:]
        t_old, tok_old, step_old = self._win[0]
        dt = max(1e-9, now - t_old)
        tps = (self.tokens - tok_old) / dt
        sec_per_step = dt / max(1, step - step_old)
        return {"tokens_per_s": tps, "eta_s": sec_per_step * max(0, self.total - step)}

    def overall_tokens_per_s(self) -> float:
        return self.tokens / max(1e-9, time.perf_counter() - self.t0)

    def mark(self) -> None:
        """Call where the host has just waited for the device (a log line reads the losses):
        :meth:`steady_tokens_per_s` measures from the first such mark to the last."""
        point = (time.perf_counter(), self.tokens)
        if self._first_mark is None:
            self._first_mark = point
        self._last_mark = point

    def steady_tokens_per_s(self) -> float | None:
        """Tokens/s between the first and the last :meth:`mark`: without the first steps
        (allocator, kernel selection, torch.compile), None with fewer than two marks."""
        if self._first_mark is None or self._last_mark is None:
            return None
        (t0, n0), (t1, n1) = self._first_mark, self._last_mark
        return (n1 - n0) / (t1 - t0) if t1 > t0 and n1 > n0 else None


# --------------------------------------------------------------------------- checkpoints


def _step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def checkpoint_damage(path: Path) -> str | None:
    """What makes a checkpoint dir unusable (a truncated state or weights file), else None.

    Cheap: it reads the zip directory at the end of ``state/trainer.pt`` (torch.save's format)
    and compares the weights file's size with what its safetensors header promises.
    """
    state = path / STATE_DIR / STATE_FILE
    try:
        with zipfile.ZipFile(state):
            pass
    except (zipfile.BadZipFile, OSError, EOFError):
        return f"{STATE_DIR}/{STATE_FILE} is truncated or corrupt"
    weights = path / "model.safetensors"
    if weights.is_file():
        try:
            with open(weights, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n)) if 0 < n < 100_000_000 else None
            end = max(
                (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                default=0,
            )
            whole = weights.stat().st_size == 8 + n + end
        except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError):
            whole = False
        if not whole:
            return f"{weights.name} is truncated or corrupt"
    return None


class Checkpointer:
    """Atomic, pruned checkpoints under ``run_dir/checkpoints/``; see the module docstring."""

    def __init__(self, run_dir: Path, keep_last: int = 3, is_main: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / CHECKPOINTS
        self.keep_last = keep_last
        self.is_main = is_main

    def list(self) -> list[tuple[int, Path]]:
        """Complete checkpoints as (step, path), oldest first."""
        out = []
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name.startswith("step-") and (p / STATE_DIR / STATE_FILE).is_file():
                    with contextlib.suppress(ValueError):
                        out.append((int(p.name[5:]), p))
        return sorted(out)

    def latest(self) -> Path | None:
        """The newest checkpoint whose files are whole, for a resume (None: there is none).

        A damaged newest one (a truncated ``state/trainer.pt`` or weights file) is passed over
        with a warning line for the one before it; when every one is damaged it is an error.
        Rank 0 also removes the temp dirs of saves whose process is gone.
        """
        if self.is_main:
            self.remove_stale_temps()
        ckpts = self.list()
        damage = []
        for _, path in reversed(ckpts):
            problem = checkpoint_damage(path)
            if problem is None:
                if damage and self.is_main:
                    print_warning(f"{'; '.join(damage)}; resuming from {path} instead")
                return path
            damage.append(f"{path}: {problem}")
        if damage:
            raise InputError(f"{damage[0]}; no complete checkpoint to resume from in {self.dir}")
        return None

    def remove_stale_temps(self) -> list[Path]:
        """Delete ``.tmp-step-*`` dirs left by saves whose process died (a kill, a full disk)."""
        removed = []
        for tmp in sorted(self.dir.glob(".tmp-step-*")) if self.dir.is_dir() else []:
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
                continue  # another live process is writing it
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
        return removed

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        *,
        tokenizer: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        scaler: torch.amp.GradScaler | None = None,
        train_state: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Save on every rank's call (collective); only rank 0 writes. Returns the path."""
        per_rank = all_gather_objects({"rng": rng_state(), "train_state": train_state or {}})
        final = self.dir / _step_dir_name(step)
        error = None
        if self.is_main:
            tmp = self.dir / f".tmp-{_step_dir_name(step)}-{os.getpid()}"
            blob = {
                "step": step,
                "world_size": len(per_rank),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "ranks": per_rank,
            }
            try:
                self._write(tmp, final, model, tokenizer, {**(meta or {}), "step": step}, blob)
            except Exception as exc:  # a full disk, a revoked permission: leave no temp behind
                shutil.rmtree(tmp, ignore_errors=True)
                error = from_os_error(exc, self.dir, where_first=True)
                if error is None:
                    raise
                error = type(error)(f"{error} (checkpoint of step {step} not saved)")
                error.__cause__ = exc
        # Under DDP every rank learns of rank 0's failure here instead of waiting at a barrier.
        raise_together(error)
        return final

    def _write(
        self,
        tmp: Path,
        final: Path,
        model: torch.nn.Module,
        tokenizer: Any,
        meta: dict[str, Any],
        blob: dict[str, Any],
    ) -> None:
        """Rank 0's part of :meth:`save`: the checkpoint under ``tmp``, then renamed to ``final``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        unwrap_model(model).save_pretrained(tmp, tokenizer=tokenizer, meta=meta)
        (tmp / STATE_DIR).mkdir()
        with open(tmp / STATE_DIR / STATE_FILE, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        (tmp / STATE_DIR / "train_state.json").write_text(
            json.dumps(
                {"step": blob["step"], "ranks": [r["train_state"] for r in blob["ranks"]]},
                indent=2,
                default=str,
            )
            + "\n"
        )
        if final.exists():  # a re-save of the same step (e.g. stop right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()

    def _prune(self) -> None:
        ckpts = self.list()
        for _, p in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            shutil.rmtree(p, ignore_errors=True)
        self.remove_stale_temps()

    def load(
        self,
        path: Path,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        scaler: torch.amp.GradScaler | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> dict[str, Any]:
        """Restore optimizer/scheduler/scaler and this rank's RNG; return its ``train_state``.

        The model weights are the checkpoint's model dir: load them with the model class's
        ``from_pretrained(path)`` (or ``load_state_dict``) before calling this.
        """
        path = Path(path)
        state_file = path / STATE_DIR / STATE_FILE
        if not state_file.is_file():
            raise InputError(f"{path}: not a complete checkpoint (no {STATE_DIR}/{STATE_FILE})")
        try:
            blob = torch.load(state_file, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
            error = from_os_error(exc, state_file)
            if error is not None:
                raise error from exc
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{state_file}: cannot read the checkpoint state: {first}") from exc
        rank = tdist.get_rank() if rank is None and _dist_on() else (rank or 0)
        world = tdist.get_world_size() if world_size is None and _dist_on() else (world_size or 1)
        if blob["world_size"] != world:
            raise ConfigError(
                f"{path}: saved with {blob['world_size']} process(es); resume with the same world size (now {world})"
            )
        if optimizer is not None and blob["optimizer"] is not None:
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None and blob["scheduler"] is not None:
            scheduler.load_state_dict(blob["scheduler"])
        if scaler is not None and blob["scaler"] is not None:
            scaler.load_state_dict(blob["scaler"])
        mine = blob["ranks"][rank]
        set_rng_state(mine["rng"])
        return {**mine["train_state"], "step": blob["step"]}

    def finalize(
        self, model: torch.nn.Module, *, tokenizer: Any = None, meta: dict[str, Any] | None = None
    ) -> Path:
        """Write the final model (config, weights, tokenizer, albertzh.json) into ``run_dir``."""
        if self.is_main:
            unwrap_model(model).save_pretrained(self.run_dir, tokenizer=tokenizer, meta=meta)
        barrier()
        return self.run_dir


# Settings a --resume may change: how long the run goes on (the schedule stretches to the new
# length), and how it is run, logged, evaluated and saved. Every other setting is fixed by the
# checkpoint (its model, optimizer state, data order and RNG), so a new value could not be
# honoured: check_resume_settings refuses it rather than record a value the run did not use.
RESUME_MAY_CHANGE = frozenset(
    {
        *("output", "resume", "overwrite", "break_lock", "verify"),
        *("steps", "epochs"),
        *("device", "precision", "compile", "num_workers"),
        *("log_every", "eval_every", "eval_batches", "eval_batch_size", "save_every", "keep_last"),
    }
)


def check_resume_settings(
    checkpoint: Path,
    config: StageConfig,
    *,
    skip: Sequence[str] = (),
    also: Sequence[tuple[str, Any, Any]] = (),
) -> None:
    """Refuse a resume whose settings differ from those the checkpoint's run was made with.

    Compares ``config`` with the ``config`` recorded in the checkpoint's ``albertzh.json``,
    field by field, except :data:`RESUME_MAY_CHANGE` and ``skip`` (fields the stage compares
    itself, e.g. by what they resolve to); ``also`` adds the stage's own findings as (flag,
    saved, now). A ConfigError names every changed flag with both values; a checkpoint that
    recorded no config (an older albertzh) is checked only for ``also``.
    """
    meta_file = Path(checkpoint) / "albertzh.json"
    try:
        saved = json.loads(meta_file.read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, AttributeError):
        saved = None
    saved = saved if isinstance(saved, dict) else {}
    changed = [
        (cli_name(type(config), name), saved[name], value)
        for name, value in config.model_dump(mode="json").items()
        if name in saved
        and name not in RESUME_MAY_CHANGE
        and name not in skip
        and saved[name] != value
    ]
    changed += list(also)
    if changed:
        was = ", ".join(f"{flag} {_shown(old)}" for flag, old, _ in changed)
        now_text = ", ".join(f"{flag} {_shown(new)}" for flag, _, new in changed)
        raise ConfigError(
            f"--resume: {checkpoint} was trained with {was}, not {now_text}; a resume keeps "
            "the run's settings (only --steps/--epochs and how it is run, logged and saved may "
            "change): give the same values, or start a new run"
        )


def _shown(value: Any) -> str:
    return "(default)" if value is None else str(value)


# --------------------------------------------------------------------------- metrics


def _parse_line(line: str) -> dict[str, Any] | None:
    """One metrics record, or None for a blank or torn line (a run killed mid-write)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


class MetricsLog:
    """Append-only JSONL metrics (one object per line: step, split, time, metrics...).

    With ``resume_step``, lines past that step (written by an interrupted run after its last
    checkpoint) are dropped first, so the log reads as one continuous run. TensorBoard event
    files are written too when ``torch.utils.tensorboard`` can be imported.
    """

    def __init__(self, run_dir: Path, is_main: bool = True, resume_step: int | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        self.is_main = is_main
        self._f = None
        self._tb = None
        if not is_main:
            return
        if resume_step is not None and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines()
                if (rec := _parse_line(line)) is not None and rec.get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        except Exception:  # tensorboard is an optional extra
            self._tb = None

    def log(self, step: int, split: str = "train", **metrics: Any) -> None:
        if not self.is_main or self._f is None:
            return
        rec = {"step": step, "split": split, "time": round(time.time(), 3), **metrics}
        self._f.write(json.dumps(rec, default=float) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (optionally only one split)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    recs = [r for r in map(_parse_line, lines) if r is not None]
    return [r for r in recs if split is None or r.get("split") == split]


@dataclass
class Averager:
    """Running means of scalar metrics between two log lines. Tensors are summed where they
    are (in float64, no host-device sync); :meth:`pop` reads the means as floats."""

    sums: dict[str, Any] = field(default_factory=dict)
    count: int = 0

    def add(self, values: Mapping[str, float | torch.Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().to(torch.float64) if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def pop(self) -> dict[str, float]:
        out = {k: float(v) / max(1, self.count) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


def cycle_epochs(make_iter: Callable[[int], Iterator[Any]], start_epoch: int = 0) -> Iterator[Any]:
    """Yield ``(epoch, item)`` from ``make_iter(epoch)`` forever, moving to the next epoch when
    one is exhausted. The first epoch may be empty (a resume at its very end); a later empty
    epoch raises InputError instead of looping forever."""
    epoch = start_epoch
    while True:
        empty = True
        for item in make_iter(epoch):
            empty = False
            yield epoch, item
        if empty and epoch != start_epoch:
            raise InputError("training data: an epoch yielded no batches")
        epoch += 1
