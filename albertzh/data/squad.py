"""Span extraction (reading comprehension) data, without torch: SQuAD v1 files, question +
context windows, answer spans back to characters, and CMRC 2018's EM and F1.

Files of a ``span_extraction`` task (CMRC 2018, or any SQuAD v1 layout): one JSON document
``{"data": [{"paragraphs": [{"context": ..., "qas": [{"id", "question", "answers": [{"text",
"answer_start"}]}]}]}]}`` with ``answer_start`` a character offset into the context. An answer
must sit at its ``answer_start``; ``answer_start: -1`` (CMRC 2018's dev set) marks a reference
answer that is not a span of the context: it is scored against, never trained on. Questions
without ``answers`` are unlabelled (test splits).

The context is tokenized once with character offsets (:mod:`albertzh.tokenizer`); a question
is read with windows of the context (``[CLS] question [SEP] context tokens [SEP]``), the
windows' starts ``stride`` tokens apart. A predicted token span is the characters from its
first token's start to its last token's end, so an answer is always an exact slice of the
context.

Metrics follow the official CMRC 2018 evaluation script (``cmrc2018_evaluate.py``): text is
lower-cased and stripped, cut into segments (each Chinese character and each of its
punctuation marks alone, other runs split into words and punctuation; the script uses NLTK's
``word_tokenize`` there, here a regex), its punctuation dropped; F1 is from the longest common
run of segments, EM compares the texts without punctuation; both take the best reference and a
question without a prediction scores 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.data.ner import windows
from albertzh.errors import ConfigError, InputError

NO_ANSWER = -1  # answer_start of a reference answer that is not a span of the context


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset into the context, or NO_ANSWER


@dataclass(frozen=True)
class QAExample:
    """One question on one context, with its reference answers (None when unlabelled)."""

    qid: str
    question: str
    context: str
    answers: tuple[Answer, ...] | None

    def train_answer(self) -> Answer | None:
        """The first reference answer that is a span of the context (what training points at)."""
        return next((a for a in self.answers or () if a.start != NO_ANSWER), None)


def _field(obj: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise InputError(f"{where}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{where}: field {name!r} is not a {kind.__name__}")
    return value


class BadAnswer(InputError):
    """An answer that is not at its ``answer_start``."""


def _answers(qa: dict, context: str, where: str) -> tuple[Answer, ...] | None:
    if qa.get("answers") in (None, []):
        return None
    out = []
    for k, ans in enumerate(_field(qa, "answers", list, where), 1):
        at = f"{where}: answer {k}"
        text = _field(ans, "text", str, at)
        start = _field(ans, "answer_start", int, at)
        if start != NO_ANSWER and context[start : start + len(text)] != text:
            raise BadAnswer(
                f"{at}: answer_start {start} does not point at {text!r} (the context has "
                f"{context[max(start, 0) : max(start, 0) + len(text)]!r} there; -1 marks an "
                "answer that is not a span of the context)"
            )
        out.append(Answer(text, start))
    return tuple(out)


def read_squad(
    path: Path, *, require_answers: bool = False, skipped: list[str] | None = None
) -> list[QAExample]:
    """The questions of a SQuAD v1 layout file, checked (fields, answers at their offsets).

    An answer not at its ``answer_start`` is an error, unless ``skipped`` is given: then its
    question is left out and its id appended there."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON document: {exc}") from exc
    articles = _field(doc, "data", list, str(path))
    out: list[QAExample] = []
    seen: set[str] = set()
    for a, article in enumerate(articles, 1):
        for p, para in enumerate(_field(article, "paragraphs", list, f"{path}: data[{a}]"), 1):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _field(para, "context", str, where)
            for q, qa in enumerate(_field(para, "qas", list, where), 1):
                qid = qa.get("id") if isinstance(qa, dict) else None
                if not isinstance(qid, str | int) or isinstance(qid, bool):
                    raise InputError(f"{where}.qas[{q}]: missing field 'id'")
                at = f"{path}: question {qid}"
                if str(qid) in seen:
                    raise InputError(f"{at}: the id is used twice")
                seen.add(str(qid))
                question = _field(qa, "question", str, at)
                try:
                    answers = _answers(qa, context, at)
                except BadAnswer:
                    if skipped is None:
                        raise
                    skipped.append(str(qid))
                    continue
                if require_answers and answers is None:
                    raise InputError(f"{at}: no answers (a labelled split needs them)")
                out.append(QAExample(str(qid), question, context, answers))
    if not out:
        raise InputError(f"{path}: no questions")
    return out


def parse_question(line: str, where: str) -> QAExample:
    """A predict input line: ``{"question": ..., "context": ..., "id"?: ...}`` (JSON)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(
            f'{where}: not a JSON object {{"question": ..., "context": ...}} ({exc.msg})'
        ) from exc
    question = _field(obj, "question", str, where)
    context = _field(obj, "context", str, where)
    qid = obj.get("id")
    return QAExample("" if qid is None else str(qid), question, context, None)


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Feature:
    """One window of one question: context tokens ``start:end`` after the question's tokens."""

    example: int
    start: int  # first context token in the window
    end: int
    offset: int  # window position of context token ``start`` (after [CLS] question [SEP])


@dataclass
class QAFeatures:
    """Questions made ready for the model: per example its context tokens' character spans,
    per window its ids and token types, and (labelled) the start/end positions (0: [CLS])."""

    offsets: list[list[tuple[int, int]]]
    features: list[Feature]
    encoded: list[tuple[list[int], list[int]]]
    starts: np.ndarray | None
    ends: np.ndarray | None
    max_answer_len: int | None = None  # what dev scoring during finetune decodes with

    def __len__(self) -> int:
        return len(self.features)


def default_stride(width: int) -> int:
    """Half a window of context tokens."""
    return max(1, width // 2)


def token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """The first and last token (inclusive) covering characters ``start:end``, or None."""
    hit = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    return (hit[0], hit[-1]) if hit else None


def encode_features(
    tokenizer: Any,
    examples: Sequence[QAExample],
    *,
    max_len: int,
    max_query_len: int,
    stride: int | None,
    labelled: bool = False,
) -> QAFeatures:
    """Windows of every question; with ``labelled``, the answer's token positions in each
    window that holds all of it, else 0 ([CLS])."""
    questions = tokenizer.encode_batch([e.question for e in examples])
    contexts = tokenizer.encode_batch([e.context for e in examples])
    offsets, feats, encoded, starts, ends = [], [], [], [], []
    for i, (ex, q, c) in enumerate(zip(examples, questions, contexts, strict=True)):
        qids = q.ids[:max_query_len]
        width = max_len - len(qids) - 3
        if width < 1:
            raise ConfigError(
                f"--max-seq-len {max_len}: no room for the context after a question of "
                f"{len(qids)} tokens (lower --max-query-len)"
            )
        step = min(stride or default_stride(width), width)
        offsets.append(list(c.offsets))
        answer = ex.train_answer() if labelled else None
        span = (
            token_span(c.offsets, answer.start, answer.start + len(answer.text)) if answer else None
        )
        for a, b in windows(len(c.ids), width + 2, step):
            f = Feature(i, a, b, len(qids) + 2)
            feats.append(f)
            ids = [tokenizer.cls_id, *qids, tokenizer.sep_id, *c.ids[a:b], tokenizer.sep_id]
            types = [0] * f.offset + [1] * (b - a + 1)
            encoded.append((ids, types))
            if span is not None and a <= span[0] and span[1] < b:
                starts.append(f.offset + span[0] - a)
                ends.append(f.offset + span[1] - a)
            else:
                starts.append(0)
                ends.append(0)
    if not labelled:
        return QAFeatures(offsets, feats, encoded, None, None)
    return QAFeatures(offsets, feats, encoded, np.array(starts), np.array(ends))


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Prediction:
    text: str
    start: int  # character offset into the context
    score: float  # start logit + end logit


def best_spans(
    feats: QAFeatures,
    examples: Sequence[QAExample],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    max_answer_len: int,
    top_k: int = 20,
) -> list[Prediction | None]:
    """Per example the highest start + end logit over its windows' context tokens, end not
    before start and at most ``max_answer_len`` tokens long (None: an empty context)."""
    best: list[tuple[float, int, int] | None] = [None] * len(examples)
    for f, sl, el in zip(feats.features, start_logits, end_logits, strict=True):
        n = f.end - f.start
        if n == 0:
            continue
        s_ctx = sl[f.offset : f.offset + n]  # [n] context positions only
        e_ctx = el[f.offset : f.offset + n]
        for s in np.argsort(-s_ctx)[:top_k].tolist():
            for e in np.argsort(-e_ctx)[:top_k].tolist():
                if e < s or e - s + 1 > max_answer_len:
                    continue
                score = float(s_ctx[s] + e_ctx[e])
                cur = best[f.example]
                if cur is None or score > cur[0]:
                    best[f.example] = (score, f.start + s, f.start + e)
    out: list[Prediction | None] = []
    for i, b in enumerate(best):
        if b is None:
            out.append(None)
            continue
        score, ts, te = b
        cs, ce = feats.offsets[i][ts][0], feats.offsets[i][te][1]
        out.append(Prediction(examples[i].context[cs:ce], cs, score))
    return out


# --------------------------------------------------------------------------- CMRC 2018 metrics

# The punctuation cmrc2018_evaluate.py removes (its ``sp_char``; its "……" never matches
# one character, so a lone "…" stays, as there).
CMRC_PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORDS = re.compile(r"\w+(?:[.,]\w+)*|[^\w\s]")  # stands in for nltk.word_tokenize


def _normalize(text: str) -> str:
    return str(text).lower().strip()


def segments(text: str) -> list[str]:
    """CMRC 2018's ``mixed_segmentation(rm_punc=True)``: every Chinese character alone, other
    runs cut into words and marks, its punctuation dropped."""
    out: list[str] = []
    run = ""
    for ch in _normalize(text):
        if ch in CMRC_PUNCTUATION:
            continue  # the script drops it before it would close a run
        if _CJK.match(ch):
            out.extend(_WORDS.findall(run))
            run = ""
            out.append(ch)
        else:
            run += ch
    out.extend(_WORDS.findall(run))
    return out


def remove_punctuation(text: str) -> str:
    """CMRC 2018's ``remove_punctuation``: lower-cased, stripped, its punctuation dropped."""
    return "".join(ch for ch in _normalize(text) if ch not in CMRC_PUNCTUATION)


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def f1_score(references: Sequence[str], prediction: str) -> float:
    """The best F1 over ``references`` of the longest common run of segments."""
    scores = [0.0]
    pred = segments(prediction)
    for ref in references:
        gold = segments(ref)
        common = _longest_common_run(gold, pred)
        if common == 0:
            continue
        p, r = common / len(pred), common / len(gold)
        scores.append(2 * p * r / (p + r))
    return max(scores)


def em_score(references: Sequence[str], prediction: str) -> float:
    """1.0 when the prediction equals a reference, punctuation removed."""
    pred = remove_punctuation(prediction)
    return float(any(remove_punctuation(ref) == pred for ref in references))


def qa_metrics(examples: Sequence[QAExample], predictions: Mapping[str, str]) -> dict[str, float]:
    """Mean EM and F1 (fractions; the official script prints them x100) over the labelled
    questions; a question missing from ``predictions`` scores 0."""
    em = f1 = 0.0
    n = 0
    for e in examples:
        if e.answers is None:
            continue
        n += 1
        if e.qid not in predictions:
            continue
        refs = [a.text for a in e.answers]
        em += em_score(refs, predictions[e.qid])
        f1 += f1_score(refs, predictions[e.qid])
    return {"em": em / n if n else 0.0, "f1": f1 / n if n else 0.0, "questions": n}
