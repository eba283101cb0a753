"""``eval``: score a finetuned model on a task split, or a pretrained model on instance shards.

Task mode reads the split with the task registry and predicts in batches; what it reports
depends on the task's kind (:data:`RUNNERS`, one function per kind):

- classification: accuracy, macro-F1 and loss (per-class precision/recall/F1 in ``--json``);
- token classification (NER): entity-level precision, recall and F1 (exact span and type,
  conlleval's reading of the tags), loss and token accuracy (per type in ``--json``).

``--predictions FILE`` keeps one JSON line per row in input order. A split without labels gives
predictions only. Shard mode hands over to ``albertzh.train.pretraining.evaluate_pretraining``
(MLM/SOP metrics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from albertzh import outputs
from albertzh.config import PathOrURL, StageConfig
from albertzh.console import Summary, progress
from albertzh.data import tasks as T
from albertzh.errors import ConfigError, InputError
from albertzh.files import atomic_writer


class EvalConfig(StageConfig):
    """Options of ``albertzh eval``."""

    model: Path = Field(..., description="Model directory to evaluate.")
    task: str | None = Field(None, description="Task name (see finetune --help), with --data-dir.")
    split: Literal["train", "dev", "test"] = Field("dev", description="Which split to score.")
    data_dir: Path | None = Field(None, description="Directory holding the task's split files.")
    text_a: str | None = Field(None, description="generic task: field of the first text.")
    text_b: str | None = Field(None, description="generic task: field of the second text.")
    label: str | None = Field(None, description="generic task: field of the label.")
    regression: bool = Field(False, description="generic task: numeric labels (regression).")
    predictions: Path | None = Field(
        None,
        description="Write one JSON line per row to this file (label and probabilities; NER: "
        "entities and tags).",
    )
    overwrite: bool = Field(False, description="Replace an existing --predictions file.")
    submission: Path | None = Field(
        None,
        description="Also write the split's predictions as a CLUE leaderboard file into this "
        "directory ({id, label} JSON lines under CLUE's name, e.g. tnews11_predict.json; "
        "--overwrite replaces it).",
    )
    shards: PathOrURL | None = Field(
        None,
        description="Instead of a task: MLM/SOP metrics of a pretrained model on these shards (a local path or a URL).",
    )
    max_batches: int | None = Field(
        None, ge=1, description="--shards: score at most this many batches."
    )
    batch_size: int = Field(64, ge=1, description="Rows per forward pass.")
    max_seq_len: int | None = Field(
        None,
        ge=3,
        description="Truncate inputs to this many tokens (NER: the window size; default: the "
        "finetune value).",
    )
    doc_stride: int | None = Field(
        None,
        ge=1,
        description="NER: tokens between window starts for sentences longer than --max-seq-len "
        "(default: the finetune value, or half a window with --max-seq-len).",
    )
    max_query_len: int | None = Field(
        None,
        ge=1,
        description="Span extraction: question tokens kept (default: the finetune value).",
    )
    max_answer_len: int | None = Field(
        None,
        ge=1,
        description="Span extraction: the longest answer in tokens (default: the finetune value).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run the model.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision; auto = fp32 on CPU, bf16/fp16 on GPU."
    )

    @model_validator(mode="after")
    def _check_mode(self) -> EvalConfig:
        if self.shards is not None:
            if self.task or self.data_dir or self.predictions:
                raise ValueError("--shards excludes --task/--data-dir/--predictions")
        elif not self.task or self.data_dir is None:
            raise ValueError("--task and --data-dir are required (or --shards DIR)")
        spans = T.kind_of(self.task or "") == T.SPAN_EXTRACTION
        if (
            self.doc_stride is not None
            and T.kind_of(self.task or "") != T.TOKEN_CLASSIFICATION
            and not spans
        ):
            raise ValueError(
                "--doc-stride only applies to token classification (NER) and span extraction tasks"
            )
        if (self.max_query_len or self.max_answer_len) and not spans:
            raise ValueError("--max-query-len/--max-answer-len only apply to span extraction tasks")
        return self

    @model_validator(mode="after")
    def _check_submission(self) -> EvalConfig:
        if self.submission is not None and self.task not in T.CLUE_SUBMISSION_FILES:
            known = ", ".join(T.CLUE_SUBMISSION_FILES)
            raise ValueError(f"--submission: task {self.task} has no CLUE file (tasks: {known})")
        return self


@dataclass
class EvalSummary(Summary):
    """A summary whose JSON form also carries the per-class table (kept out of the terminal)."""

    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self.details}


def write_predictions(path: Path, records: list[dict[str, Any]]) -> None:
    """JSON lines, atomically (temp name, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _task_for_model(
    cfg: EvalConfig, labels: list[str], regression: bool, meta: dict[str, Any]
) -> T.Task:
    fields = {"text_a": cfg.text_a, "text_b": cfg.text_b, "label": cfg.label}
    reg = cfg.regression
    if cfg.task == "generic" and not cfg.text_a and meta.get("task") == "generic":
        # The field names the model was finetuned with.
        fields = {k: (meta.get("fields") or {}).get(k) for k in fields}
        reg = bool(meta.get("regression"))
    task = T.get_task(cfg.task or "", regression=reg, **fields)
    if task.regression != regression:
        kind = "a regression" if regression else "a classification"
        raise ConfigError(f"--model: {cfg.model} is {kind} model but --task {task.name} is not")
    if regression:
        return task
    if task.labels is not None and set(task.labels) != set(labels):
        raise ConfigError(
            f"--model: {cfg.model} labels ({', '.join(labels)}) are not task {task.name}'s labels"
        )
    return T.with_labels(task, labels)


def _check_predictions(cfg: EvalConfig) -> None:
    if cfg.predictions is not None:
        inputs = {"--model": cfg.model, "--data-dir": cfg.data_dir}
        outputs.check_apart(cfg.predictions, inputs, flag="--predictions")
        outputs.check_file_output(cfg.predictions, overwrite=cfg.overwrite, flag="--predictions")


def _submission_file(cfg: EvalConfig) -> Path | None:
    """The CLUE file ``--submission`` writes, checked like --predictions (before any work)."""
    if cfg.submission is None:
        return None
    inputs = {"--model": cfg.model, "--data-dir": cfg.data_dir}
    outputs.check_apart(cfg.submission, inputs, flag="--submission")
    if cfg.submission.exists() and not cfg.submission.is_dir():
        raise InputError(f"{cfg.submission}: --submission is a file; give a directory")
    file = cfg.submission / T.CLUE_SUBMISSION_FILES[cfg.task or ""]
    outputs.check_file_output(file, overwrite=cfg.overwrite, flag="--submission")
    return file


def write_submission(file: Path, path: Path, rows: list[tuple[Any, int, dict[str, Any]]]) -> None:
    """CLUE's ``{"id", "label"}`` lines from (id, line, prediction) rows; every row needs an id."""
    missing = next((line for rid, line, _ in rows if rid is None), None)
    if missing is not None:
        raise InputError(
            f"{path}: line {missing}: no 'id' field (--submission needs the ids CLUE test "
            "files carry)"
        )
    records = [
        {"id": rid, "label": rec["label"], **{k: rec[k] for k in ("label_desc",) if k in rec}}
        for rid, _, rec in rows
    ]
    write_predictions(file, records)


def run_classification(cfg: EvalConfig) -> EvalSummary:
    """A sentence(-pair) classifier or regressor on a split."""
    from albertzh.train.inference import load_classifier

    t0 = time.perf_counter()
    _check_predictions(cfg)
    submission = _submission_file(cfg)
    clf = load_classifier(
        cfg.model, device=cfg.device, precision=cfg.precision, max_seq_len=cfg.max_seq_len
    )
    task = _task_for_model(cfg, clf.labels, clf.regression, clf.meta)
    path = T.split_file(task, cfg.data_dir, cfg.split)
    examples = T.read_examples(task, path, labels=clf.labels or None)
    pairs = [(e.text_a, e.text_b) for e in examples]
    with progress(f"eval {task.name}/{cfg.split}", total=len(pairs)) as bar:
        logits = clf.logits(pairs, cfg.batch_size, bar=bar)
    labelled = examples[0].label is not None
    figures: dict[str, Any] = {
        "task": task.name,
        "split": cfg.split,
        "file": str(path),
        "rows": len(examples),
        "labelled": labelled,
    }
    details: dict[str, Any] = {}
    if labelled:
        m = T.score_logits(logits, examples, clf.labels, clf.regression)
        details["per_class"] = m.pop("per_class", None)
        if details["per_class"] is None:
            details.pop("per_class")
        figures.update({k: round(float(v), 6) for k, v in m.items()})
    if cfg.predictions is not None or submission is not None:
        recs = clf.records(logits)  # one record per row, for both files
    if cfg.predictions is not None:
        records = [
            {"line": e.line, **({"id": e.id} if e.id is not None else {}), **rec}
            for e, rec in zip(examples, recs, strict=True)
        ]
        write_predictions(cfg.predictions, records)
        figures["predictions"] = str(cfg.predictions)
    if submission is not None:
        write_submission(
            submission, path, [(e.id, e.line, r) for e, r in zip(examples, recs, strict=True)]
        )
        figures["submission"] = str(submission)
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    return EvalSummary("eval", figures, details)


def run_tokens(cfg: EvalConfig) -> EvalSummary:
    """A token classifier (NER) on a split: entity-level P/R/F1, per type in ``details``."""
    from albertzh.data import ner
    from albertzh.train.tagging import decode, load_tagger, score

    t0 = time.perf_counter()
    _check_predictions(cfg)
    submission = _submission_file(cfg)
    tagger = load_tagger(
        cfg.model,
        device=cfg.device,
        precision=cfg.precision,
        max_seq_len=cfg.max_seq_len,
        doc_stride=cfg.doc_stride,
    )
    task = T.with_labels(T.get_task(cfg.task or ""), tagger.labels)
    path = T.split_file(task, cfg.data_dir, cfg.split)
    examples = ner.read_tagged(task, path, tagger.labels)
    rows = tagger.rows([e.units for e in examples])
    with progress(f"eval {task.name}/{cfg.split}", total=len(rows)) as bar:
        per_sentence = tagger.unit_logits(rows, cfg.batch_size, bar=bar)
    labelled = examples[0].tags is not None
    figures: dict[str, Any] = {
        "task": task.name,
        "split": cfg.split,
        "file": str(path),
        "rows": len(examples),
        "windows": len(rows),
        "labelled": labelled,
    }
    details: dict[str, Any] = {}
    if labelled:
        m = score(examples, per_sentence, tagger.labels)
        details["per_type"] = m.pop("per_type")
        figures.update({k: round(float(v), 6) if isinstance(v, float) else v for k, v in m.items()})
        figures["gold_tag_violations"] = ner.tag_violations([e.tags for e in examples])
    if cfg.predictions is not None or submission is not None:
        tags = decode(per_sentence, tagger.labels)
        found = [ner.entities(e, t) for e, t in zip(examples, tags, strict=True)]
    if cfg.predictions is not None:
        records = [
            {**({"id": e.id} if e.id is not None else {}), "line": e.line, "entities": f, "tags": t}
            for e, f, t in zip(examples, found, tags, strict=True)
        ]
        write_predictions(cfg.predictions, records)
        figures["predictions"] = str(cfg.predictions)
    if submission is not None:
        labels = [{"label": ner.clue_label(f)} for f in found]
        write_submission(
            submission, path, [(e.id, e.line, r) for e, r in zip(examples, labels, strict=True)]
        )
        figures["submission"] = str(submission)
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    return EvalSummary("eval", figures, details)


def run_choice(cfg: EvalConfig) -> EvalSummary:
    """A multiple-choice model on a split: accuracy (and loss) over the questions."""
    from albertzh.data import choice
    from albertzh.train.choice import load_chooser, record, score

    t0 = time.perf_counter()
    _check_predictions(cfg)
    submission = _submission_file(cfg)
    chooser = load_chooser(
        cfg.model, device=cfg.device, precision=cfg.precision, max_seq_len=cfg.max_seq_len
    )
    task = T.get_task(cfg.task or "")
    path = T.split_file(task, cfg.data_dir, cfg.split)
    examples = choice.read_choices(path, task.fmt)
    with progress(f"eval {task.name}/{cfg.split}", total=len(examples)) as bar:
        logits = chooser.logits(examples, cfg.batch_size, bar=bar)
    labelled = examples[0].label is not None
    figures: dict[str, Any] = {
        "task": task.name,
        "split": cfg.split,
        "file": str(path),
        "rows": len(examples),
        "labelled": labelled,
    }
    if labelled:
        figures.update({k: round(v, 6) for k, v in score(examples, logits).items()})
    if cfg.predictions is not None:
        records = [
            {"id": e.id, **record(e, lg), **({"gold": e.label} if labelled else {})}
            for e, lg in zip(examples, logits, strict=True)
        ]
        write_predictions(cfg.predictions, records)
        figures["predictions"] = str(cfg.predictions)
    if submission is not None:
        picks = [(e.id, e.line, record(e, lg)) for e, lg in zip(examples, logits, strict=True)]
        write_submission(submission, path, picks)
        figures["submission"] = str(submission)
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    return EvalSummary("eval", figures, {})


def run_spans(cfg: EvalConfig) -> EvalSummary:
    """A span extractor on a split: CMRC 2018 EM and F1 over the questions."""
    from albertzh.data import squad
    from albertzh.train.spans import load_reader, score

    t0 = time.perf_counter()
    _check_predictions(cfg)
    submission = _submission_file(cfg)
    reader = load_reader(
        cfg.model,
        device=cfg.device,
        precision=cfg.precision,
        max_seq_len=cfg.max_seq_len,
        doc_stride=cfg.doc_stride,
        max_query_len=cfg.max_query_len,
        max_answer_len=cfg.max_answer_len,
    )
    task = T.get_task(cfg.task or "")
    path = T.split_file(task, cfg.data_dir, cfg.split)
    examples = squad.read_squad(path)
    feats = reader.features(examples)
    with progress(f"eval {task.name}/{cfg.split}", total=len(feats)) as bar:
        preds = reader.predict(feats, examples, cfg.batch_size, bar=bar)
    labelled = any(e.answers is not None for e in examples)
    figures: dict[str, Any] = {
        "task": task.name,
        "split": cfg.split,
        "file": str(path),
        "rows": len(examples),
        "windows": len(feats),
        "labelled": labelled,
    }
    if labelled:
        m = score(examples, preds)
        figures.update({k: round(float(v), 6) if isinstance(v, float) else v for k, v in m.items()})
    if cfg.predictions is not None:
        records = [
            {"id": e.qid, "answer": p.text, "start": p.start, "score": round(p.score, 6)}
            if p is not None
            else {"id": e.qid, "answer": "", "start": -1, "score": None}
            for e, p in zip(examples, preds, strict=True)
        ]
        write_predictions(cfg.predictions, records)
        figures["predictions"] = str(cfg.predictions)
    if submission is not None:
        # CMRC 2018's leaderboard file: one JSON object {question_id: answer text} ("" when
        # no window gave an answer).
        answers = {
            e.qid: (p.text if p is not None else "") for e, p in zip(examples, preds, strict=True)
        }
        submission.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(submission) as f:
            f.write(json.dumps(answers, ensure_ascii=False, indent=1) + "\n")
        figures["submission"] = str(submission)
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    return EvalSummary("eval", figures, {})


# How each kind of task is evaluated (the kinds of albertzh.data.tasks.KINDS).
RUNNERS: dict[str, Callable[[EvalConfig], EvalSummary]] = {
    T.CLASSIFICATION: run_classification,
    T.TOKEN_CLASSIFICATION: run_tokens,
    T.MULTIPLE_CHOICE: run_choice,
    T.SPAN_EXTRACTION: run_spans,
}


def run_task(cfg: EvalConfig) -> EvalSummary:
    """Evaluate on a task split, the way the task's kind is evaluated."""
    if cfg.task not in T.task_names():
        T.get_task(cfg.task or "")  # the "unknown task" error
    return RUNNERS[T.kind_of(cfg.task or "")](cfg)


def run_shards(cfg: EvalConfig) -> Summary:
    from albertzh.model import AlbertForPreTraining
    from albertzh.tokenizer import load_tokenizer
    from albertzh.train.loop import resolve_device, resolve_precision
    from albertzh.train.pretraining import evaluate_pretraining

    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    model = AlbertForPreTraining.from_pretrained(cfg.model).to(device).eval()
    metrics = evaluate_pretraining(
        model,
        cfg.shards,
        batch_size=cfg.batch_size,
        device=device,
        precision=precision,
        max_batches=cfg.max_batches,
        tokenizer=load_tokenizer(cfg.model),
    )
    figures = {
        "shards": str(cfg.shards),
        **{k: round(float(v), 6) if isinstance(v, float) else v for k, v in metrics.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return Summary("eval", figures)


def run(cfg: EvalConfig) -> Summary:
    """Evaluate on a task split (``--task``) or on pretraining shards (``--shards``)."""
    return run_shards(cfg) if cfg.shards is not None else run_task(cfg)
