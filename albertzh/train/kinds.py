"""Task kinds: what finetune needs to know about one kind of head, and which kind a task or a
model directory is.

A task's ``kind`` (:attr:`albertzh.data.tasks.Task.kind`) selects a :class:`TaskKind` in
:data:`KINDS`; a finetuned model dir's kind is read from the architecture its ``config.json``
names. finetune runs every kind through the same setup -> loop -> save and calls only the
methods below; eval and predict keep one function per kind in a table keyed by the kind's name;
export loads the head class of the architecture (``albertzh.model.HEAD_MODELS``).

Adding a kind (span extraction, multiple choice): a ``kind`` value and tasks in
``albertzh.data.tasks`` (+ a reader and metric in ``albertzh.data``), a model class in
``albertzh.model.albert`` (added to ``HEAD_MODELS``), a module here implementing
:class:`TaskKind` registered in :data:`KINDS`, and an entry in the eval and predict tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from albertzh.data import tasks as T
from albertzh.errors import ModelDirError


class TaskKind(Protocol):
    """One kind of finetuning head (stateless: one instance serves every run)."""

    name: str  # the Task.kind it serves
    architecture: str  # what its model dirs' config.json "architectures" says
    summary_metrics: tuple[str, ...]  # dev metrics shown in finetune's summary besides --metric

    def model_class(self) -> type:
        """The albertzh model class of the head."""
        ...

    def metrics(self, task: T.Task) -> tuple[str, ...]:
        """The valid --metric values for ``task``."""
        ...

    def head_config(self, task: T.Task) -> dict[str, Any]:
        """Model config overrides for ``task``'s head (labels)."""
        ...

    def check_config(self, cfg: Any, model_config: Any) -> None:
        """Refuse finetune options this kind cannot honour with this model."""
        ...

    def read_train(self, task: T.Task, data_dir: Path, cfg: Any) -> tuple[T.Task, Path, list]:
        """(the task with its labels fixed, the train file, its labelled examples)."""
        ...

    def read_split(self, task: T.Task, path: Path) -> list:
        """The labelled examples of another split file (dev) under the task's labels."""
        ...

    def encode(self, task: T.Task, examples: list, tokenizer: Any, cfg: Any) -> Sized:
        """Model rows of ``examples`` (their count is what an epoch is split into)."""
        ...

    def batch(self, rows: Any, indices: list[int], pad_id: int) -> dict[str, Any]:
        """A padded batch of ``rows[indices]`` with its ``labels``."""
        ...

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(the loss, batch metrics) of ``model`` on ``batch``."""
        ...

    def evaluate(
        self,
        model: Any,
        rows: Any,
        examples: list,
        task: T.Task,
        *,
        pad_id: int,
        batch_size: int,
        precision: str,
        rank: int = 0,
        world: int = 1,
    ) -> dict[str, Any]:
        """Dev metrics: numbers (``loss`` and every metric) plus per-class/per-type tables."""
        ...

    def describe(self, task: T.Task, train: list, dev: list | None) -> dict[str, Any]:
        """Figures about the data for the summary and metrics.json ({} for none)."""
        ...

    def meta(self, task: T.Task, train: list, cfg: Any) -> dict[str, Any]:
        """Extra albertzh.json fields that eval and predict read back."""
        ...


# --------------------------------------------------------------------------- classification


@dataclass
class PairRows:
    """Classification rows: ``[CLS] a [SEP] (b [SEP])`` ids and token types, and label ids."""

    encoded: list[tuple[list[int], list[int]]]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.encoded)


class ClassificationKind:
    """One label (or a score, regression) per sentence or pair, from the pooled [CLS]."""

    name = T.CLASSIFICATION
    architecture = "AlbertForSequenceClassification"
    summary_metrics = ("accuracy",)

    def model_class(self) -> type:
        from albertzh.model import AlbertForSequenceClassification

        return AlbertForSequenceClassification

    def metrics(self, task: T.Task) -> tuple[str, ...]:
        if task.regression:
            return ("pearson", "spearman", "mse", "loss")
        return ("accuracy", "macro_f1", "loss")

    def head_config(self, task: T.Task) -> dict[str, Any]:
        if task.regression:
            return {
                "num_labels": 1,
                "id2label": None,
                "label2id": None,
                "problem_type": "regression",
            }
        labels = list(task.labels or ())
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {lab: i for i, lab in enumerate(labels)},
            "problem_type": "single_label_classification",
        }

    def check_config(self, cfg: Any, model_config: Any) -> None:
        return None  # inputs longer than --max-seq-len are truncated

    def read_train(self, task: T.Task, data_dir: Path, cfg: Any) -> tuple[T.Task, Path, list]:
        path, train = T.load_split(task, data_dir, "train", require_labels=True)
        return T.labels_of(task, train, path), path, train

    def read_split(self, task: T.Task, path: Path) -> list:
        return T.read_examples(task, path, require_labels=True)

    def encode(self, task: T.Task, examples: list, tokenizer: Any, cfg: Any) -> PairRows:
        from albertzh.train.inference import encode_pairs

        encoded = encode_pairs(tokenizer, ((e.text_a, e.text_b) for e in examples), cfg.max_seq_len)
        if task.regression:
            y = np.array([float(e.label) for e in examples], dtype=np.float32)
        else:
            index = {lab: i for i, lab in enumerate(task.labels or ())}
            y = np.array([index[str(e.label)] for e in examples], dtype=np.int64)
        return PairRows(encoded, y)

    def batch(self, rows: PairRows, indices: list[int], pad_id: int) -> dict[str, Any]:
        import torch

        from albertzh.train.inference import collate

        batch = collate(rows.encoded, indices, pad_id)
        batch["labels"] = torch.from_numpy(rows.y[indices])
        return batch

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Cross-entropy (or MSE for regression) and the batch accuracy."""
        from albertzh.train.loop import unwrap_model

        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).logits
        labels = batch["labels"]
        loss = unwrap_model(model).compute_loss(logits.float(), labels)
        if labels.is_floating_point():  # regression
            return loss, {}
        return loss, {"accuracy": (logits.argmax(-1) == labels).float().mean().detach()}

    def evaluate(
        self,
        model: Any,
        rows: PairRows,
        examples: list,
        task: T.Task,
        *,
        pad_id: int,
        batch_size: int,
        precision: str,
        rank: int = 0,
        world: int = 1,
    ) -> dict[str, Any]:
        """Under DDP each rank scores every world-th row and the logits are gathered."""
        from albertzh.train.inference import predict_logits

        per_row = scores_by_row(
            predict_logits,
            model,
            rows,
            pad_id=pad_id,
            batch_size=batch_size,
            precision=precision,
            rank=rank,
            world=world,
        )
        full = np.stack(per_row).astype(np.float32, copy=False)
        return T.score_logits(full, examples, list(task.labels or ()), task.regression)

    def describe(self, task: T.Task, train: list, dev: list | None) -> dict[str, Any]:
        return {}

    def meta(self, task: T.Task, train: list, cfg: Any) -> dict[str, Any]:
        return {"label_desc": T.label_descriptions(train) or None}


def scores_by_row(
    scorer: Any,
    model: Any,
    rows: Any,
    *,
    pad_id: int,
    batch_size: int,
    precision: str,
    rank: int = 0,
    world: int = 1,
) -> list[Any]:
    """``scorer`` (``predict_logits`` or a kind's own) over ``rows.encoded``, one result per
    row in row order: under DDP each rank scores every world-th row and every rank gets all."""
    from albertzh.train.loop import all_gather_objects, unwrap_model

    idx = list(range(rank, len(rows), world))
    part = scorer(
        unwrap_model(model),
        [rows.encoded[i] for i in idx],
        pad_id=pad_id,
        batch_size=batch_size,
        precision=precision,
    )
    full: list[Any] = [None] * len(rows)
    for part_idx, scores in all_gather_objects((idx, part)):
        for i, row_scores in zip(part_idx, scores, strict=True):
            full[i] = row_scores
    return full


# --------------------------------------------------------------------------- the registry


def _kinds() -> dict[str, TaskKind]:
    from albertzh.train.tagging import TokenClassificationKind

    return {k.name: k for k in (ClassificationKind(), TokenClassificationKind())}


KINDS: dict[str, TaskKind] = _kinds()


def _register_choice() -> None:
    from albertzh.train.choice import MultipleChoiceKind

    KINDS[T.MULTIPLE_CHOICE] = MultipleChoiceKind()


_register_choice()


def _register_spans() -> None:
    from albertzh.train.spans import SpanExtractionKind

    KINDS[T.SPAN_EXTRACTION] = SpanExtractionKind()


_register_spans()


def kind_of_task(task: T.Task) -> TaskKind:
    """The kind that finetunes ``task``."""
    return KINDS[task.kind]


def architectures_of(model_dir: Path) -> list[str]:
    """The ``architectures`` a model dir's config.json names ([] when it names none)."""
    file = Path(model_dir) / "config.json"
    if not file.is_file():
        raise ModelDirError(f"{model_dir}: no config.json (not a model directory)")
    try:
        archs = json.loads(file.read_text(encoding="utf-8")).get("architectures") or []
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise ModelDirError(f"{file}: not valid JSON: {exc}") from exc
    return [str(a) for a in archs]


def kind_of_model(model_dir: Path) -> TaskKind | None:
    """The kind of a finetuned model dir by its architecture (None: not a finetuned head)."""
    archs: Sequence[str] = architectures_of(model_dir)
    by_arch = {k.architecture: k for k in KINDS.values()}
    return next((by_arch[a] for a in archs if a in by_arch), None)
