"""Multiple choice: questions with 2 or more options, read from C3 files or JSON lines; no torch.

Two layouts (a task's ``fmt``):

- ``c3`` (the C3 release, also CLUE's ``c3``): one JSON file holding a list of documents
  ``[[context line, ...], [{"question", "choice": [...], "answer", "id"?}, ...], doc_id]``; the
  context is the lines joined, ``answer`` is the text of the right option (absent in test files);
- ``jsonl`` (the generic ``mc`` task): one JSON object per line, ``{"context", "question",
  "choices": [...], "label": index}`` or ``"answer": text`` instead of ``label``, and an optional
  ``"id"``.

A question's ``id`` is its own ``id`` field where the file has one (CLUE test files), else
``DOC_ID-k`` (C3, k-th question of the document) or the line number (JSON lines); predictions
carry it. Bad input (no options, one option, an answer that is not an option, a label out of
range) is an :class:`InputError` naming the file and the line or question.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from albertzh.data import tasks as T
from albertzh.errors import InputError

MIN_CHOICES = 2


@dataclass(frozen=True)
class ChoiceExample:
    """One question: its context, options, the right option's index (``None``: unlabelled)."""

    context: str
    question: str
    choices: tuple[str, ...]
    label: int | None
    line: int  # the line (JSON lines) or the document's index (C3, 1-based)
    id: Any  # the file's own id where it has one (CLUE test files: as given), else made up


def _label_of(where: str, choices: Sequence[str], label: Any, answer: Any) -> int | None:
    """The index of the right option from ``label`` (an index) or ``answer`` (its text)."""
    if label is not None and label != "":
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise InputError(f"{where}: label {label!r} is not an option index")
        try:
            i = int(label)
        except ValueError:
            raise InputError(f"{where}: label {label!r} is not an option index") from None
        if not 0 <= i < len(choices):
            raise InputError(f"{where}: label {i} out of range (0..{len(choices) - 1})")
        return i
    if answer is not None and answer != "":
        if str(answer) not in choices:
            raise InputError(f"{where}: answer {str(answer)!r} is not one of the options")
        return list(choices).index(str(answer))
    return None


def _question(
    where: str, context: str, obj: dict[str, Any], choices_field: str, line: int, qid: Any
) -> ChoiceExample:
    raw = obj.get(choices_field)
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: no options ({choices_field!r} must be a list of texts)")
    choices = tuple(str(c) for c in raw)
    if len(choices) < MIN_CHOICES:
        raise InputError(f"{where}: only {len(choices)} option (at least {MIN_CHOICES} needed)")
    label = _label_of(where, choices, obj.get("label"), obj.get("answer"))
    question = obj.get("question")
    if not isinstance(question, str):
        raise InputError(f"{where}: missing field 'question'")
    return ChoiceExample(context, question, choices, label, line, qid)


def _c3_questions(path: Path) -> Iterator[ChoiceExample]:
    try:
        docs = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    if not isinstance(docs, list):
        raise InputError(f"{path}: expected a JSON list of C3 documents")
    for d, doc in enumerate(docs, 1):
        if not (isinstance(doc, list) and len(doc) >= 2 and isinstance(doc[1], list)):
            raise InputError(f"{path}: document {d}: expected [[context lines], [questions], id]")
        lines = doc[0] if isinstance(doc[0], list) else [doc[0]]
        context = "\n".join(str(x) for x in lines)
        doc_id = str(doc[2]) if len(doc) > 2 else str(d)
        for k, q in enumerate(doc[1]):
            where = f"{path}: document {d} (id {doc_id}), question {k + 1}"
            if not isinstance(q, dict):
                raise InputError(f"{where}: expected a JSON object")
            qid = q["id"] if q.get("id") is not None else f"{doc_id}-{k}"
            yield _question(where, context, q, "choice", d, qid)


def _jsonl_questions(path: Path) -> Iterator[ChoiceExample]:
    for n, line in T._open_lines(path):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object")
        context = obj.get("context", "")
        if not isinstance(context, str):
            raise InputError(f"{where}: 'context' must be a text")
        qid = obj["id"] if obj.get("id") is not None else str(n)
        yield _question(where, context, obj, "choices", n, qid)


def read_choices(path: Path, fmt: str, *, require_labels: bool = False) -> list[ChoiceExample]:
    """All questions of a split file, in file order; a split is all labelled or all not."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    questions = list(_c3_questions(path) if fmt == "c3" else _jsonl_questions(path))
    if not questions:
        raise InputError(f"{path}: empty (no questions)")
    labelled = questions[0].label is not None
    for q in questions:
        if (q.label is not None) != labelled or (require_labels and q.label is None):
            raise InputError(f"{path}: question {q.id}: no label (or answer) field")
    return questions


def parse_question(line: str, where: str) -> ChoiceExample:
    """One JSON line of ``predict`` input (``{"context", "question", "choices"}``)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object")
    context = obj.get("context", "")
    if not isinstance(context, str):
        raise InputError(f"{where}: 'context' must be a text")
    qid = obj["id"] if obj.get("id") is not None else ""
    choices_field = "choices" if "choices" in obj else "choice"
    return _question(where, context, obj, choices_field, 0, qid)


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    """The share of questions whose picked option is the right one."""
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else 0.0
