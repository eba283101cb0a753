"""``predict``: classify sentences or ``a<TAB>b`` pairs with a finetuned model, as JSON lines.

Also the batched inference that ``eval`` and ``finetune``'s dev evaluation share: encode
examples, batch them by length (little padding), run the model under autocast, and return the
logits in input order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
from pydantic import Field

from albertzh.config import StageConfig
from albertzh.console import Summary
from albertzh.errors import InputError, ModelDirError

DEFAULT_MAX_SEQ_LEN = 128


# --------------------------------------------------------------------------- batching


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

    from albertzh.pipeline.training import autocast

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


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- a finetuned model


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


def load_classifier(
    model_dir: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    max_seq_len: int | None = None,
) -> Classifier:
    """Load a finetuned model dir (config.json with id2label, weights, tokenizer files)."""
    from albertzh.model import AlbertForSequenceClassification
    from albertzh.pipeline.training import resolve_device, resolve_precision
    from albertzh.tokenizer import load_tokenizer

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
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model = AlbertForSequenceClassification.from_pretrained(model_dir).to(dev)
    model.eval()
    tokenizer = load_tokenizer(model_dir)
    seq = max_seq_len or int(meta.get("max_seq_len") or DEFAULT_MAX_SEQ_LEN)
    return Classifier(model, tokenizer, labels, regression, seq, meta, dev, prec)


# --------------------------------------------------------------------------- the predict stage


class PredictConfig(StageConfig):
    """Options of ``albertzh predict``."""

    input: str = Field(
        "-",
        description="Text file with one sentence (or a<TAB>b pair) per line; '-' = stdin.",
        json_schema_extra={"argument": True},
    )
    model: Path = Field(..., description="Finetuned model directory (output of finetune).")
    output: str = Field(
        "-",
        description="Where to write the JSON lines; '-' = stdout.",
        json_schema_extra={"short": "-o"},
    )
    batch_size: int = Field(64, ge=1, description="Lines per forward pass.")
    max_seq_len: int | None = Field(
        None, ge=3, description="Truncate inputs to this many tokens (default: the finetune value)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run the model.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision; auto = fp32 on CPU, bf16/fp16 on GPU."
    )
    with_text: bool = Field(False, description="Echo the input text(s) in each JSON line.")


def _split_line(line: str) -> tuple[str, str | None]:
    a, sep, b = line.partition("\t")
    return (a, b) if sep else (a, None)


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _input_lines(source: str) -> Iterator[str]:
    if source == "-":
        yield from sys.stdin
        return
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: line {n}: not valid UTF-8 ({exc.reason})") from exc


def predict_stream(
    clf: Classifier, lines: Iterable[str], out: TextIO, batch_size: int, with_text: bool = False
) -> int:
    """Write one JSON line per input line (in order), flushing after each batch; returns rows."""
    rows = 0
    for chunk in _chunks(lines, batch_size):
        pairs = [_split_line(line) for line in chunk]
        for (a, b), rec in zip(pairs, clf.records(clf.logits(pairs, batch_size)), strict=True):
            if with_text:
                rec = {"text_a": a, **({"text_b": b} if b is not None else {}), **rec}
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        out.flush()
        rows += len(chunk)
    return rows


def run(cfg: PredictConfig) -> Summary:
    """Predict every line of ``cfg.input``; JSON lines go to ``cfg.output``."""
    import os
    import time

    t0 = time.perf_counter()
    clf = load_classifier(
        cfg.model, device=cfg.device, precision=cfg.precision, max_seq_len=cfg.max_seq_len
    )
    lines = _input_lines(cfg.input)
    if cfg.output == "-":
        rows = predict_stream(clf, lines, sys.stdout, cfg.batch_size, cfg.with_text)
    else:
        dest = Path(cfg.output)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                rows = predict_stream(clf, lines, f, cfg.batch_size, cfg.with_text)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    secs = time.perf_counter() - t0
    return Summary(
        "predict",
        {
            "rows": rows,
            "output": cfg.output,
            "labels": clf.labels or "regression",
            "seconds": round(secs, 2),
        },
    )
