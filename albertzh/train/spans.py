"""Span extraction (reading comprehension): question + context windows in, an answer span out.

Shared by finetune (:class:`SpanExtractionKind`: training rows, loss, dev EM/F1), eval and
predict (:class:`Reader`, loaded from a finetuned model dir). The data side (SQuAD files,
windows, spans back to characters, CMRC 2018 metrics) is :mod:`albertzh.data.squad`, without
torch.

Training points each window at the answer's first and last token when the window holds all of
it, else at [CLS] (position 0). Prediction takes, over all windows of a question, the best
start + end logit with the end not before the start and at most ``max_answer_len`` tokens
after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.data import squad
from albertzh.data import tasks as T
from albertzh.errors import ConfigError

ARCHITECTURE = "AlbertForQuestionAnswering"
DEFAULT_MAX_QUERY_LEN = 64
DEFAULT_MAX_ANSWER_LEN = 30


class QAList(list):
    """Training questions, with the ids of those left out (bad answers, no span answer)."""

    skipped: list[str]
    no_span: list[str]


def span_logits(
    model: Any,
    encoded: Sequence[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    batch_size: int = 64,
    device: Any = None,
    precision: str = "fp32",
    bar: Any = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per window its start and end logits ([T_i] float32, padding cut off), in input order."""
    import torch

    from albertzh.train.inference import collate, length_batches
    from albertzh.train.loop import autocast

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(encoded)
    ends = list(starts)
    with torch.inference_mode():
        for idx in length_batches([len(e[0]) for e in encoded], batch_size):
            batch = {k: v.to(device) for k, v in collate(encoded, idx, pad_id).items()}
            with autocast(precision, device):
                out = model(**batch)
            s = out.start_logits.float().cpu().numpy()  # [B, T]
            e = out.end_logits.float().cpu().numpy()
            for r, i in enumerate(idx):
                starts[i] = s[r, : len(encoded[i][0])]
                ends[i] = e[r, : len(encoded[i][0])]
            if bar is not None:
                bar.advance(len(idx))
    model.train(was_training)
    return starts, ends


def feature_loss(
    feats: squad.QAFeatures, starts: list[np.ndarray], ends: list[np.ndarray]
) -> float:
    """Mean of the start and end cross-entropies over the windows (labelled features)."""
    assert feats.starts is not None and feats.ends is not None
    total = 0.0
    for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
        for logits, gold in ((s, feats.starts[k]), (e, feats.ends[k])):
            z = logits - logits.max()
            total += float(np.log(np.exp(z).sum()) - z[gold]) / 2
    return total / max(len(starts), 1)


def score(
    examples: Sequence[squad.QAExample], preds: Sequence[squad.Prediction | None]
) -> dict[str, Any]:
    """EM and F1 (CMRC 2018) of the predictions; a question without one scores 0."""
    by_id = {e.qid: p.text for e, p in zip(examples, preds, strict=True) if p is not None}
    return squad.qa_metrics(examples, by_id)


def check_lengths(max_seq_len: int, max_query_len: int, stride: int | None, limit: int) -> None:
    """Refuse window settings that cannot work with a model reading ``limit`` tokens."""
    if max_seq_len > limit:
        raise ConfigError(
            f"--max-seq-len {max_seq_len}: the model reads at most {limit} tokens "
            "(max_position_embeddings); long contexts are read in windows anyway"
        )
    width = max_seq_len - max_query_len - 3
    if width < 1:
        raise ConfigError(
            f"--max-query-len {max_query_len}: leaves no room for the context in --max-seq-len "
            f"{max_seq_len} ([CLS], question, [SEP], context, [SEP])"
        )
    if stride is not None and stride > width:
        raise ConfigError(
            f"--doc-stride {stride}: must be at most {width} (the context tokens of a window "
            "with the longest question), or windows would skip tokens"
        )


# --------------------------------------------------------------------------- finetune


def _opt(cfg: Any, name: str, default: int) -> int:
    value = getattr(cfg, name, None)
    return default if value is None else int(value)


class SpanExtractionKind:
    """An answer span of a context (CMRC 2018, SQuAD v1): a start and an end logit per token."""

    name = T.SPAN_EXTRACTION
    architecture = ARCHITECTURE
    summary_metrics = ("em",)

    def model_class(self) -> type:
        from albertzh.model import AlbertForQuestionAnswering

        return AlbertForQuestionAnswering

    def metrics(self, task: T.Task) -> tuple[str, ...]:
        return ("f1", "em", "loss")

    def head_config(self, task: T.Task) -> dict[str, Any]:
        return {"num_labels": 2, "id2label": None, "label2id": None, "problem_type": None}

    def check_config(self, cfg: Any, model_config: Any) -> None:
        check_lengths(
            cfg.max_seq_len,
            _opt(cfg, "max_query_len", DEFAULT_MAX_QUERY_LEN),
            cfg.doc_stride,
            model_config.max_position_embeddings,
        )

    def read_train(self, task: T.Task, data_dir: Path, cfg: Any) -> tuple[T.Task, Path, list]:
        path = T.split_file(task, data_dir, "train")
        skipped: list[str] = []
        read = squad.read_squad(
            path,
            require_answers=True,
            skipped=skipped if getattr(cfg, "skip_bad_answers", False) else None,
        )
        train = QAList(e for e in read if e.train_answer() is not None)
        train.skipped = skipped
        train.no_span = [e.qid for e in read if e.train_answer() is None]
        return task, path, train

    def read_split(self, task: T.Task, path: Path) -> list:
        return squad.read_squad(path, require_answers=True)

    def encode(self, task: T.Task, examples: list, tokenizer: Any, cfg: Any) -> squad.QAFeatures:
        feats = squad.encode_features(
            tokenizer,
            examples,
            max_len=cfg.max_seq_len,
            max_query_len=_opt(cfg, "max_query_len", DEFAULT_MAX_QUERY_LEN),
            stride=cfg.doc_stride,
            labelled=True,
        )
        feats.max_answer_len = _opt(cfg, "max_answer_len", DEFAULT_MAX_ANSWER_LEN)
        return feats

    def batch(self, rows: squad.QAFeatures, indices: list[int], pad_id: int) -> dict[str, Any]:
        import torch

        from albertzh.train.inference import collate

        assert rows.starts is not None and rows.ends is not None
        batch = collate(rows.encoded, indices, pad_id)
        batch["start_positions"] = torch.from_numpy(rows.starts[indices])
        batch["end_positions"] = torch.from_numpy(rows.ends[indices])
        return batch

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The mean start/end cross-entropy, and how often both are right."""
        from albertzh.train.loop import unwrap_model

        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        )
        starts, ends = batch["start_positions"], batch["end_positions"]
        loss = unwrap_model(model).compute_loss(out, starts, ends)
        both = (out.start_logits.argmax(-1) == starts) & (out.end_logits.argmax(-1) == ends)
        return loss, {"span_accuracy": both.float().mean().detach()}

    def evaluate(
        self,
        model: Any,
        rows: squad.QAFeatures,
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

        def pairs(m: Any, encoded: list, **kw: Any) -> list[tuple[np.ndarray, np.ndarray]]:
            return list(zip(*span_logits(m, encoded, **kw), strict=True))

        per_window = scores_by_row(
            pairs,
            model,
            rows,
            pad_id=pad_id,
            batch_size=batch_size,
            precision=precision,
            rank=rank,
            world=world,
        )
        starts = [s for s, _ in per_window]
        ends = [e for _, e in per_window]
        max_answer_len = rows.max_answer_len or DEFAULT_MAX_ANSWER_LEN
        preds = squad.best_spans(rows, examples, starts, ends, max_answer_len)
        m = score(examples, preds)
        m["loss"] = feature_loss(rows, starts, ends)
        return m

    def describe(self, task: T.Task, train: list, dev: list | None) -> dict[str, Any]:
        return {
            "skipped_bad_answers": len(getattr(train, "skipped", [])),
            "train_without_span_answer": len(getattr(train, "no_span", [])),
        }

    def meta(self, task: T.Task, train: list, cfg: Any) -> dict[str, Any]:
        return {
            "doc_stride": cfg.doc_stride,
            "max_query_len": _opt(cfg, "max_query_len", DEFAULT_MAX_QUERY_LEN),
            "max_answer_len": _opt(cfg, "max_answer_len", DEFAULT_MAX_ANSWER_LEN),
        }


# --------------------------------------------------------------------------- eval and predict


@dataclass
class Reader:
    """A finetuned span extractor, loaded for inference."""

    model: Any
    tokenizer: Any
    max_seq_len: int
    max_query_len: int
    max_answer_len: int
    doc_stride: int | None
    meta: dict[str, Any]
    device: Any
    precision: str

    def features(self, examples: Sequence[squad.QAExample]) -> squad.QAFeatures:
        return squad.encode_features(
            self.tokenizer,
            examples,
            max_len=self.max_seq_len,
            max_query_len=self.max_query_len,
            stride=self.doc_stride,
        )

    def predict(
        self,
        feats: squad.QAFeatures,
        examples: Sequence[squad.QAExample],
        batch_size: int,
        bar: Any = None,
    ) -> list[squad.Prediction | None]:
        """Each question's best span over the windows ``feats``; ``bar`` counts windows."""
        starts, ends = span_logits(
            self.model,
            feats.encoded,
            pad_id=self.tokenizer.pad_id,
            batch_size=batch_size,
            device=self.device,
            precision=self.precision,
            bar=bar,
        )
        return squad.best_spans(feats, examples, starts, ends, self.max_answer_len)

    def answers(
        self, examples: Sequence[squad.QAExample], batch_size: int
    ) -> list[squad.Prediction | None]:
        """Each question's best span."""
        return self.predict(self.features(examples), examples, batch_size)


def load_reader(
    model_dir: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    max_seq_len: int | None = None,
    doc_stride: int | None = None,
    max_query_len: int | None = None,
    max_answer_len: int | None = None,
) -> Reader:
    """Load a finetuned span extractor; unset lengths are the finetune values."""
    from albertzh.model import AlbertForQuestionAnswering
    from albertzh.tokenizer import load_tokenizer
    from albertzh.train.inference import load_head_model

    model_dir = Path(model_dir)
    head = load_head_model(
        model_dir,
        AlbertForQuestionAnswering,
        what="finetuned span extractor",
        hint="finetune it on a span extraction task such as cmrc2018 first",
        device=device,
        precision=precision,
    )
    model, meta, dev, prec = head.model, head.meta, head.device, head.precision
    seq = head.seq_len(max_seq_len, check=False)  # check_lengths says more
    query = max_query_len or int(meta.get("max_query_len") or DEFAULT_MAX_QUERY_LEN)
    answer = max_answer_len or int(meta.get("max_answer_len") or DEFAULT_MAX_ANSWER_LEN)
    doc_stride = head.doc_stride(doc_stride, max_seq_len)
    check_lengths(seq, query, doc_stride, model.config.max_position_embeddings)
    return Reader(model, load_tokenizer(model_dir), seq, query, answer, doc_stride, meta, dev, prec)
