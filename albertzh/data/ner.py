"""Token classification (NER) data, without torch: tagged sentences, tag schemes and label sets,
the character <-> token alignment, windows over long sentences, and entity-level metrics.

Files of a ``token_classification`` task (see :mod:`albertzh.data.tasks`):

- TSV (UER-py / MSRA): ``text_a<TAB>label`` (header optional); the sentence's characters and
  their tags, each separated by spaces (a text without spaces is read character by character).
- JSON lines (CLUENER): ``{"text": ..., "label": {"TYPE": {"entity text": [[start, end]]}}}``
  with ``end`` inclusive; ``label`` may also be a list of tags (or one string of them), one per
  character. Rows without ``label`` are unlabelled (test splits).

A sentence is a sequence of *units*: its characters (a TSV item of several characters stays one
unit). Every unit has exactly one tag and gets exactly one prediction, whatever the tokenizer
makes of it (:func:`align`).

Tags are ``O`` or ``P-TYPE``, P one of B, I (BIO) or B, I, E, S (BIOES). The label set is the data
dir's ``label2id.json`` (``{tag: id}``, ids 0..n-1) or else, inferred from train, ``O`` then every
tag of the scheme for each entity type, types sorted. Entities are read from tags as conlleval
reads them (seqeval's default mode, which extends conlleval to E-/S-): an I- or E- tag that does
not continue an entity of its type starts a new one. Gold data is used as it is, in training and
in scoring alike; :func:`tag_violations` counts the entities it opens without B- or S-.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.data import tasks as T
from albertzh.errors import ConfigError, InputError

OUTSIDE = "O"
SCHEMES: dict[str, str] = {"bio": "BI", "bioes": "BIES"}  # scheme -> its tag prefixes
LABEL2ID_FILE = "label2id.json"
IGNORE = -100  # the label of positions that carry no tag: [CLS], [SEP], padding, later sub-tokens


# --------------------------------------------------------------------------- tags


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def tag_problem(tag: str) -> str | None:
    """Why ``tag`` is not ``O`` or ``P-TYPE`` (P in B, I, E, S), or None."""
    if tag == OUTSIDE:
        return None
    prefix, sep, kind = tag.partition("-")
    if not sep or len(prefix) != 1 or prefix not in SCHEMES["bioes"] or not kind:
        return f"tag {tag!r} is not O or B-/I-/E-/S-TYPE"
    return None


def scheme_of(labels: Sequence[str]) -> str:
    """``bioes`` when the label set has E- or S- tags, else ``bio``."""
    return "bioes" if any(split_tag(t)[0] in ("E", "S") for t in labels) else "bio"


def spans_to_tags(n: int, spans: Sequence[tuple[str, int, int]], scheme: str) -> list[str]:
    """Tags of ``n`` units holding the (type, start, end-exclusive) entities, in ``scheme``."""
    tags = [OUTSIDE] * n
    for kind, start, end in spans:
        if scheme == "bioes" and end - start == 1:
            tags[start] = f"S-{kind}"
            continue
        tags[start] = f"B-{kind}"
        for k in range(start + 1, end):
            tags[k] = f"I-{kind}"
        if scheme == "bioes":
            tags[end - 1] = f"E-{kind}"
    return tags


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class TaggedExample:
    """One sentence: its units (characters), one tag per unit (None when unlabelled), its line."""

    units: tuple[str, ...]
    tags: tuple[str, ...] | None
    line: int
    id: Any = None  # the row's "id" field where the file has one (CLUENER test files), as given

    @property
    def text(self) -> str:
        return "".join(self.units)

    def char_starts(self) -> list[int]:
        """The character offset of each unit in :attr:`text`, then ``len(text)``."""
        out = [0]
        for unit in self.units:
            out.append(out[-1] + len(unit))
        return out


@dataclass(frozen=True)
class RawRow:
    """A row as the file gives it: tags, or entity spans (type, start, end-exclusive)."""

    units: tuple[str, ...]
    tags: tuple[str, ...] | None
    spans: tuple[tuple[str, int, int], ...] | None
    line: int
    id: Any = None


def _units(value: Any, fmt: str, where: str, field: str) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(u, str) and u for u in value):
        units = tuple(value)
    elif not isinstance(value, str):
        raise InputError(f"{where}: field {field!r} is not a string")
    elif fmt != "jsonl" and any(c.isspace() for c in value):
        units = tuple(value.split())  # UER/MSRA: characters separated by spaces
    else:
        units = tuple(value)
    if not units:
        raise InputError(f"{where}: empty text")
    return units


def _tags(value: Any, n: int, where: str) -> tuple[str, ...]:
    tags = value.split() if isinstance(value, str) else value
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise InputError(f"{where}: label is neither tags nor {{TYPE: {{entity: [[start, end]]}}}}")
    if len(tags) != n:
        raise InputError(f"{where}: {len(tags)} tags for {n} characters")
    for k, tag in enumerate(tags):
        problem = tag_problem(tag)
        if problem:
            raise InputError(f"{where}: {problem} (character {k + 1})")
    return tuple(tags)


def _spans(value: dict, units: tuple[str, ...], where: str) -> tuple[tuple[str, int, int], ...]:
    """CLUENER's ``{TYPE: {entity text: [[start, end], ...]}}`` (end inclusive), checked."""
    if any(len(u) != 1 for u in units):
        raise InputError(f"{where}: entity spans need the text as one string")
    text = "".join(units)
    spans: list[tuple[str, int, int]] = []
    for kind, entities in value.items():
        if not kind or any(c.isspace() for c in kind) or not isinstance(entities, dict):
            raise InputError(
                f"{where}: label {kind!r}: expected {{entity text: [[start, end], ...]}}"
            )
        for entity, places in entities.items():
            if not isinstance(places, list):
                raise InputError(f"{where}: entity {entity!r}: expected a list of [start, end]")
            for place in places:
                ok = isinstance(place, list) and len(place) == 2
                if not ok or not all(type(x) is int for x in place):
                    raise InputError(f"{where}: entity {entity!r}: {place!r} is not [start, end]")
                start, end = place
                if not 0 <= start <= end < len(text):
                    raise InputError(
                        f"{where}: entity {entity!r} [{start}, {end}] is outside the text "
                        f"({len(text)} characters; end is inclusive)"
                    )
                if text[start : end + 1] != entity:
                    raise InputError(
                        f"{where}: entity {entity!r} [{start}, {end}] does not match the text "
                        f"there ({text[start : end + 1]!r}; end is inclusive)"
                    )
                spans.append((kind, start, end + 1))
    spans.sort(key=lambda s: (s[1], s[2]))
    for a, b in zip(spans, spans[1:], strict=False):
        if b[1] < a[2]:
            raise InputError(
                f"{where}: entities {text[a[1] : a[2]]!r} ({a[0]}) and {text[b[1] : b[2]]!r} "
                f"({b[0]}) overlap"
            )
    return tuple(spans)


def read_rows(task: T.Task, path: Path, *, require_labels: bool = False) -> list[RawRow]:
    """The rows of a split file, checked: tag counts, tag forms, spans inside and matching."""
    path = Path(path)
    fmt = T.format_of(path, task)
    out: list[RawRow] = []
    labelled: bool | None = None
    for n, row in T.iter_rows(path, task):
        where = f"{path}: line {n}"
        if "text_a" not in row:
            raise InputError(f"{where}: missing field {task.text_a!r}")
        units = _units(row["text_a"], fmt, where, task.text_a)
        has_label = row.get("label") not in (None, "")
        if labelled is None:
            labelled = has_label
            if not labelled and require_labels:
                raise InputError(f"{where}: missing label field {task.label!r}")
        elif labelled and not has_label:
            raise InputError(f"{where}: missing label field {task.label!r}")
        tags = spans = None
        if labelled:
            value = row["label"]
            if isinstance(value, dict):
                spans = _spans(value, units, where)
            else:
                tags = _tags(value, len(units), where)
        out.append(RawRow(units, tags, spans, n, row.get("id")))
    if not out:
        raise InputError(f"{path}: empty (no rows)")
    return out


def read_label2id(path: Path) -> tuple[str, ...]:
    """The tags of a ``label2id.json`` in id order; it must map each tag to one of 0..n-1."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(type(v) is int for v in data.values()):
        raise InputError(f"{path}: expected a JSON object {{tag: id}} with integer ids")
    if sorted(data.values()) != list(range(len(data))):
        raise InputError(f"{path}: ids must be 0..{len(data) - 1}, each used once")
    for tag in data:
        problem = tag_problem(tag)
        if problem:
            raise InputError(f"{path}: {problem}")
    if OUTSIDE not in data:
        raise InputError(f"{path}: no {OUTSIDE!r} tag")
    return tuple(sorted(data, key=data.__getitem__))


def infer_labels(rows: Sequence[RawRow], scheme: str, path: Path) -> tuple[str, ...]:
    """``O`` and every tag of ``scheme`` (``auto``: BIOES if train has E-/S- tags) per type."""
    kinds: set[str] = set()
    prefixes: set[str] = set()
    for row in rows:
        for tag in row.tags or ():
            prefix, kind = split_tag(tag)
            prefixes.add(prefix)
            if kind:
                kinds.add(kind)
        kinds.update(kind for kind, _, _ in row.spans or ())
    if not kinds:
        raise InputError(f"{path}: no entities (every tag is O); nothing to learn")
    if scheme == "auto":
        scheme = "bioes" if prefixes & {"E", "S"} else "bio"
    return (OUTSIDE, *(f"{p}-{k}" for k in sorted(kinds) for p in SCHEMES[scheme]))


def task_labels(
    rows: Sequence[RawRow], path: Path, data_dir: Path, scheme: str = "auto"
) -> tuple[str, ...]:
    """The label set of a token task: ``label2id.json`` in ``data_dir``, else train's tags."""
    file = Path(data_dir) / LABEL2ID_FILE
    if not file.is_file():
        return infer_labels(rows, scheme, path)
    labels = read_label2id(file)
    found = scheme_of(labels)
    if scheme != "auto" and scheme != found:
        raise ConfigError(f"--tag-scheme {scheme}: {file} holds {found.upper()} tags")
    return labels


def to_examples(rows: Sequence[RawRow], labels: Sequence[str], path: Path) -> list[TaggedExample]:
    """Examples with tags from the label set (spans become tags in its scheme)."""
    allowed = set(labels)
    scheme = scheme_of(labels)
    out = []
    for row in rows:
        tags = row.tags
        if row.spans is not None:
            tags = tuple(spans_to_tags(len(row.units), row.spans, scheme))
        for k, tag in enumerate(tags or ()):
            if tag not in allowed:
                shown = ", ".join(list(labels)[:20]) + (", ..." if len(labels) > 20 else "")
                raise InputError(
                    f"{path}: line {row.line}: unknown tag {tag!r} (character {k + 1}; "
                    f"expected one of {shown})"
                )
        out.append(TaggedExample(row.units, tags, row.line, row.id))
    return out


def read_tagged(
    task: T.Task, path: Path, labels: Sequence[str], *, require_labels: bool = False
) -> list[TaggedExample]:
    """All examples of a split file whose tags must be in ``labels``."""
    return to_examples(read_rows(task, path, require_labels=require_labels), labels, path)


# --------------------------------------------------------------------------- characters <-> tokens


@dataclass(frozen=True)
class Aligned:
    """A sentence's tokens (no [CLS]/[SEP]) and, per unit, the index of its first token."""

    ids: list[int]
    first: list[int]


def align(tokenizer: Any, sentences: Sequence[Sequence[str]]) -> list[Aligned]:
    """Tokenize sentences unit by unit, so that every unit keeps its place.

    The units are joined with spaces, so no token spans two of them (a digit or Latin run is
    read character by character, never merged), and each token goes back to its unit by its
    character offset. A unit may give several tokens (the first carries its tag); one that gives
    none (a space, a control or zero-width character the tokenizer drops) gets [UNK]. A token
    with an empty span (a lone SentencePiece "▁") stays with the unit it precedes.
    """
    encodings = tokenizer.encode_batch([" ".join(units) for units in sentences])
    out = []
    for units, enc in zip(sentences, encodings, strict=True):
        starts, at = [], 0
        for unit in units:
            starts.append(at)
            at += len(unit) + 1
        per_unit: list[list[tuple[int, bool]]] = [[] for _ in units]
        for tid, (s, e) in zip(enc.ids, enc.offsets, strict=True):
            k = max(bisect.bisect_right(starts, s) - 1, 0)
            per_unit[k].append((tid, e > s))
        ids: list[int] = []
        first: list[int] = []
        for toks in per_unit:
            at_first = None
            for tid, covers in toks:
                if at_first is None and covers:
                    at_first = len(ids)
                ids.append(tid)
            if at_first is None:
                at_first = len(ids)
                ids.append(tokenizer.unk_id)
            first.append(at_first)
        out.append(Aligned(ids, first))
    return out


def default_stride(max_len: int) -> int:
    """Half a window: each token away from a window's edge in one window or the next."""
    return max(1, (max_len - 2) // 2)


@dataclass(frozen=True)
class Window:
    """Tokens ``start:end`` of sentence ``sentence``, read as ``[CLS] tokens [SEP]``."""

    sentence: int
    start: int
    end: int


def windows(n_tokens: int, max_len: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` a sentence of ``n_tokens`` is read in: ``max_len - 2``
    tokens at most ([CLS] and [SEP] added), starts ``stride`` apart, the last one ending at the
    sentence's end; one window when the sentence fits."""
    width = max_len - 2
    if width < 1 or not 1 <= stride <= width:
        raise ValueError(f"stride {stride} must be 1..{width} for max_len {max_len}")
    out = [(0, min(n_tokens, width))]
    while out[-1][1] < n_tokens:
        start = min(out[-1][0] + stride, n_tokens - width)
        out.append((start, start + width))
    return out


def make_windows(aligned: Sequence[Aligned], max_len: int, stride: int) -> list[Window]:
    return [
        Window(i, a, b)
        for i, sent in enumerate(aligned)
        for a, b in windows(len(sent.ids), max_len, stride)
    ]


def window_ids(w: Window, aligned: Sequence[Aligned], cls_id: int, sep_id: int) -> list[int]:
    return [cls_id, *aligned[w.sentence].ids[w.start : w.end], sep_id]


def window_labels(w: Window, aligned: Sequence[Aligned], tag_ids: Sequence[int]) -> np.ndarray:
    """Per window position: the tag id of the unit whose first token sits there, else IGNORE."""
    out = np.full(w.end - w.start + 2, IGNORE, dtype=np.int64)
    for k, t in enumerate(aligned[w.sentence].first):
        if w.start <= t < w.end:
            out[1 + t - w.start] = tag_ids[k]
    return out


def merge_windows(
    sent: Aligned, wins: Sequence[Window], logits: Sequence[np.ndarray]
) -> np.ndarray:
    """Per unit ([n_units, L]): the logits of its first token from the window where that token
    has the most context on both sides (BERT's rule for overlapping windows)."""
    width = logits[0].shape[-1] if logits else 0
    out = np.zeros((len(sent.first), width), dtype=np.float32)
    for k, t in enumerate(sent.first):
        best, score = -1, -1.0
        for j, w in enumerate(wins):
            if w.start <= t < w.end:
                s = min(t - w.start, w.end - 1 - t) + 0.01 * (w.end - w.start)
                if s > score:
                    best, score = j, s
        out[k] = logits[best][1 + t - wins[best].start]
    return out


# --------------------------------------------------------------------------- entities and metrics


def _chunk_ends(prev: str, tag: str, prev_kind: str, kind: str) -> bool:
    return (
        prev in ("E", "S")
        or (prev in ("B", "I") and tag in ("B", "S", OUTSIDE))
        or (prev != OUTSIDE and prev_kind != kind)
    )


def _chunk_starts(prev: str, tag: str, prev_kind: str, kind: str) -> bool:
    return (
        tag in ("B", "S")
        or (prev in ("E", "S", OUTSIDE) and tag in ("I", "E"))
        or (tag != OUTSIDE and prev_kind != kind)
    )


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of a tag sequence, as conlleval/seqeval read them: (type, start, end) in
    units, end exclusive."""
    out = []
    prev, prev_kind, begin = OUTSIDE, "", 0
    for i, t in enumerate([*tags, OUTSIDE]):
        tag, kind = split_tag(t)
        if _chunk_ends(prev, tag, prev_kind, kind):
            out.append((prev_kind, begin, i))
        if _chunk_starts(prev, tag, prev_kind, kind):
            begin = i
        prev, prev_kind = tag, kind
    return out


def tag_violations(sequences: Sequence[Sequence[str]]) -> int:
    """Entities opened by an I- or E- tag (no B-/S- before them): read as entities all the same."""
    return sum(
        split_tag(tags[start])[0] in ("I", "E")
        for tags in sequences
        for _, start, _ in entity_spans(tags)
    )


def entities(example: TaggedExample, tags: Sequence[str]) -> list[dict[str, Any]]:
    """``{"type", "text", "start", "end"}`` per entity: character offsets into the sentence's
    text, ``end`` exclusive (``text[start:end]`` is the entity)."""
    at = example.char_starts()
    text = example.text
    return [
        {"type": kind, "text": text[at[s] : at[e]], "start": at[s], "end": at[e]}
        for kind, s, e in entity_spans(tags)
    ]


def clue_label(found: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[list[int]]]]:
    """CLUENER's ``{TYPE: {entity text: [[start, end], ...]}}`` (end inclusive) from
    :func:`entities` records (end exclusive)."""
    out: dict[str, dict[str, list[list[int]]]] = {}
    for e in found:
        out.setdefault(e["type"], {}).setdefault(e["text"], []).append([e["start"], e["end"] - 1])
    return out


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1 (exact span and type), micro over all entities, and
    per type (``support``: gold entities, ``predicted``: predicted ones)."""
    g = {(i, *e) for i, tags in enumerate(gold) for e in entity_spans(tags)}
    p = {(i, *e) for i, tags in enumerate(pred) for e in entity_spans(tags)}
    ok = g & p
    count = {name: Counter(e[1] for e in s) for name, s in (("g", g), ("p", p), ("ok", ok))}
    per_type = {
        kind: {
            **_prf(count["ok"][kind], count["p"][kind], count["g"][kind]),
            "support": count["g"][kind],
            "predicted": count["p"][kind],
        }
        for kind in sorted(set(count["g"]) | set(count["p"]))
    }
    return {
        **_prf(len(ok), len(p), len(g)),
        "gold_entities": len(g),
        "predicted_entities": len(p),
        "correct_entities": len(ok),
        "per_type": per_type,
    }
