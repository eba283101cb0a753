"""Step efficiency: albertzh pretraining vs a plain transformers ``AlbertForPreTraining`` loop.

Same tiny model, same shards and batches, same hyperparameters: does albertzh's MLM loss and
accuracy after N steps equal that of a textbook transformers loop fed the same batches, within
seed noise? If so, masking, loss weighting, optimizer and schedule are right.

Per seed (a seed = one initialisation and one batch order/masking; both implementations get
the same ones):

* the batches are made ONCE with albertzh's own data path (``pretrain``'s ``_setup`` and
  ``_train_batches``: InstanceData, unit split, shuffle buffer, dynamic masking), kept as
  tensors and fed to both implementations; the held-out rows (``--eval-fraction``, as pretrain
  holds them out) give ``--eval-batches`` evaluation batches, masked as pretrain's evaluation
  masks them, on which both models are evaluated;
* albertzh: ``albertzh.model.AlbertForPreTraining`` trained with ``pretraining_loss`` (MLM logits
  only at the masked positions), ``train_step``, ``build_optimizer`` and ``build_scheduler``
  from ``albertzh.train.loop``, grad clipping 1.0 -- what ``albertzh pretrain`` runs;
* reference: ``transformers.AlbertForPreTraining`` from the same config, loaded with albertzh's
  initial weights, trained with ``labels`` (-100 except at the masked positions),
  ``sentence_order_label`` and HF's own ``outputs.loss`` (MLM over the full sequence + SOP),
  ``torch.optim.AdamW`` with the usual no-decay groups (LayerNorm, bias), weight decay 0.01,
  ``get_linear_schedule_with_warmup`` and ``clip_grad_norm_`` 1.0. transformers has no LAMB:
  with ``--optimizer lamb`` the reference uses albertzh's ``Lamb`` class (said in the output).

The two run in lock step and the global torch RNG is reseeded before every step of each, so
the only dropout (the SOP head's ``classifier_dropout_prob``) draws the same mask in both.

At step 0 and at every checkpoint both are evaluated: MLM loss (mean over masked tokens), MLM
accuracy, SOP loss and accuracy. A table per checkpoint gives albertzh and the reference as
mean +- std over seeds, their difference and whether it is within the seed-to-seed spread;
``step_efficiency.json`` keeps every number (and the command line), ``step_efficiency.png``
plots MLM loss and accuracy against steps.

    python benchmarks/step_efficiency.py --data runs/shards --model-config tiny.json --out runs/se
    python benchmarks/step_efficiency.py --data runs/shards --model-config tiny.json \\
        --steps 500 --checkpoints 100,250,500 --seeds 0,1,2 --optimizer lamb --out runs/se-lamb

Needs transformers and matplotlib (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from albertzh.data.masking import IGNORE_INDEX
from albertzh.errors import AlbertzhError
from albertzh.pipeline import pretrain as pt
from albertzh.train import loop as tr
from albertzh.train.pretraining import EVAL_SEED_OFFSET, pretraining_loss
from albertzh.train.pretraining import _eval_metrics as albertzh_eval_metrics
from albertzh.train.pretraining import _eval_sums as albertzh_eval_sums

JSON_NAME = "step_efficiency.json"
PNG_NAME = "step_efficiency.png"
METRICS = ("mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy")
IMPLS = ("albertzh", "reference")
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
# The reference's no-decay groups, as transformers' examples and Trainer write them.
REF_NO_DECAY = ("bias", "LayerNorm.weight")

# Compact dtypes for the materialised batches (2000 batches of 32 x 512 stay ~200 MB); both
# implementations get them back as int64 from the same expand().
_STORE = {
    "input_ids": torch.int32,
    "attention_mask": torch.int8,
    "token_type_ids": torch.int8,
    "masked_positions": torch.int32,
    "masked_labels": torch.int32,
    "sop_labels": torch.int8,
}


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data", required=True, help="Instances dataset (make-shards output dir).")
    ap.add_argument(
        "--model-config",
        required=True,
        type=Path,
        help="HF AlbertConfig json (vocab_size must match the shards').",
    )
    ap.add_argument(
        "--vocab", type=Path, default=None, help="Vocab dir (default: the shards' recorded one)."
    )
    ap.add_argument("--steps", type=int, default=2000, help="Optimizer steps (default 2000).")
    ap.add_argument(
        "--checkpoints",
        default="250,500,1000,2000",
        help="Steps to evaluate at (clipped to --steps; step 0 and the last step are added).",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3, help="Peak learning rate.")
    ap.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw")
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--masked-lm-prob", type=float, default=None, help="Override the shards'.")
    ap.add_argument("--max-predictions", type=int, default=None, help="Override the shards'.")
    ap.add_argument(
        "--shuffle-buffer", type=int, default=10000, help="As pretrain's (1 = file order)."
    )
    ap.add_argument(
        "--seeds", default="0,1", help="Comma-separated seeds: init, batch order and masks."
    )
    ap.add_argument(
        "--eval-batches", type=int, default=16, help="Held-out batches for the metrics."
    )
    ap.add_argument(
        "--eval-fraction",
        type=float,
        default=None,
        help="Held-out fraction of the rows (default: just enough for --eval-batches).",
    )
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="Seeds run at once, each in its own process (default 1: one after another).",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per seed process (default: torch's own choice; with --jobs > 1 "
        "give cores / jobs).",
    )
    ap.add_argument("--out", type=Path, required=True, help="Directory for the JSON and PNG.")
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "eval_batches", "jobs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup_steps < 0:
        ap.error("--warmup-steps must be >= 0")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be at least 1")
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
        wanted = [int(s) for s in args.checkpoints.split(",") if s.strip()]
    except ValueError:
        ap.error("--seeds and --checkpoints are comma-separated integers")
    if not args.seed_list:
        ap.error("--seeds: give at least one seed")
    if len(set(args.seed_list)) != len(args.seed_list):
        ap.error("--seeds: repeated seed")
    if any(c < 1 for c in wanted):
        ap.error("--checkpoints: steps are >= 1")
    args.checkpoint_list = sorted({0, args.steps, *(c for c in wanted if c <= args.steps)})
    return args


def _missing_deps() -> list[str]:
    missing = []
    for mod in ("transformers", "matplotlib"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    return missing


# --------------------------------------------------------------------------- batches


def _pretrain_config(args: argparse.Namespace, seed: int, eval_fraction: float) -> Any:
    return pt.PretrainConfig(
        data=args.data,
        output=args.out / "unused-run-dir",  # _setup never touches the run dir
        model_config_file=args.model_config,
        vocab=args.vocab,
        seed=seed,
        device=args.device,
        precision="fp32",
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        optimizer=args.optimizer,
        warmup_steps=args.warmup_steps,
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        eval_fraction=eval_fraction,
        eval_batches=args.eval_batches,
        masked_lm_prob=args.masked_lm_prob,
        max_predictions=args.max_predictions,
        shuffle_buffer=args.shuffle_buffer,
    )


def _store(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = {k: batch[k].to(dt).clone() for k, dt in _STORE.items()}
    out["num_tokens"] = torch.as_tensor(int(batch["num_tokens"]))
    return out


def expand(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A stored batch as the int64 tensors both implementations are fed, on ``device``."""
    return {k: batch[k].to(device=device, dtype=torch.int64) for k in _STORE}


def hf_labels(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``labels`` [B, T] for transformers: -100 except the original ids at masked positions."""
    ids = batch["input_ids"]
    labels = torch.full_like(ids, IGNORE_INDEX)
    pos, lab = batch["masked_positions"], batch["masked_labels"]
    real = lab != IGNORE_INDEX
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(pos)
    labels[rows[real], pos[real]] = lab[real]
    if int((labels != IGNORE_INDEX).sum()) != int(real.sum()):
        raise RuntimeError("a masked position appears twice in a row")
    return labels


def _digest(batches: Sequence[Mapping[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for b in batches:
        for k in _STORE:
            h.update(b[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def make_batches(
    args: argparse.Namespace, seed: int, eval_fraction: float
) -> tuple[Any, list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """(setup, train batches for every step, eval batches), via pretrain's own data path."""
    cfg = _pretrain_config(args, seed, eval_fraction)
    setup = pt._setup(cfg)
    if not setup.eval_units:
        raise AlbertzhError(f"{args.data}: no held-out rows for evaluation")
    dist = tr.DistInfo(0, 1, 0, torch.device("cpu"), True)
    it = pt._train_batches(cfg, setup, dist, 0, 0)
    train = []
    for _ in range(args.steps):
        _, b = next(it)
        train.append(_store(b))
    it.close()
    # The evaluation batches pretrain's evaluate() reads: in order, masked with seed + offset.
    from albertzh.train.instances import make_loader

    loader = make_loader(
        setup.eval_units,
        setup.eval_spec,
        batch_size=args.batch_size,
        seed=seed + EVAL_SEED_OFFSET,
        shuffle=False,
    )
    evals = []
    for b in loader:
        if len(evals) >= args.eval_batches:
            break
        evals.append(_store(b))
    return setup, train, evals


# --------------------------------------------------------------------------- models


def build_models(mc: Any, seed: int, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """albertzh's model (pretrain's seeded init) and transformers' with the same weights."""
    import transformers

    from albertzh.model import AlbertForPreTraining

    if mc.embedding_layout != "google" or mc.ln_type != "postln":
        raise AlbertzhError("--model-config: the transformers reference needs the google layout")
    tr.set_seed(seed)
    az = AlbertForPreTraining(mc)
    init = {k: v.detach().clone() for k, v in az.state_dict().items()}
    hf = transformers.AlbertForPreTraining(transformers.AlbertConfig(**mc.to_hf_dict()))
    result = hf.load_state_dict(init, strict=False)
    # The only keys albertzh lacks are HF's tied aliases (decoder weight = word embeddings,
    # decoder bias = predictions.bias); they must really be tied, so they were loaded too.
    tied = {
        "predictions.decoder.weight": hf.albert.embeddings.word_embeddings.weight,
        "predictions.decoder.bias": hf.predictions.bias,
    }
    params = dict(hf.named_parameters(remove_duplicate=False))
    bad_missing = [k for k in result.missing_keys if k not in tied or params.get(k) is not tied[k]]
    if bad_missing or result.unexpected_keys:
        raise RuntimeError(
            f"state dicts differ: missing in transformers {bad_missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    hf_sd = hf.state_dict()
    for k, v in init.items():
        if not torch.equal(hf_sd[k], v):
            raise RuntimeError(f"{k}: not loaded into the transformers model")
    return az.to(device), hf.to(device)


def reference_optimizer(hf: torch.nn.Module, kind: str, lr: float) -> torch.optim.Optimizer:
    """AdamW (or albertzh's Lamb: transformers has none) with the usual no-decay groups."""
    decay, no_decay = [], []
    for name, p in hf.named_parameters():
        if p.requires_grad:
            (no_decay if any(nd in name for nd in REF_NO_DECAY) else decay).append(p)
    if kind == "lamb":
        groups = [
            {"params": decay, "weight_decay": WEIGHT_DECAY, "use_trust_ratio": True},
            {"params": no_decay, "weight_decay": 0.0, "use_trust_ratio": False},
        ]
        return tr.Lamb(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # eps 1e-6 and betas 0.9/0.999: the same hyperparameters albertzh uses.
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def eval_albertzh(model: torch.nn.Module, batches: Sequence[Any], device: torch.device) -> dict:
    """albertzh's own evaluation code (what pretrain's evaluate() runs) on these batches."""
    was = model.training
    model.eval()
    try:
        sums = albertzh_eval_sums(model, (expand(b, device) for b in batches), device, "fp32", None)
    finally:
        model.train(was)
    return albertzh_eval_metrics(sums)


@torch.no_grad()
def eval_reference(hf: torch.nn.Module, batches: Sequence[Any], device: torch.device) -> dict:
    """The plain transformers way: full-sequence logits, labels -100 except masked tokens."""
    was = hf.training
    hf.eval()
    s = dict.fromkeys(("mlm", "correct", "count", "sop", "sop_correct", "n"), 0.0)
    try:
        for raw in batches:
            b = expand(raw, device)
            labels = hf_labels(b)
            out = hf(
                input_ids=b["input_ids"],
                attention_mask=b["attention_mask"],
                token_type_ids=b["token_type_ids"],
            )
            logits = out.prediction_logits.float()
            flat, lab = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
            s["mlm"] += float(F.cross_entropy(flat, lab, reduction="sum"))  # ignores -100
            valid = lab != IGNORE_INDEX
            s["correct"] += float((flat.argmax(-1)[valid] == lab[valid]).sum())
            s["count"] += float(valid.sum())
            sop = out.sop_logits.float()
            s["sop"] += float(F.cross_entropy(sop, b["sop_labels"], reduction="sum"))
            s["sop_correct"] += float((sop.argmax(-1) == b["sop_labels"]).sum())
            s["n"] += float(sop.shape[0])
    finally:
        hf.train(was)
    n_mlm, n = max(1.0, s["count"]), max(1.0, s["n"])
    return {
        "mlm_loss": s["mlm"] / n_mlm,
        "mlm_accuracy": s["correct"] / n_mlm,
        "sop_loss": s["sop"] / n,
        "sop_accuracy": s["sop_correct"] / n,
        "instances": int(s["n"]),
    }


# --------------------------------------------------------------------------- training


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919 + 17) % (2**63)


def reference_step(
    hf: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, float]:
    """One step of the plain loop; returns its MLM loss (at the masked tokens), lr, grad norm."""
    hf.train()
    labels = hf_labels(batch)
    lr = optimizer.param_groups[0]["lr"]
    out = hf(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        labels=labels,
        sentence_order_label=batch["sop_labels"],
    )
    out.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(hf.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        sel = labels != IGNORE_INDEX
        mlm = F.cross_entropy(out.prediction_logits.detach()[sel].float(), labels[sel])
    return {"mlm_loss": float(mlm), "lr": float(lr), "grad_norm": float(grad_norm)}


def run_seed(args: argparse.Namespace, seed: int, eval_fraction: float, log: Any) -> dict:
    from transformers import get_linear_schedule_with_warmup

    device = torch.device(args.device)
    t0 = time.perf_counter()
    setup, train, evals = make_batches(args, seed, eval_fraction)
    log(
        f"seed {seed}: {len(train)} train batches and {len(evals)} eval batches made once "
        f"with albertzh's data path ({time.perf_counter() - t0:.1f}s)"
    )
    az, hf = build_models(setup.model_config, seed, device)
    opt_a = tr.build_optimizer(az, args.optimizer, args.lr, WEIGHT_DECAY)
    sch_a = tr.build_scheduler(opt_a, "linear", args.warmup_steps, args.steps)
    opt_r = reference_optimizer(hf, args.optimizer, args.lr)
    sch_r = get_linear_schedule_with_warmup(opt_r, args.warmup_steps, args.steps)

    curves: dict[str, dict[str, list]] = {
        i: {"step": [], **{m: [] for m in METRICS}} for i in IMPLS
    }
    trace: dict[str, list[float]] = {
        f"{i}_{k}": [] for i in IMPLS for k in ("mlm_loss", "lr", "grad_norm")
    }
    seconds = dict.fromkeys(IMPLS, 0.0)
    tokens = 0

    def checkpoint(step: int) -> None:
        for impl, ev in (
            ("albertzh", eval_albertzh(az, evals, device)),
            ("reference", eval_reference(hf, evals, device)),
        ):
            curves[impl]["step"].append(step)
            for m in METRICS:
                curves[impl][m].append(ev[m])
        a, r = curves["albertzh"], curves["reference"]
        log(
            f"seed {seed} step {step:>5}: mlm_loss {a['mlm_loss'][-1]:.5f} / {r['mlm_loss'][-1]:.5f}"
            f"  mlm_acc {a['mlm_accuracy'][-1]:.4f} / {r['mlm_accuracy'][-1]:.4f}"
            "  (albertzh / reference)"
        )

    checkpoint(0)
    for step in range(1, args.steps + 1):
        raw = train[step - 1]
        batch = expand(raw, device)
        tokens += int(raw["num_tokens"])
        torch.manual_seed(_step_seed(seed, step))  # the same dropout draws in both
        t = time.perf_counter()
        res = tr.train_step(
            az,
            [batch],
            pretraining_loss,
            opt_a,
            sch_a,
            precision="fp32",
            device=device,
            max_grad_norm=MAX_GRAD_NORM,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds["albertzh"] += time.perf_counter() - t
        torch.manual_seed(_step_seed(seed, step))
        t = time.perf_counter()
        ref = reference_step(hf, batch, opt_r, sch_r)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds["reference"] += time.perf_counter() - t
        trace["albertzh_mlm_loss"].append(res.metrics["mlm_loss"])
        trace["albertzh_lr"].append(res.lr)
        trace["albertzh_grad_norm"].append(res.grad_norm)
        for k in ("mlm_loss", "lr", "grad_norm"):
            trace[f"reference_{k}"].append(ref[k])
        if step in args.checkpoint_list:
            checkpoint(step)

    diffs = [
        abs(a - b)
        for a, b in zip(trace["albertzh_mlm_loss"], trace["reference_mlm_loss"], strict=True)
    ]
    return {
        "curves": curves,
        "train": trace,
        "train_mlm_loss_max_abs_diff": max(diffs) if diffs else 0.0,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": {i: tokens / max(1e-9, seconds[i]) for i in IMPLS},
        "train_batches_sha256": _digest(train),
        "eval_batches_sha256": _digest(evals),
        "eval_instances": sum(int(b["sop_labels"].shape[0]) for b in evals),
        "eval_masked_tokens": sum(int((b["masked_labels"] != IGNORE_INDEX).sum()) for b in evals),
        "attn_implementation": getattr(hf.config, "_attn_implementation", None),
        "model_parameters": sum(p.numel() for p in az.parameters()),
        "mask_spec": {
            "masked_lm_prob": setup.spec.opts.masked_lm_prob,
            "max_predictions": setup.spec.opts.max_predictions,
            "static": setup.spec.static,
        },
        "rows": {
            "train": sum(u.rows for u in setup.train_units),
            "eval": sum(u.rows for u in setup.eval_units),
        },
        "vocab_size": setup.model_config.vocab_size,
        "model_config": setup.model_config.to_hf_dict(),
    }


# --------------------------------------------------------------------------- summary


def _log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _seed_worker(args: argparse.Namespace, seed: int, eval_fraction: float) -> dict:
    """One seed in a process of its own (``--jobs``): the same run_seed, its own threads."""
    import transformers

    transformers.logging.set_verbosity_error()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return run_seed(args, seed, eval_fraction, _log_stderr)


def run_seeds(args: argparse.Namespace, eval_fraction: float, log: Any) -> dict[int, dict]:
    """Every seed's run, in seed order: in this process, or ``--jobs`` processes at once.

    A seed's numbers do not depend on which process ran it (each seeds its own init, batches,
    masks and dropout), so ``--jobs`` changes the wall time, not the figures.
    """
    if args.jobs == 1 or len(args.seed_list) == 1:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        return {s: run_seed(args, s, eval_fraction, log) for s in args.seed_list}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    workers = min(args.jobs, len(args.seed_list))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {s: pool.submit(_seed_worker, args, s, eval_fraction) for s in args.seed_list}
        return {s: futures[s].result() for s in args.seed_list}


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs)


def _std(xs: Sequence[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def summarise(per_seed: Mapping[int, Mapping[str, Any]], steps: Sequence[int]) -> list[dict]:
    rows = []
    seeds = list(per_seed)
    for j, step in enumerate(steps):
        for m in METRICS:
            a = [per_seed[s]["curves"]["albertzh"][m][j] for s in seeds]
            r = [per_seed[s]["curves"]["reference"][m][j] for s in seeds]
            sa, sr = _std(a), _std(r)
            # Seed-to-seed spread: the two implementations' std over seeds, pooled.
            spread = None if sa is None or sr is None else math.sqrt((sa**2 + sr**2) / 2)
            diff = _mean(a) - _mean(r)
            rows.append(
                {
                    "step": step,
                    "metric": m,
                    "albertzh_mean": _mean(a),
                    "albertzh_std": sa,
                    "reference_mean": _mean(r),
                    "reference_std": sr,
                    "diff": diff,
                    "max_paired_abs_diff": max(abs(x - y) for x, y in zip(a, r, strict=True)),
                    "seed_spread": spread,
                    "within_seed_spread": None if spread is None else abs(diff) <= spread,
                }
            )
    return rows


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.4f}±{std:.4f}" if std is not None else f"{mean:.4f}"


def print_table(rows: Sequence[Mapping[str, Any]], out: Any) -> None:
    head = (
        f"{'step':>5}  {'metric':<12} {'albertzh':>15} {'reference':>15} {'diff':>10}"
        f" {'max|pair|':>10} {'seed spread':>11}  within"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    last = None
    for r in rows:
        if last is not None and r["step"] != last:
            print(file=out)
        last = r["step"]
        spread = "n/a" if r["seed_spread"] is None else f"{r['seed_spread']:.4f}"
        within = {None: "n/a (1 seed)", True: "yes", False: "NO"}[r["within_seed_spread"]]
        print(
            f"{r['step']:>5}  {r['metric']:<12} {_pm(r['albertzh_mean'], r['albertzh_std']):>15}"
            f" {_pm(r['reference_mean'], r['reference_std']):>15} {r['diff']:>+10.5f}"
            f" {r['max_paired_abs_diff']:>10.2e} {spread:>11}  {within}",
            file=out,
        )


def plot(per_seed: Mapping[int, Mapping[str, Any]], ln_v: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    style = {
        "albertzh": {"color": "C0", "linestyle": "-", "marker": "o"},
        "reference": {"color": "C1", "linestyle": "--", "marker": "x"},
    }
    for ax, metric, label in (
        (axes[0], "mlm_loss", "MLM loss (held-out)"),
        (axes[1], "mlm_accuracy", "MLM accuracy (held-out)"),
    ):
        for seed, res in per_seed.items():
            for impl in IMPLS:
                c = res["curves"][impl]
                name = "transformers" if impl == "reference" else impl
                ax.plot(
                    c["step"], c[metric], label=f"{name} seed {seed}", alpha=0.85, **style[impl]
                )
        if metric == "mlm_loss":
            ax.axhline(ln_v, color="grey", linestyle=":", label=f"ln V = {ln_v:.2f}")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    missing = _missing_deps()
    if missing:
        print(
            f"step_efficiency: needs {' and '.join(missing)}: "
            "pip install 'transformers>=4.40' 'matplotlib>=3.7' (or pip install -e '.[dev]')",
            file=sys.stderr,
        )
        return 2
    import transformers

    transformers.logging.set_verbosity_error()
    args = parse_args(argv)
    err = sys.stderr

    def log(msg: str) -> None:
        print(msg, file=err, flush=True)

    try:
        from albertzh.train.instances import InstanceData

        total_rows = InstanceData(args.data).rows
        if args.eval_fraction is not None:
            eval_fraction = args.eval_fraction
        else:  # just enough rows for --eval-batches, at most half the data
            eval_fraction = min(0.5, args.eval_batches * args.batch_size / total_rows)
        if not 0 < eval_fraction < 1:
            raise AlbertzhError("--eval-fraction: must be in (0, 1)")
        per_seed = run_seeds(args, eval_fraction, log)
    except AlbertzhError as exc:
        print(f"step_efficiency: {exc}", file=err)
        return 1

    first = per_seed[args.seed_list[0]]
    V = first["vocab_size"]
    ln_v = math.log(V)
    rows = summarise(per_seed, args.checkpoint_list)
    tps = {i: _mean([r["tokens_per_s"][i] for r in per_seed.values()]) for i in IMPLS}
    notes = [
        "the same batches (albertzh's data path, dynamic masking), the same initial weights "
        "and the same dropout draws (RNG reseeded per step) go to both implementations",
        "reference loss: transformers' outputs.loss (MLM over the full sequence with labels "
        "-100 except masked tokens, + SOP); albertzh: pretraining_loss (MLM logits only at "
        "the masked positions, + SOP)",
    ]
    if args.optimizer == "lamb":
        notes.append(
            "reference optimizer: albertzh.train.loop.Lamb (transformers has no LAMB), with "
            "the reference's own no-decay/no-trust-ratio groups"
        )
    else:
        notes.append(
            "reference optimizer: torch.optim.AdamW(betas 0.9/0.999, eps 1e-6, weight decay "
            "0.01 except LayerNorm/bias)"
        )
    if args.warmup_steps > 0:
        notes.append(
            "schedules differ by one step during warmup: albertzh's lr_factor is (s+1)/W, "
            "transformers' get_linear_schedule_with_warmup s/W (its first step has lr 0); "
            "identical after warmup"
        )
    command = shlex.join(
        [sys.executable, str(Path(__file__)), *(argv if argv is not None else sys.argv[1:])]
    )

    out = sys.stdout
    print(
        f"\nstep efficiency: {args.data}, {first['model_parameters']:,} parameters, "
        f"optimizer {args.optimizer}, lr {args.lr:g}, warmup {args.warmup_steps}, "
        f"batch {args.batch_size}, {args.steps} steps, seeds {args.seed_list}",
        file=out,
    )
    print(
        f"evaluation: {first['eval_instances']} held-out instances, "
        f"{first['eval_masked_tokens']} masked tokens (seed {args.seed_list[0]}); "
        f"uniform guess: ln(V) = ln({V}) = {ln_v:.4f}",
        file=out,
    )
    print("values: mean±std over seeds; diff = albertzh - reference; ", end="", file=out)
    print("within = |diff| <= seed-to-seed std\n", file=out)
    print_table(rows, out)
    max_train = max(r["train_mlm_loss_max_abs_diff"] for r in per_seed.values())
    print(
        f"\ntraining MLM loss, step by step: max |albertzh - reference| = {max_train:.2e}",
        file=out,
    )
    final = [r for r in rows if r["step"] == args.checkpoint_list[-1]]
    for r in final:
        if r["metric"] in ("mlm_loss", "mlm_accuracy"):
            w = {None: "n/a (1 seed)", True: "yes", False: "NO"}[r["within_seed_spread"]]
            print(f"final {r['metric']}: diff {r['diff']:+.5f}, within seed spread: {w}", file=out)
    print(
        f"tokens/s (informational, {args.device} fp32): albertzh {tps['albertzh']:,.0f}, "
        f"reference {tps['reference']:,.0f} ({tps['albertzh'] / max(1e-9, tps['reference']):.2f}x)",
        file=out,
    )
    for n in notes:
        print(f"note: {n}", file=out)

    args.out.mkdir(parents=True, exist_ok=True)
    title = (
        f"albertzh vs transformers AlbertForPreTraining: {first['model_parameters']:,} params, "
        f"{args.optimizer} lr {args.lr:g}, batch {args.batch_size}, seeds {args.seed_list}"
    )
    plot(per_seed, ln_v, title, args.out / PNG_NAME)
    curves = {
        impl: {
            "step": list(args.checkpoint_list),
            **{
                m: [
                    _mean([per_seed[s]["curves"][impl][m][j] for s in per_seed])
                    for j in range(len(args.checkpoint_list))
                ]
                for m in METRICS
            },
        }
        for impl in IMPLS
    }
    record = {
        "command": command,
        "args": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("seed_list", "checkpoint_list")
        },
        "seeds": args.seed_list,
        "checkpoints": args.checkpoint_list,
        "eval_fraction": eval_fraction,
        "ln_vocab": ln_v,
        "vocab_size": V,
        "model_parameters": first["model_parameters"],
        "model_config": first["model_config"],
        "mask_spec": first["mask_spec"],
        "rows": first["rows"],
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "curves": curves,
        "summary": rows,
        "tokens_per_s": tps,
        "notes": notes,
        "per_seed": {str(s): r for s, r in per_seed.items()},
    }
    (args.out / JSON_NAME).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out / JSON_NAME} and {args.out / PNG_NAME}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
