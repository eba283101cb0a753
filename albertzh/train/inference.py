"""Batched inference with a finetuned classification/regression head, shared by finetune, eval and predict."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.errors import ConfigError, ModelDirError

DEFAULT_MAX_SEQ_LEN = 128


def encode_pairs(
    tokenizer: Any, pairs: Iterable[tuple[str, str | None]], max_len: int
) -> list[tuple[list[int], list[int]]]:
    """``[CLS] a [SEP] (b [SEP])`` ids and token types for each (a, b) pair."""
    return [tokenizer.encode_for_model(a, b, max_len) for a, b in pairs]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (for inference: less padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(
    encoded: Sequence[tuple[list[int], list[int]]], indices: Sequence[int], pad_id: int
) -> dict[str, Any]:
    """A padded batch of tensors: ``input_ids``, ``attention_mask``, ``token_type_ids``."""
    import torch

    width = max(len(encoded[i][0]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)  # (B, T)
    types = torch.zeros((len(indices), width), dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        a, t = encoded[i]
        ids[row, : len(a)] = torch.tensor(a, dtype=torch.long)
        types[row, : len(t)] = torch.tensor(t, dtype=torch.long)
        mask[row, : len(a)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def predict_logits(
    model: Any,
    encoded: Sequence[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    batch_size: int = 64,
    device: Any = None,
    precision: str = "fp32",
    bar: Any = None,
) -> np.ndarray:
    """Logits (N, num_labels) as float32, in the order of ``encoded``."""
    import torch

    from albertzh.train.loop import autocast

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    with torch.inference_mode():
        for idx in length_batches([len(e[0]) for e in encoded], batch_size):
            batch = {k: v.to(device) for k, v in collate(encoded, idx, pad_id).items()}
            with autocast(precision, device):
                logits = model(**batch).logits
            logits = logits.float().cpu().numpy()
            if out is None:
                out = np.zeros((len(encoded), logits.shape[-1]), dtype=np.float32)
            out[idx] = logits
            if bar is not None:
                bar.advance(len(idx))
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def quantize_int8(model: Any) -> Any:
    """``model`` with every ``nn.Linear`` dynamically quantized to int8 (weights int8,
    activations quantized per batch; CPU only), in place, in eval mode. The attention then
    applies query, key and value one by one (``AlbertAttention.qkv_weights`` is None)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices, not the user's
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantiz.*deprecated", category=UserWarning)
        model = quantize_dynamic(
            model.cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return model.eval()


def check_int8(device: str, precision: str) -> str:
    """The device ``--int8`` runs on ("cpu"): dynamic int8 is CPU-only and fp32 underneath, so
    ``--device cuda`` and ``--precision bf16/fp16`` are refused with one line."""
    if device == "cuda":
        raise ConfigError(
            "--int8: dynamic int8 quantization runs on CPU only (drop --device cuda or --int8)"
        )
    if precision not in ("auto", "fp32"):
        raise ConfigError(f"--int8: cannot be combined with --precision {precision} (use fp32)")
    return "cpu"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Classifier:
    """A finetuned model dir, loaded for inference."""

    model: Any
    tokenizer: Any
    labels: list[str]
    regression: bool
    max_seq_len: int
    meta: dict[str, Any]
    device: Any
    precision: str

    def logits(
        self, pairs: Sequence[tuple[str, str | None]], batch_size: int, bar: Any = None
    ) -> np.ndarray:
        encoded = encode_pairs(self.tokenizer, pairs, self.max_seq_len)
        return predict_logits(
            self.model,
            encoded,
            pad_id=self.tokenizer.pad_id,
            batch_size=batch_size,
            device=self.device,
            precision=self.precision,
            bar=bar,
        )

    def records(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """One JSON-able prediction per row: label and probabilities (or score)."""
        if self.regression:
            return [{"score": float(row[0])} for row in logits]
        probs = softmax(logits)
        desc = self.meta.get("label_desc") or {}
        out = []
        for p in probs:
            best = int(p.argmax())
            extra = {"label_desc": desc[self.labels[best]]} if self.labels[best] in desc else {}
            out.append(
                {
                    "label": self.labels[best],
                    **extra,
                    "probabilities": {
                        lab: round(float(x), 6) for lab, x in zip(self.labels, p, strict=True)
                    },
                }
            )
        return out


def read_model_info(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, albertzh.json or {}) of a model dir."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise ModelDirError(f"{model_dir}: no config.json (not a model directory)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{cfg_path}: invalid JSON ({exc.msg})") from exc
    meta: dict[str, Any] = {}
    meta_path = model_dir / "albertzh.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelDirError(f"{meta_path}: invalid JSON ({exc.msg})") from exc
    return cfg, meta


@dataclass
class LoadedHead:
    """A finetuned head model, on its device in eval mode, with its model dir's files."""

    model: Any
    config: dict[str, Any]  # config.json
    meta: dict[str, Any]  # albertzh.json ({} for a plain HF directory)
    device: Any
    precision: str

    def seq_len(self, requested: int | None, *, check: bool = True) -> int:
        """``--max-seq-len``, else the finetune value, else 128; with ``check``, refused (one
        line) beyond the model's position table."""
        seq = requested or int(self.meta.get("max_seq_len") or DEFAULT_MAX_SEQ_LEN)
        limit = self.model.config.max_position_embeddings
        if check and seq > limit:
            raise ConfigError(f"--max-seq-len {seq}: the model reads at most {limit} tokens")
        return seq

    def doc_stride(self, requested: int | None, max_seq_len: int | None) -> int | None:
        """``--doc-stride``; unset, and with the finetune window kept (no ``--max-seq-len``),
        the finetune value."""
        if requested is None and max_seq_len is None and self.meta.get("doc_stride"):
            return int(self.meta["doc_stride"])
        return requested


def load_head_model(
    model_dir: Path,
    model_class: Any,
    *,
    what: str,
    hint: str,
    device: str = "auto",
    precision: str = "auto",
) -> LoadedHead:
    """Load ``model_dir`` as ``model_class`` (its config.json must name that architecture, and
    the head must be trained, not freshly initialised): one error line otherwise, e.g. ``...: a
    AlbertForSequenceClassification model, not a {what} ({hint})``."""
    from albertzh.model.io import require_trained_heads
    from albertzh.train.loop import resolve_device, resolve_precision

    model_dir = Path(model_dir)
    cfg, meta = read_model_info(model_dir)
    archs = cfg.get("architectures") or []
    if model_class.hf_architecture not in archs:
        found = f"a {archs[0]} model" if archs else "no finetuned head"
        raise ModelDirError(f"{model_dir / 'config.json'}: {found}, not a {what} ({hint})")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model = model_class.from_pretrained(model_dir)
    require_trained_heads(model, model_dir)
    return LoadedHead(model.to(dev).eval(), cfg, meta, dev, prec)


def load_classifier(
    model_dir: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    max_seq_len: int | None = None,
    int8: bool = False,
) -> Classifier:
    """Load a finetuned model dir (config.json with id2label, weights, tokenizer files);
    ``int8``: on CPU with its Linear layers dynamically quantized (:func:`quantize_int8`)."""
    from albertzh.model import AlbertForSequenceClassification
    from albertzh.model.io import require_trained_heads
    from albertzh.tokenizer import load_tokenizer
    from albertzh.train.loop import resolve_device, resolve_precision

    model_dir = Path(model_dir)
    cfg, meta = read_model_info(model_dir)
    id2label = cfg.get("id2label")
    regression = cfg.get("problem_type") == "regression"
    archs = cfg.get("architectures") or []
    if archs and not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ModelDirError(
            f"{model_dir / 'config.json'}: a {archs[0]} model, not a finetuned classifier (run finetune first)"
        )
    if not regression and not id2label:
        raise ModelDirError(
            f"{model_dir / 'config.json'}: no id2label (not a finetuned classifier; run finetune first)"
        )
    labels = [] if regression else [str(id2label[str(i)]) for i in range(len(id2label))]
    if int8:
        device = check_int8(device, precision)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model = AlbertForSequenceClassification.from_pretrained(model_dir)
    require_trained_heads(model, model_dir)
    model = model.to(dev)
    model.eval()
    if int8:
        model = quantize_int8(model)
    tokenizer = load_tokenizer(model_dir)
    seq = max_seq_len or int(meta.get("max_seq_len") or DEFAULT_MAX_SEQ_LEN)
    return Classifier(model, tokenizer, labels, regression, seq, meta, dev, prec)
