"""The pretraining objective (masked LM + SOP) and its evaluation over shard units, shared by pretrain and eval."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from albertzh.data import fs
from albertzh.data.masking import IGNORE_INDEX
from albertzh.errors import ConfigError, InputError, VocabMismatchError
from albertzh.train import loop as tr
from albertzh.train.instances import (
    InstanceData,
    MaskSpec,
    Unit,
    make_loader,
)

EVAL_SEED_OFFSET = 1_000_003  # eval masks differ from training masks but are fixed across evals


def recorded_vocab_dirs(data: InstanceData) -> list[Path]:
    """Where make-shards says its vocab came from (manifest vocab/config/inputs)."""
    m = data.manifest
    cands: list[Any] = [(m.get("config") or {}).get("vocab"), *(m.get("inputs") or [])]
    out = []
    for c in cands:
        if isinstance(c, str) and c and not fs.is_remote(c):
            p = Path(c)
            if not p.is_absolute():
                # Relative paths were relative to where make-shards ran; try beside the data too
                # (when the data is on the local disk).
                bases = [Path.cwd()] + ([] if fs.is_remote(data.path) else [Path(data.path).parent])
                for base in bases:
                    if (base / p).is_dir():
                        p = base / p
                        break
            if p.is_file() and p.name in ("vocab.txt", "spiece.model"):
                p = p.parent
            if p.is_dir() and ((p / "vocab.txt").is_file() or (p / "spiece.model").is_file()):
                out.append(p)
    return out


def tokenizer_for(data: InstanceData, vocab: Path | None, init_from: Path | None) -> Any:
    from albertzh.tokenizer import load_tokenizer

    if vocab is not None:
        return load_tokenizer(vocab)
    for p in recorded_vocab_dirs(data):
        tok = load_tokenizer(p)
        if tok.hash == data.vocab.get("hash", tok.hash):
            return tok
    if init_from is not None and (
        (init_from / "vocab.txt").is_file() or (init_from / "spiece.model").is_file()
    ):
        return load_tokenizer(init_from)
    raise InputError(
        f"{fs.join(data.path, 'manifest.json')}: the vocab directory the shards were made with was not found; pass --vocab DIR"
    )


def check_vocab(data: InstanceData, tok: Any, where: fs.Location) -> None:
    want_hash, want_size = data.vocab.get("hash"), int(data.vocab["size"])
    if want_hash and tok.hash != want_hash:
        raise VocabMismatchError(
            f"{where}: shards were made with another vocab (hash {want_hash[:12]}, this vocab {tok.hash[:12]})"
        )
    if tok.vocab_size != want_size:
        raise VocabMismatchError(
            f"{where}: shards have a vocab of {want_size} tokens, this vocab has {tok.vocab_size}"
        )


def roles_of(tok: Any) -> dict[str, int]:
    return {
        "pad": int(tok.pad_id),
        "unk": int(tok.unk_id),
        "cls": int(tok.cls_id),
        "sep": int(tok.sep_id),
        "mask": int(tok.mask_id),
        **{f"special_{i}": int(i) for i in tok.special_ids},
    }


def mask_spec(
    data: InstanceData,
    roles: Mapping[str, int],
    masked_lm_prob: float | None,
    max_predictions: int | None,
    masking: str,
    sentence_task: str = "sop",
) -> MaskSpec:
    static = data.static if masking == "auto" else masking == "static"
    if static and sentence_task == "nsp":
        raise ConfigError(
            f"--sentence-task nsp: {data.path} holds static masks, which fix the segments; "
            "use shards made with dynamic masking"
        )
    if static and not data.static:
        raise ConfigError(f"--masking static: {data.path} has no stored masks (made with dynamic)")
    if not static and data.static:
        raise ConfigError(
            f"--masking dynamic: {data.path} holds already-masked static instances; use --masking static"
        )
    opts = data.masking_options()
    changes = {
        k: v
        for k, v in (("masked_lm_prob", masked_lm_prob), ("max_predictions", max_predictions))
        if v is not None
    }
    if changes:
        opts = opts.model_copy(update=changes)
    return MaskSpec(
        vocab_size=int(data.vocab["size"]),
        mask_id=int(roles["mask"]),
        pad_id=int(roles["pad"]),
        special_ids=tuple(sorted({int(i) for i in roles.values()})),
        opts=opts,
        static=static,
        sentence_task=sentence_task,
    )


RTD_WEIGHT = 50.0  # ELECTRA's weight of the replaced-token loss against the generator's MLM


def _is_rtd(model: torch.nn.Module) -> bool:
    from albertzh.model.albert import AlbertForReplacedTokenDetection

    return isinstance(tr.unwrap_model(model), AlbertForReplacedTokenDetection)


def _forward(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> Any:
    """The pretraining forward; a replaced-token-detection model also gets the MLM labels
    (its generator's replacements are scored against the original tokens)."""
    extra = {}
    if _is_rtd(model):
        extra = {"masked_labels": batch["masked_labels"], "ignore_index": IGNORE_INDEX}
    return model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        masked_positions=batch["masked_positions"],
        **extra,
    )


def _rtd_sums(out: Any, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Replaced-token detection over every real token: BCE sum, correct, replaced, count."""
    real = attention_mask.bool()
    logits, labels = out.rtd_logits.float()[real], out.rtd_labels[real]
    return {
        "rtd_loss": F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"),
        "rtd_correct": ((logits > 0).float() == labels).sum(),
        "rtd_replaced": labels.sum(),
        "rtd_count": torch.tensor(float(labels.numel())),
    }


def pretraining_loss(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    rtd_weight: float = RTD_WEIGHT,
    cls_bow_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MLM (mean over real predictions) + SOP cross-entropy, and their accuracies; for a
    replaced-token-detection model also ``rtd_weight`` x the detection loss (mean over real
    tokens), the generator's MLM being the MLM term; for a model that gives ``bow_logits``
    also ``cls_bow_weight`` x the bag-of-words loss: each masked token predicted from its
    sequence's pooled [CLS] alone (mean over real predictions)."""
    out = _forward(model, batch)
    logits = out.mlm_logits.float()  # [B, P, V]
    labels = batch["masked_labels"]  # [B, P], IGNORE_INDEX in padding slots
    valid = labels != IGNORE_INDEX
    n = valid.sum().clamp(min=1)
    mlm_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    mlm_loss = mlm_sum / n
    sop_logits = out.sop_logits.float()  # [B, 2]
    sop_loss = F.cross_entropy(sop_logits, batch["sop_labels"])
    with torch.no_grad():
        mlm_acc = ((logits.argmax(-1) == labels) & valid).sum() / n
        sop_acc = (sop_logits.argmax(-1) == batch["sop_labels"]).float().mean()
    metrics = {
        "mlm_loss": mlm_loss.detach(),
        "mlm_accuracy": mlm_acc,
        "sop_loss": sop_loss.detach(),
        "sop_accuracy": sop_acc,
    }
    loss = mlm_loss + sop_loss
    if out.bow_logits is not None and cls_bow_weight > 0:
        logp = F.log_softmax(out.bow_logits.float(), dim=-1)  # [B, V]
        picked = logp.gather(1, labels.clamp(min=0))  # [B, P]
        bow_loss = -(picked * valid).sum() / n
        loss = loss + cls_bow_weight * bow_loss
        metrics["bow_loss"] = bow_loss.detach()
    if out.rtd_logits is not None:
        rtd = _rtd_sums(out, batch["attention_mask"])
        count = rtd["rtd_count"].clamp(min=1)
        rtd_loss = rtd["rtd_loss"] / count
        loss = loss + rtd_weight * rtd_loss
        metrics |= {
            "rtd_loss": rtd_loss.detach(),
            "rtd_accuracy": rtd["rtd_correct"] / count,
            "rtd_replaced": rtd["rtd_replaced"] / count,
        }
    return loss, metrics


@torch.no_grad()
def _eval_sums(
    model: torch.nn.Module,
    batches: Iterator[dict[str, Any]],
    device: torch.device,
    precision: str,
    max_batches: int | None,
) -> dict[str, float]:
    sums = dict.fromkeys(
        ("mlm_loss", "mlm_correct", "mlm_count", "sop_loss", "sop_correct", "instances"), 0.0
    )
    if _is_rtd(model):  # the same keys on every rank, even one without an eval batch
        sums |= dict.fromkeys(("rtd_loss", "rtd_correct", "rtd_replaced", "rtd_count"), 0.0)
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        batch = tr.to_device(batch, device)
        with tr.autocast(precision, device):
            out = _forward(model, batch)
        logits, labels = out.mlm_logits.float(), batch["masked_labels"]
        valid = labels != IGNORE_INDEX
        sums["mlm_loss"] += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
        sums["mlm_correct"] += float(((logits.argmax(-1) == labels) & valid).sum())
        sums["mlm_count"] += float(valid.sum())
        sop = out.sop_logits.float()
        sums["sop_loss"] += float(F.cross_entropy(sop, batch["sop_labels"], reduction="sum"))
        sums["sop_correct"] += float((sop.argmax(-1) == batch["sop_labels"]).sum())
        sums["instances"] += float(batch["sop_labels"].shape[0])
        if out.rtd_logits is not None:
            for k, v in _rtd_sums(out, batch["attention_mask"]).items():
                sums[k] += float(v)
    return sums


def _eval_metrics(sums: Mapping[str, float]) -> dict[str, float]:
    n_mlm, n = max(1.0, sums["mlm_count"]), max(1.0, sums["instances"])
    metrics = {
        "mlm_loss": sums["mlm_loss"] / n_mlm,
        "mlm_accuracy": sums["mlm_correct"] / n_mlm,
        "sop_loss": sums["sop_loss"] / n,
        "sop_accuracy": sums["sop_correct"] / n,
        "instances": int(sums["instances"]),
    }
    if "rtd_count" in sums:
        n_rtd = max(1.0, sums["rtd_count"])
        metrics |= {
            "rtd_loss": sums["rtd_loss"] / n_rtd,
            "rtd_accuracy": sums["rtd_correct"] / n_rtd,
            "rtd_replaced": sums["rtd_replaced"] / n_rtd,
        }
    return metrics


def evaluate_units(
    model: torch.nn.Module,
    units: Sequence[Unit],
    spec: MaskSpec,
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    max_batches: int | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """MLM/SOP loss and accuracy over ``units`` (each rank its share; summed over ranks)."""
    bare = tr.unwrap_model(model)
    was_training = bare.training
    bare.eval()
    try:
        loader = make_loader(
            units,
            spec,
            batch_size=batch_size,
            seed=seed + EVAL_SEED_OFFSET,
            rank=rank,
            world_size=world_size,
            # NSP draws B from other rows of the batch: in file order those are often the same
            # document, so its eval rows are shuffled too (with a fixed seed: the same each time).
            shuffle=spec.sentence_task == "nsp",
        )
        sums = _eval_sums(bare, iter(loader), device, precision, max_batches)
    finally:
        bare.train(was_training)
    return _eval_metrics(tr.sum_across_ranks(sums))


def evaluate_pretraining(
    model: torch.nn.Module,
    data_dir: fs.Location,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    max_batches: int | None = None,
    seed: int = 42,
    tokenizer: Any = None,
) -> dict[str, float]:
    """Masked-LM and SOP loss/accuracy of a pretraining model on an instances dataset.

    Dynamic shards are masked with a fixed ``seed`` (the same masks every call); static shards
    use their stored masks. The special token ids come from ``tokenizer`` or else from the vocab
    directory recorded in the shards' manifest. Returns ``dict(mlm_loss, mlm_accuracy,
    sop_loss, sop_accuracy, instances)``.
    """
    device = torch.device(device) if isinstance(device, str) else device
    data = InstanceData(data_dir)
    if tokenizer is not None:
        check_vocab(data, tokenizer, data.path)
        roles = roles_of(tokenizer)
    elif isinstance(data.vocab.get("special_ids"), dict):
        roles = {k: int(v) for k, v in data.vocab["special_ids"].items()}
    else:
        tok = tokenizer_for(data, None, None)
        check_vocab(data, tok, data.path)
        roles = roles_of(tok)
    model_vocab = tr.unwrap_model(model).config.vocab_size
    if model_vocab != int(data.vocab["size"]):
        raise VocabMismatchError(
            f"{data_dir}: shards use a vocab of {data.vocab['size']} tokens, the model has {model_vocab}"
        )
    spec = mask_spec(data, roles, None, None, "auto")
    return evaluate_units(
        model,
        data.units,
        spec,
        batch_size=batch_size,
        device=device,
        precision=tr.resolve_precision(precision, device),
        max_batches=max_batches,
        seed=seed,
    )
