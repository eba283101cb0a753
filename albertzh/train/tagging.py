"""Token classification (NER): windows of tokens in, one tag per character out.

Shared by finetune (:class:`TokenClassificationKind`, the kind's training rows, loss and dev
scoring), eval and predict (:class:`Tagger`, loaded from a finetuned model dir). The data side
(reading, alignment, windows, entities, metrics) is :mod:`albertzh.data.ner`, without torch.

A sentence is aligned unit by unit (:func:`albertzh.data.ner.align`) and read in windows of at
most ``max_seq_len`` tokens, ``doc_stride`` tokens apart; training labels each unit's first token
in every window that holds it, prediction takes each unit's logits from the window where its
first token has the most context (:func:`albertzh.data.ner.merge_windows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.data import ner
from albertzh.data import tasks as T
from albertzh.errors import ConfigError

ARCHITECTURE = "AlbertForTokenClassification"


@dataclass
class TokenRows:
    """Sentences made ready for the model: aligned to tokens and cut into windows."""

    aligned: list[ner.Aligned]
    windows: list[ner.Window]
    encoded: list[tuple[list[int], list[int]]]  # per window: input ids, token types
    labels: list[np.ndarray] | None  # per window: tag id per position, ner.IGNORE elsewhere

    def __len__(self) -> int:
        return len(self.windows)


def encode_rows(
    tokenizer: Any,
    sentences: Sequence[Sequence[str]],
    max_len: int,
    stride: int,
    tags: Sequence[Sequence[str]] | None = None,
    labels: Sequence[str] = (),
) -> TokenRows:
    """Align ``sentences`` (units each) and cut them into windows; with ``tags``, label them."""
    aligned = ner.align(tokenizer, sentences)
    wins = ner.make_windows(aligned, max_len, stride)
    encoded = []
    for w in wins:
        ids = ner.window_ids(w, aligned, tokenizer.cls_id, tokenizer.sep_id)
        encoded.append((ids, [0] * len(ids)))
    window_labels = None
    if tags is not None:
        index = {lab: i for i, lab in enumerate(labels)}
        tag_ids = [[index[t] for t in seq] for seq in tags]
        window_labels = [ner.window_labels(w, aligned, tag_ids[w.sentence]) for w in wins]
    return TokenRows(aligned, wins, encoded, window_labels)


def collate_rows(rows: TokenRows, indices: Sequence[int], pad_id: int) -> dict[str, Any]:
    """A padded batch of windows, with ``labels`` ([B, T], ner.IGNORE on padding) if known."""
    import torch

    from albertzh.train.inference import collate

    batch = collate(rows.encoded, indices, pad_id)
    if rows.labels is not None:
        labels = torch.full(batch["input_ids"].shape, ner.IGNORE, dtype=torch.long)  # [B, T]
        for r, i in enumerate(indices):
            labels[r, : len(rows.labels[i])] = torch.from_numpy(rows.labels[i])
        batch["labels"] = labels
    return batch


def window_logits(
    model: Any,
    encoded: Sequence[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    batch_size: int = 64,
    device: Any = None,
    precision: str = "fp32",
    bar: Any = None,
) -> list[np.ndarray]:
    """Per window its logits ([T_i, num_labels] float32, padding cut off), in input order."""
    import torch

    from albertzh.train.inference import collate, length_batches
    from albertzh.train.loop import autocast

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = [np.zeros((0, 0), dtype=np.float32)] * len(encoded)
    with torch.inference_mode():
        for idx in length_batches([len(e[0]) for e in encoded], batch_size):
            batch = {k: v.to(device) for k, v in collate(encoded, idx, pad_id).items()}
            with autocast(precision, device):
                logits = model(**batch).logits  # [B, T, L]
            logits = logits.float().cpu().numpy()
            for r, i in enumerate(idx):
                out[i] = logits[r, : len(encoded[i][0])]
            if bar is not None:
                bar.advance(len(idx))
    model.train(was_training)
    return out


def unit_logits(rows: TokenRows, logits: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per sentence its units' logits ([n_units, num_labels]), windows merged."""
    by_sentence: list[list[int]] = [[] for _ in rows.aligned]
    for j, w in enumerate(rows.windows):
        by_sentence[w.sentence].append(j)
    return [
        ner.merge_windows(sent, [rows.windows[j] for j in js], [logits[j] for j in js])
        for sent, js in zip(rows.aligned, by_sentence, strict=True)
    ]


def decode(per_sentence: Sequence[np.ndarray], labels: Sequence[str]) -> list[list[str]]:
    """The most likely tag of every unit."""
    return [[labels[i] for i in lg.argmax(-1).tolist()] for lg in per_sentence]


def score(
    examples: Sequence[ner.TaggedExample], per_sentence: Sequence[np.ndarray], labels: Sequence[str]
) -> dict[str, Any]:
    """Entity-level P/R/F1 (per type too), the units' cross-entropy ``loss`` and token accuracy."""
    index = {lab: i for i, lab in enumerate(labels)}
    pred = decode(per_sentence, labels)
    gold = [list(e.tags or ()) for e in examples]
    m = ner.entity_metrics(gold, pred)
    flat_logits = np.concatenate(per_sentence) if per_sentence else np.zeros((0, len(labels)))
    gold_ids = np.array([index[t] for seq in gold for t in seq], dtype=np.int64)
    m["loss"] = T.cross_entropy(flat_logits, gold_ids) if len(gold_ids) else 0.0
    m["token_accuracy"] = (
        float((flat_logits.argmax(-1) == gold_ids).mean()) if len(gold_ids) else 0.0
    )
    return m


def resolve_stride(max_len: int, stride: int | None) -> int:
    """``stride`` checked against the window (``max_len - 2`` tokens), or half the window."""
    if stride is None:
        return ner.default_stride(max_len)
    if not 1 <= stride <= max_len - 2:
        raise ConfigError(
            f"--doc-stride {stride}: must be 1..{max_len - 2} (the window is --max-seq-len "
            f"{max_len} less [CLS] and [SEP]), or windows would skip tokens"
        )
    return stride


# --------------------------------------------------------------------------- finetune


class TokenClassificationKind:
    """One tag per character (NER), from each character's first token."""

    name = T.TOKEN_CLASSIFICATION
    architecture = ARCHITECTURE
    summary_metrics = ("precision", "recall")

    def model_class(self) -> type:
        from albertzh.model import AlbertForTokenClassification

        return AlbertForTokenClassification

    def metrics(self, task: T.Task) -> tuple[str, ...]:
        return ("f1", "precision", "recall", "loss")

    def head_config(self, task: T.Task) -> dict[str, Any]:
        labels = list(task.labels or ())
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {lab: i for i, lab in enumerate(labels)},
            "problem_type": None,
        }

    def check_config(self, cfg: Any, model_config: Any) -> None:
        limit = model_config.max_position_embeddings
        if cfg.max_seq_len > limit:
            raise ConfigError(
                f"--max-seq-len {cfg.max_seq_len}: the model reads at most {limit} tokens "
                "(max_position_embeddings); longer sentences are read in windows anyway"
            )
        resolve_stride(cfg.max_seq_len, cfg.doc_stride)

    def read_train(self, task: T.Task, data_dir: Path, cfg: Any) -> tuple[T.Task, Path, list]:
        path = T.split_file(task, data_dir, "train")
        rows = ner.read_rows(task, path, require_labels=True)
        labels = ner.task_labels(rows, path, data_dir, cfg.tag_scheme)
        return T.with_labels(task, labels), path, ner.to_examples(rows, labels, path)

    def read_split(self, task: T.Task, path: Path) -> list:
        return ner.read_tagged(task, path, task.labels or (), require_labels=True)

    def encode(self, task: T.Task, examples: list, tokenizer: Any, cfg: Any) -> TokenRows:
        stride = resolve_stride(cfg.max_seq_len, cfg.doc_stride)
        return encode_rows(
            tokenizer,
            [e.units for e in examples],
            cfg.max_seq_len,
            stride,
            tags=[e.tags for e in examples],
            labels=task.labels or (),
        )

    def batch(self, rows: TokenRows, indices: list[int], pad_id: int) -> dict[str, Any]:
        return collate_rows(rows, indices, pad_id)

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Cross-entropy over the labelled tokens, and their accuracy."""
        from albertzh.train.loop import unwrap_model

        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).logits  # [B, T, L]
        labels = batch["labels"]
        loss = unwrap_model(model).compute_loss(logits.float(), labels)
        seen = labels != ner.IGNORE
        right = (logits.argmax(-1) == labels) & seen
        acc = right.sum().float() / seen.sum().clamp(min=1).float()
        return loss, {"token_accuracy": acc.detach()}

    def evaluate(
        self,
        model: Any,
        rows: TokenRows,
        examples: list,
        task: T.Task,
        *,
        pad_id: int,
        batch_size: int,
        precision: str,
        rank: int = 0,
        world: int = 1,
    ) -> dict[str, Any]:
        """Under DDP each rank reads every world-th window and the logits are gathered."""
        from albertzh.train.kinds import scores_by_row

        full = scores_by_row(
            window_logits,
            model,
            rows,
            pad_id=pad_id,
            batch_size=batch_size,
            precision=precision,
            rank=rank,
            world=world,
        )
        return score(examples, unit_logits(rows, full), list(task.labels or ()))

    def describe(self, task: T.Task, train: list, dev: list | None) -> dict[str, Any]:
        tagged = [e.tags for e in (*train, *(dev or ())) if e.tags is not None]
        return {"gold_tag_violations": ner.tag_violations(tagged)}

    def meta(self, task: T.Task, train: list, cfg: Any) -> dict[str, Any]:
        return {
            "tag_scheme": ner.scheme_of(task.labels or ()),
            "doc_stride": resolve_stride(cfg.max_seq_len, cfg.doc_stride),
        }


# --------------------------------------------------------------------------- eval and predict


@dataclass
class Tagger:
    """A finetuned token classifier, loaded for inference."""

    model: Any
    tokenizer: Any
    labels: list[str]
    max_seq_len: int
    doc_stride: int
    meta: dict[str, Any]
    device: Any
    precision: str

    def rows(self, sentences: Sequence[Sequence[str]]) -> TokenRows:
        return encode_rows(self.tokenizer, sentences, self.max_seq_len, self.doc_stride)

    def unit_logits(self, rows: TokenRows, batch_size: int, bar: Any = None) -> list[np.ndarray]:
        """Per sentence of ``rows`` its units' logits; ``bar`` advances by windows."""
        logits = window_logits(
            self.model,
            rows.encoded,
            pad_id=self.tokenizer.pad_id,
            batch_size=batch_size,
            device=self.device,
            precision=self.precision,
            bar=bar,
        )
        return unit_logits(rows, logits)

    def tags(self, sentences: Sequence[Sequence[str]], batch_size: int) -> list[list[str]]:
        """The tag of every unit of every sentence."""
        return decode(self.unit_logits(self.rows(sentences), batch_size), self.labels)


def load_tagger(
    model_dir: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    max_seq_len: int | None = None,
    doc_stride: int | None = None,
) -> Tagger:
    """Load a finetuned token classifier (config.json with id2label, weights, tokenizer)."""
    from albertzh.model import AlbertForTokenClassification
    from albertzh.tokenizer import load_tokenizer
    from albertzh.train.inference import load_head_model

    model_dir = Path(model_dir)
    head = load_head_model(
        model_dir,
        AlbertForTokenClassification,
        what="finetuned token classifier",
        hint="finetune it on a token classification task such as msra_ner first",
        device=device,
        precision=precision,
    )
    id2label = head.config.get("id2label") or {}
    labels = [str(id2label[str(i)]) for i in range(len(id2label))]
    seq = head.seq_len(max_seq_len)
    stride = resolve_stride(seq, head.doc_stride(doc_stride, max_seq_len))
    tokenizer = load_tokenizer(model_dir)
    return Tagger(
        head.model, tokenizer, labels, seq, stride, head.meta, head.device, head.precision
    )
