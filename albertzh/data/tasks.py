"""The task registry: one small definition per downstream task, its row reader and its metrics.

A :class:`Task` says which file holds each split, how to read a row (TSV with or without a
header, CSV, JSON lines), which fields are the texts and the label, the label list (or ``None``
when it is inferred from train), and the metric that picks the best checkpoint. Reading never
guesses silently: a missing column, an unknown label or an empty file is an :class:`InputError`
naming the file and line.

A task's ``kind`` says what is predicted: ``classification`` (one label or score per sentence or
pair; read and scored here) or ``token_classification`` (one tag per character: NER; read and
scored in :mod:`albertzh.data.ner`). finetune, eval, predict and export dispatch on the kind
(``albertzh.train.kinds``), never on task names.

Split files may lack labels (CLUE test sets): such a split gives examples with ``label=None``
and is good for predictions only.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.errors import ConfigError, InputError

SPLITS = ("train", "dev", "test")
WSC_FORMAT = "cluewsc"  # the CLUEWSC2020 layout (text + target spans), read by _wsc_rows
# What a task predicts; each kind has its reader, metric and head (albertzh.train.kinds).
CLASSIFICATION = "classification"
TOKEN_CLASSIFICATION = "token_classification"
KINDS = (CLASSIFICATION, TOKEN_CLASSIFICATION)
MULTIPLE_CHOICE = "multiple_choice"  # one score per option (albertzh.data.choice)
KINDS = (*KINDS, MULTIPLE_CHOICE)
SPAN_EXTRACTION = "span_extraction"  # an answer span of a context (albertzh.data.squad)
KINDS = (*KINDS, SPAN_EXTRACTION)
NLI_LABELS = ("entailment", "neutral", "contradiction")
# TNEWS label ids (105 and 111 are unused in the CLUE release).
TNEWS_LABELS = tuple(str(i) for i in range(100, 117) if i not in (105, 111))

# Header names that mean the same role, tried after the task's own field name.
ROLE_ALIASES: dict[str, tuple[str, ...]] = {
    "text_a": ("text_a", "sentence1", "sentence", "text", "query1", "question1", "premise", "q1"),
    "text_b": ("text_b", "sentence2", "query2", "question2", "hypothesis", "hypo", "q2"),
    "label": ("label", "gold_label", "labels", "y"),
}


@dataclass(frozen=True)
class Example:
    """One task row: texts, label (``None`` in unlabelled splits) and its line in the file."""

    text_a: str
    text_b: str | None
    label: str | float | None
    line: int
    label_desc: str | None = None  # CLUE's label name beside a label id (tnews, iflytek)
    id: Any = None  # the row's "id" field where the file has one (CLUE test files), as given


@dataclass(frozen=True)
class Task:
    """How to find, read and score one task."""

    name: str
    fmt: str  # "tsv", "csv", "jsonl" or "auto" (by file suffix)
    files: Mapping[str, tuple[str, ...]]  # split -> candidate file names, first found wins
    text_a: str
    text_b: str | None
    label: str
    labels: tuple[str, ...] | None = None  # None: inferred from train
    columns: tuple[str, ...] = ()  # column order of header-less TSV files
    label_aliases: Mapping[str, str] = field(default_factory=dict)
    drop_labels: frozenset[str] = frozenset()
    row_filter: tuple[str, str] | None = None  # keep rows whose field equals value
    metric: str = "accuracy"
    regression: bool = False
    description: str = ""
    desc_field: str | None = None  # field naming the label id (CLUE "label_desc")
    kind: str = CLASSIFICATION  # one of KINDS

    @property
    def num_labels(self) -> int:
        if self.regression:
            return 1
        if self.labels is None:
            raise ConfigError(f"task {self.name}: labels are only known after reading train")
        return len(self.labels)

    @property
    def is_pair(self) -> bool:
        return self.text_b is not None


def _files(exts: Sequence[str], **extra: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Candidate file names per split: ``train.tsv``, ``train.txt``, ... then release names."""
    out: dict[str, tuple[str, ...]] = {}
    for split in SPLITS:
        stems = [split, *extra.get(split, ())]
        out[split] = tuple(f"{stem}{ext}" for stem in stems for ext in exts)
    return out


_TSV = (".tsv", ".txt")
_JSON = (".json", ".jsonl")
# FewCLUE / OCNLI release names, tried after the plain train/dev/test names.
_CLUE_ALT = {
    "train": ("train_few_all", "train_0", "train.50k", "train.10k", "train.3k"),
    "dev": ("dev_few_all", "dev_0"),
    "test": ("test_public",),
}


def _pair_tsv(name: str, desc: str) -> Task:
    return Task(
        name=name,
        fmt="tsv",
        files=_files(_TSV),
        text_a="text_a",
        text_b="text_b",
        label="label",
        labels=("0", "1"),
        columns=("text_a", "text_b", "label"),
        description=desc,
    )


def _clue(
    name: str, text_a: str, text_b: str | None, labels: tuple[str, ...], desc: str, **kw: Any
) -> Task:
    return Task(
        name=name,
        fmt="jsonl",
        files=_files(_JSON, **_CLUE_ALT),
        text_a=text_a,
        text_b=text_b,
        label="label",
        labels=labels,
        description=desc,
        **kw,
    )


def _ner(name: str, fmt: str, exts: Sequence[str], desc: str) -> Task:
    """A token classification task: ``text`` (TSV header ``text_a`` too) and ``label`` fields."""
    return Task(
        name=name,
        fmt=fmt,
        files=_files(exts),
        text_a="text",
        text_b=None,
        label="label",
        labels=None,  # label2id.json in the data dir, or the tags of train
        columns=("text", "label"),
        metric="f1",
        description=desc,
        kind=TOKEN_CLASSIFICATION,
    )


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        _pair_tsv("lcqmc", "LCQMC question matching, TSV text_a\\ttext_b\\tlabel (0/1)."),
        _pair_tsv("bq", "BQ corpus bank question matching, TSV text_a\\ttext_b\\tlabel (0/1)."),
        _clue(
            "afqmc", "sentence1", "sentence2", ("0", "1"), "CLUE AFQMC sentence-pair similarity."
        ),
        _clue(
            "cmnli",
            "sentence1",
            "sentence2",
            NLI_LABELS,
            "CLUE CMNLI natural language inference.",
            drop_labels=frozenset({"-"}),
        ),
        _clue(
            "ocnli",
            "sentence1",
            "sentence2",
            NLI_LABELS,
            "CLUE OCNLI natural language inference.",
            drop_labels=frozenset({"-"}),
        ),
        _clue(
            "tnews",
            "sentence",
            None,
            TNEWS_LABELS,
            "CLUE TNEWS news title topic (15 classes).",
            desc_field="label_desc",
        ),
        _clue(
            "iflytek",
            "sentence",
            None,
            tuple(str(i) for i in range(119)),
            "CLUE IFLYTEK app description category (119 classes).",
            desc_field="label_des",
        ),
        _clue("csl", "keyword", "abst", ("0", "1"), "CLUE CSL: do keywords fit the abstract."),
        Task(
            name="xnli",
            fmt="tsv",
            files=_files(
                _TSV, train=("multinli.train.zh",), dev=("xnli.dev",), test=("xnli.test",)
            ),
            text_a="premise",
            text_b="hypo",
            label="label",
            labels=NLI_LABELS,
            columns=("premise", "hypo", "label"),
            label_aliases={"contradictory": "contradiction"},
            drop_labels=frozenset({"-"}),
            row_filter=("language", "zh"),
            description="XNLI Chinese, TSV premise\\thypo\\tlabel (or the XNLI release layout).",
        ),
        _ner(
            "msra_ner",
            "tsv",
            _TSV,
            "MSRA NER (UER-py layout): TSV text_a\\tlabel, characters and BIO tags separated by "
            "spaces; labels from label2id.json or train.",
        ),
        _ner(
            "cluener",
            "jsonl",
            _JSON,
            "CLUENER2020: JSON lines {text, label: {TYPE: {entity: [[start, end]]}}} (end "
            "inclusive); --tag-scheme bio or bioes.",
        ),
        _ner(
            "ner",
            "auto",
            (*_TSV, *_JSON),
            "Any NER data: MSRA/UER TSV (characters and tags) or CLUENER JSON lines (spans); BIO "
            "or BIOES tags; labels from label2id.json or train.",
        ),
        Task(
            name="chnsenticorp",
            fmt="tsv",
            files=_files(_TSV),
            text_a="text_a",
            text_b=None,
            label="label",
            labels=("0", "1"),
            columns=("label", "text_a"),
            description="ChnSentiCorp sentiment, TSV label\\ttext_a with header.",
        ),
    )
}


def _choice(name: str, fmt: str, files: dict[str, tuple[str, ...]], desc: str) -> Task:
    """A multiple-choice task: context, question and options (read by albertzh.data.choice)."""
    return Task(
        name=name,
        fmt=fmt,
        files=files,
        text_a="context",
        text_b="question",
        label="label",
        description=desc,
        kind=MULTIPLE_CHOICE,
    )


# Multiple choice (one registry entry each).
TASKS["c3"] = _choice(
    "c3",
    "c3",
    _files((".json",), test=("test1.1", "test1.0")),
    "C3 reading comprehension (multiple choice): the C3 JSON layout [[context lines], "
    "[{question, choice, answer}], id].",
)
TASKS["mc"] = _choice(
    "mc",
    "jsonl",
    _files(_JSON),
    "Any multiple choice: JSON lines {context, question, choices: [...], label: index (or "
    "answer: text), id?}; 2 or more options.",
)


def _squad(name: str, desc: str) -> Task:
    """A span extraction task: SQuAD v1 layout JSON (read by albertzh.data.squad)."""
    return Task(
        name=name,
        fmt="squad",
        files=_files((".json",)),
        text_a="question",
        text_b="context",
        label="answers",
        metric="f1",
        description=desc,
        kind=SPAN_EXTRACTION,
    )


# Span extraction (one registry entry each).
TASKS["cmrc2018"] = _squad(
    "cmrc2018",
    "CMRC 2018 reading comprehension (span extraction): SQuAD v1 JSON, character answer_start "
    "(-1: a reference answer that is no span of the context, scored only); EM and F1.",
)
TASKS["squad"] = _squad(
    "squad",
    "Any span extraction data in the SQuAD v1 layout: data[].paragraphs[].context and "
    "qas[].id/question/answers[{text, answer_start}], character offsets.",
)
TASKS["cluewsc2020"] = Task(
    name="cluewsc2020",
    fmt=WSC_FORMAT,
    files=_files(_JSON),
    text_a="text",
    text_b="target",
    label="label",
    labels=("true", "false"),
    description="CLUEWSC2020 pronoun resolution: does span2 (the pronoun) refer to span1? Read "
    "as a pair: the text with _span1_ and [span2] marked, and 'span2指的是span1'.",
)
# The file each task's predictions go to in a CLUE leaderboard submission (eval --submission).
CLUE_SUBMISSION_FILES: dict[str, str] = {
    "tnews": "tnews11_predict.json",
    "iflytek": "iflytek_predict.json",
    "ocnli": "ocnli_50k_predict.json",
    "afqmc": "afqmc_predict.json",
    "cmnli": "cmnli_predict.json",
    "csl": "csl_predict.json",
    "cluewsc2020": "cluewsc2020_predict.json",
    "c3": "c311_predict.json",
    "cmrc2018": "cmrc2018_predict.json",
    "cluener": "cluener_predict.json",
}
GENERIC_EXTS = (".tsv", ".csv", ".jsonl", ".json", ".txt")


def task_names() -> list[str]:
    return [*TASKS, "generic"]


def kind_of(name: str) -> str:
    """The kind of task ``name`` (``generic`` is a classification task)."""
    task = TASKS.get(name)
    return task.kind if task is not None else CLASSIFICATION


def get_task(
    name: str,
    *,
    text_a: str | None = None,
    text_b: str | None = None,
    label: str | None = None,
    regression: bool = False,
) -> Task:
    """The registered task ``name``; ``generic`` is built from the field names given."""
    if name == "generic":
        if not text_a or not label:
            raise ConfigError("--task generic needs --text-a FIELD and --label FIELD")
        return Task(
            name="generic",
            fmt="auto",
            files=_files(GENERIC_EXTS),
            text_a=text_a,
            text_b=text_b or None,
            label=label,
            labels=None,
            metric="pearson" if regression else "accuracy",
            regression=regression,
            description="Any TSV/CSV/JSONL file with named text and label fields.",
        )
    if name not in TASKS:
        raise ConfigError(f"--task: unknown task {name!r} (known: {', '.join(task_names())})")
    if text_a or text_b or label or regression:
        raise ConfigError("--text-a/--text-b/--label/--regression only apply to --task generic")
    return TASKS[name]


def with_labels(task: Task, labels: Sequence[str]) -> Task:
    """The task with its label list fixed (generic tasks learn it from train or a model dir)."""
    return replace(task, labels=tuple(labels))


# --------------------------------------------------------------------------- finding files


def split_file(task: Task, data_dir: Path, split: str) -> Path:
    """The file holding ``split`` in ``data_dir`` (the first candidate name that exists)."""
    data_dir = Path(data_dir)
    if split not in task.files:
        raise ConfigError(f"--split: unknown split {split!r} (use one of {', '.join(SPLITS)})")
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: data directory not found")
    for name in task.files[split]:
        if (data_dir / name).is_file():
            return data_dir / name
    raise InputError(
        f"{data_dir}: no {split} file for task {task.name} (looked for {', '.join(task.files[split])})"
    )


# --------------------------------------------------------------------------- row readers


def _raw_lines(path: Path) -> Iterator[str]:
    """Decoded lines (newline kept); decoded one by one so an error names its own line."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    with f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: line {n}: not valid UTF-8 ({exc.reason})") from exc
            yield line.removeprefix("\ufeff") if n == 1 else line


def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline)."""
    for n, line in enumerate(_raw_lines(path), 1):
        yield n, line.rstrip("\r\n")


def _resolve_columns(
    path: Path, header: list[str], task: Task, roles: dict[str, str]
) -> dict[str, int]:
    """Map each role (text_a/text_b/label/filter) to a header column index."""
    lower = [h.strip().lower() for h in header]
    out: dict[str, int] = {}
    for role, fname in roles.items():
        candidates = (fname, *ROLE_ALIASES.get(role, ())) if task.name != "generic" else (fname,)
        for c in candidates:
            if c.lower() in lower:
                out[role] = lower.index(c.lower())
                break
    return out


def _looks_like_header(cells: list[str], task: Task, roles: dict[str, str]) -> bool:
    names = {c.strip().lower() for c in cells}
    known = {n.lower() for r, f in roles.items() for n in (f, *ROLE_ALIASES.get(r, ()))}
    return bool(names & known)


def _table_rows(path: Path, task: Task, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a TSV/CSV file as (line, {role: value}); a header row is detected by its names."""
    roles = {"text_a": task.text_a, "label": task.label}
    if task.text_b:
        roles["text_b"] = task.text_b
    if task.row_filter:
        roles["filter"] = task.row_filter[0]

    if delimiter == "\t":
        # Plain split: review text is full of quotes, which csv would try to interpret.
        lines: Iterator[tuple[int, list[str]]] = (
            (n, line.split("\t")) for n, line in _open_lines(path) if line.strip()
        )
    else:
        lines = _csv_lines(path)

    # A row may not hold more (non-empty) fields than its layout: with a header, the header's
    # columns; without, the task's fixed columns, or (positional generic fields) the first
    # row's. An extra field is most likely a tab inside a text, which would cut it silently.
    sep, fix = ("tab", "replace it with a space") if delimiter == "\t" else ("comma", "quote it")
    index: dict[str, int] | None = None
    width, layout = 0, ""
    for n, cells in lines:
        if index is None:
            if _looks_like_header(cells, task, roles):
                index = _resolve_columns(path, cells, task, roles)
                for role in ("text_a", "text_b"):
                    if role in roles and role not in index:
                        raise InputError(f"{path}: line {n}: missing column {roles[role]!r}")
                width, layout = len(cells), f"the header (line {n}) has {len(cells)}"
                continue
            if task.columns:
                index = {r: task.columns.index(f) for r, f in roles.items() if f in task.columns}
                width = len(task.columns)
                layout = f"the {task.name} layout has {width} ({', '.join(task.columns)})"
            elif all(f.isdigit() for r, f in roles.items() if r != "filter"):
                index = {r: int(f) for r, f in roles.items() if f.isdigit()}
                width, layout = len(cells), f"line {n} has {len(cells)}"
            else:
                raise InputError(
                    f"{path}: line {n}: no header row naming {', '.join(repr(f) for f in roles.values())}"
                )
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            raise InputError(
                f"{path}: line {n}: {len(cells)} {sep}-separated fields, {layout}; is there a "
                f"{sep} inside a text? ({fix})"
            )
        row: dict[str, Any] = {}
        for role, col in index.items():
            if col < len(cells):
                row[role] = cells[col]
        yield n, row


def _csv_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(_raw_lines(path))
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                yield reader.line_num, cells
    except csv.Error as exc:
        raise InputError(f"{path}: line {reader.line_num}: {exc}") from exc


def _json_rows(path: Path, task: Task) -> Iterator[tuple[int, dict[str, Any]]]:
    roles = {"text_a": task.text_a, "label": task.label}
    if task.text_b:
        roles["text_b"] = task.text_b
    if task.row_filter:
        roles["filter"] = task.row_filter[0]
    if task.desc_field:
        roles["desc"] = task.desc_field
    roles["id"] = "id"
    for n, line in _open_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {n}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise InputError(f"{path}: line {n}: expected a JSON object")
        yield n, {role: obj[f] for role, f in roles.items() if f in obj}


def format_of(path: Path, task: Task) -> str:
    """The layout ``path`` is read in: the task's, or by suffix for ``auto`` tasks."""
    if task.fmt != "auto":
        return task.fmt
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "tsv"


def iter_rows(path: Path, task: Task) -> Iterator[tuple[int, dict[str, Any]]]:
    """Raw rows of a split file as (line, {"text_a", "text_b", "label", "filter"} values)."""
    fmt = format_of(path, task)
    if fmt == "jsonl":
        return _json_rows(path, task)
    if fmt == WSC_FORMAT:
        return _wsc_rows(path)
    return _table_rows(path, task, "," if fmt == "csv" else "\t")


def mark_spans(text: str, spans: Sequence[tuple[int, str, str, str]]) -> str:
    """``text`` with each (index, span text, open, close) span wrapped in its markers."""
    for i, span, left, right in sorted(spans, reverse=True):  # the later span first
        text = text[:i] + left + span + right + text[i + len(span) :]
    return text


def _wsc_span(path: Path, n: int, text: str, target: dict[str, Any], k: int) -> tuple[int, str]:
    span = target.get(f"span{k}_text")
    index = target.get(f"span{k}_index")
    if not isinstance(span, str) or not span or not isinstance(index, int):
        raise InputError(f"{path}: line {n}: target needs span{k}_text and span{k}_index")
    if text[index : index + len(span)] != span:
        raise InputError(
            f"{path}: line {n}: span{k}_text {span!r} is not at span{k}_index {index} of the text"
        )
    return index, span


def _wsc_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """CLUEWSC2020 rows: ``{"text", "target": {span1_text, span1_index, span2_text,
    span2_index}, "label": "true"|"false", "id"?}`` as a pair: the text with the candidate
    (span1) in ``_..._`` and the pronoun (span2) in ``[...]`` (the CLUE baseline's marks), and
    "PRONOUN指的是CANDIDATE"."""
    for n, line in _open_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {n}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(f"{path}: line {n}: expected a JSON object with a 'text'")
        target = obj.get("target")
        if not isinstance(target, dict):
            raise InputError(f"{path}: line {n}: missing field 'target'")
        text = obj["text"]
        i1, s1 = _wsc_span(path, n, text, target, 1)
        i2, s2 = _wsc_span(path, n, text, target, 2)
        row = {
            "text_a": mark_spans(text, [(i1, s1, "_", "_"), (i2, s2, "[", "]")]),
            "text_b": f"{s2}指的是{s1}",
        }
        if obj.get("label") is not None:
            row["label"] = obj["label"]
        if obj.get("id") is not None:
            row["id"] = obj["id"]
        yield n, row


# --------------------------------------------------------------------------- examples


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "，".join(str(v) for v in value)  # CSL keywords
    return "" if value is None else str(value)


def normalize_label(value: Any) -> str:
    """A label as the string the registry uses: 115 -> "115", 1.0 -> "1"."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_examples(
    task: Task, path: Path, *, labels: Sequence[str] | None = None, require_labels: bool = False
) -> list[Example]:
    """All examples of one split file, in file order.

    ``labels`` (default: the task's) is the closed label set; a label outside it is an error.
    With no label set (generic train), labels are taken as they come. A file without a label
    column gives unlabelled examples unless ``require_labels``.
    """
    path = Path(path)
    allowed = set(labels if labels is not None else (task.labels or ()))
    closed = bool(allowed) and not task.regression
    out: list[Example] = []
    labelled: bool | None = None
    for n, row in iter_rows(path, task):
        if task.row_filter and "filter" in row and str(row["filter"]) != task.row_filter[1]:
            continue
        if "text_a" not in row:
            raise InputError(f"{path}: line {n}: missing field {task.text_a!r}")
        if task.text_b and "text_b" not in row:
            raise InputError(f"{path}: line {n}: missing field {task.text_b!r}")
        has_label = row.get("label") not in (None, "")
        if labelled is None:
            labelled = has_label
            if not labelled and require_labels:
                raise InputError(f"{path}: line {n}: missing label field {task.label!r}")
        elif labelled and not has_label:
            raise InputError(f"{path}: line {n}: missing label field {task.label!r}")
        label: str | float | None = None
        if labelled and has_label:
            raw = normalize_label(row["label"])
            raw = task.label_aliases.get(raw, raw)
            if raw in task.drop_labels:
                continue
            if task.regression:
                try:
                    label = float(raw)
                except ValueError:
                    raise InputError(f"{path}: line {n}: label {raw!r} is not a number") from None
                if not math.isfinite(label):
                    raise InputError(f"{path}: line {n}: label {raw!r} is not finite")
            else:
                if closed and raw not in allowed:
                    shown = ", ".join(sorted(allowed)[:20])
                    raise InputError(
                        f"{path}: line {n}: unknown label {raw!r} (expected one of {shown})"
                    )
                label = raw
        text_b = _text(row["text_b"]) if task.text_b else None
        desc = str(row["desc"]) if row.get("desc") not in (None, "") else None
        out.append(Example(_text(row["text_a"]), text_b, label, n, desc, row.get("id")))
    if not out:
        raise InputError(f"{path}: empty (no rows)")
    return out


def label_descriptions(examples: Sequence[Example]) -> dict[str, str]:
    """label -> its CLUE description (``{"102": "news_entertainment"}``) where the file has one."""
    return {str(e.label): e.label_desc for e in examples if e.label is not None and e.label_desc}


def infer_labels(examples: Sequence[Example]) -> tuple[str, ...]:
    """The sorted label set of labelled examples (numeric labels in numeric order)."""
    found = {str(e.label) for e in examples if e.label is not None}

    def key(s: str) -> tuple[int, float, str]:
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)

    return tuple(sorted(found, key=key))


def load_split(
    task: Task, data_dir: Path, split: str, *, require_labels: bool = False
) -> tuple[Path, list[Example]]:
    """(file, examples) of ``split`` in ``data_dir``."""
    path = split_file(task, data_dir, split)
    return path, read_examples(task, path, require_labels=require_labels)


def labels_of(task: Task, examples: Sequence[Example], path: Path) -> Task:
    """Fix the label list of a task whose labels are inferred (generic) from its train split."""
    if task.regression or task.labels is not None:
        return task
    labels = infer_labels(examples)
    if len(labels) < 2:
        raise InputError(f"{path}: needs at least 2 distinct labels, found {len(labels)}")
    return with_labels(task, labels)


# --------------------------------------------------------------------------- metrics


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support (labels as indices)."""
    n = len(y_true)
    k = len(labels)
    conf = [[0] * k for _ in range(k)]  # conf[true][pred]
    for t, p in zip(y_true, y_pred, strict=True):
        conf[t][p] += 1
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = conf[i][i]
        pred_i = sum(conf[r][i] for r in range(k))
        true_i = sum(conf[i])
        precision = tp / pred_i if pred_i else 0.0
        recall = tp / true_i if true_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": true_i,
        }
        f1s.append(f1)
    correct = sum(conf[i][i] for i in range(k))
    return {
        "accuracy": correct / n if n else 0.0,
        "macro_f1": sum(f1s) / k if k else 0.0,
        "per_class": per_class,
    }


def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for m in range(i, j + 1):  # ties share their mean rank
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    n = len(a)
    if n < 2:
        return 0.0
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else 0.0


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation and mean squared error."""
    n = len(y_true)
    mse = sum((t - p) ** 2 for t, p in zip(y_true, y_pred, strict=True)) / n if n else 0.0
    return {
        "pearson": _pearson(y_true, y_pred),
        "spearman": _pearson(_ranks(y_true), _ranks(y_pred)),
        "mse": mse,
    }


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of ``targets`` under softmax(``logits``)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].mean())


def score_logits(
    logits: np.ndarray, examples: Sequence[Example], labels: Sequence[str], regression: bool
) -> dict[str, Any]:
    """Metrics of ``logits`` against the examples' labels (all examples must be labelled)."""
    if regression:
        pred = logits[:, 0].astype(np.float64)
        gold = np.array([float(e.label) for e in examples], dtype=np.float64)
        m: dict[str, Any] = regression_metrics(gold.tolist(), pred.tolist())
        m["loss"] = m["mse"]
        return m
    index = {lab: i for i, lab in enumerate(labels)}
    gold_i = np.array([index[str(e.label)] for e in examples], dtype=np.int64)
    pred_i = logits.argmax(axis=-1)
    m = classification_metrics(gold_i.tolist(), pred_i.tolist(), labels)
    m["loss"] = cross_entropy(logits, gold_i)
    return m
