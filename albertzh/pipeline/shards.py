"""make-shards: words dataset + vocab -> pretraining instances (SOP pairs, word starts, masks).

Work unit *i* is input part *i*; it becomes output part *i*, streamed batch by batch into
Parquet row groups of at most ``row_group_rows`` instances, so memory stays flat however large
the corpus is. Every random choice of unit *i*, copy *d* comes from generators seeded with
``(seed, i, d)``, so the bytes of each part do not depend on ``--workers``.

Per document (google-research/albert ``create_instances_from_document``; the deliberate
differences are said where they occur):

1. Each sentence is tokenized; word boundaries from the segment stage are aligned to tokens
   through the character offsets (see :func:`align_sentences`).
2. A sentence longer than ``max_seq_len - 3`` tokens is cut into pieces at word boundaries
   (albert would truncate it and lose the rest).
3. Sentences are gathered into a chunk until it reaches the target length: ``max_seq_len - 3``,
   or with probability ``short_seq_prob`` a random length in ``[2, max_seq_len - 3]``. The target
   is drawn for every instance (albert draws it once per document), so ``short_seq_prob`` is
   the fraction of instances with a short target.
4. The chunk is split at a random sentence boundary into A and B. A chunk of one sentence is
   split at a random word boundary inside it instead (albert would take B from another
   document; we never pair two documents).
5. With probability 0.5 A and B are swapped: ``sop_label`` 1 (0 = in order).
6. The pair is truncated as albert does: drop a token from the front or the back (coin flip)
   of the longer side until it fits.

Static masking (``--masking static``) masks each instance with :mod:`albertzh.data.masking`
and writes ``dupe_factor`` copies of the data, each with its own chunking, SOP swaps and masks.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from albertzh import outputs
from albertzh.config import CorpusStageConfig, PathOrURL
from albertzh.console import Summary, progress
from albertzh.data import dataset as ds
from albertzh.data import fs
from albertzh.data.masking import MaskingOptions, mask_batch
from albertzh.errors import DatasetError, InputError

STAGE = "make-shards"
INPUT_STAGE = "segment"
WORDS_COLUMNS: dict[str, pa.DataType] = {
    "doc_id": pa.string(),
    "sentences": pa.list_(pa.string()),
    "word_lens": pa.list_(pa.list_(pa.int32())),
}
INSTANCE_FIELDS = [
    ("input_ids", pa.list_(pa.int32())),
    ("token_type_ids", pa.list_(pa.int8())),
    ("word_starts", pa.list_(pa.bool_())),
    ("sop_label", pa.int8()),
]
STATIC_FIELDS = [
    ("masked_positions", pa.list_(pa.int32())),
    ("masked_ids", pa.list_(pa.int32())),
]
INPUT_BATCH_DOCS = 256  # documents read per batch (fixed: the output must not depend on it)


class ShardsConfig(CorpusStageConfig):
    """Flags of ``albertzh make-shards``."""

    input: PathOrURL = Field(
        ...,
        description="Words dataset directory (the output of segment): a local path or a URL.",
        json_schema_extra={"argument": True},
    )
    vocab: Path = Field(
        ...,
        description="Vocab directory (build-vocab output), a model directory, or a vocab.txt / "
        "spiece.model file (local).",
    )
    max_seq_len: int = Field(
        128, ge=5, le=65536, description="Longest instance, [CLS] A [SEP] B [SEP] included."
    )
    short_seq_prob: float = Field(
        0.1, ge=0.0, le=1.0, description="Fraction of instances given a random shorter target."
    )
    masking: Literal["dynamic", "static"] = Field(
        "dynamic",
        description="dynamic: store word starts, pretrain masks every batch afresh; static: "
        "store the masks (dupe-factor copies).",
    )
    dupe_factor: int | None = Field(
        None,
        ge=1,
        description="Copies of the data, each with its own chunking, SOP swaps (and masks). "
        "Default 10 with --masking static, 1 with dynamic.",
    )
    masked_lm_prob: float = Field(
        0.15,
        gt=0.0,
        le=1.0,
        description="Fraction of tokens to mask (static; with dynamic, pretrain reads it from the manifest).",
    )
    max_predictions: int = Field(
        20, ge=1, description="At most this many masked tokens per instance (as --masked-lm-prob)."
    )
    ngram: int = Field(
        3,
        ge=1,
        le=10,
        description="Mask n-grams of up to this many words, p(n) proportional to 1/n (as --masked-lm-prob).",
    )
    whole_word: bool = Field(
        True,
        description="Mask whole jieba words; --no-whole-word masks single tokens (as --masked-lm-prob).",
    )
    seed: int = Field(
        12345, ge=0, description="Seed of every random choice; same seed, same bytes."
    )
    row_group_rows: int = Field(
        2048, ge=1, description="Instances per Parquet row group (bounds reader memory)."
    )
    verify: bool = Field(False, description=ds.VERIFY_HELP)

    @model_validator(mode="after")
    def _check_lengths(self) -> ShardsConfig:
        if self.max_predictions > self.max_seq_len:
            raise ValueError(
                f"--max-predictions {self.max_predictions} exceeds --max-seq-len {self.max_seq_len}"
            )
        return self

    @property
    def copies(self) -> int:
        if self.dupe_factor is not None:
            return self.dupe_factor
        return 10 if self.masking == "static" else 1

    def masking_options(self) -> MaskingOptions:
        return MaskingOptions(
            masked_lm_prob=self.masked_lm_prob,
            max_predictions=self.max_predictions,
            ngram=self.ngram,
            whole_word=self.whole_word,
        )


# --------------------------------------------------------------------------- vocab


def open_vocab(path: Path) -> Any:
    """Load the tokenizer, turning any failure into one InputError naming ``--vocab``."""
    from albertzh.tokenizer import load_tokenizer

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: --vocab: no such vocab directory or file")
    try:
        return load_tokenizer(path)
    except InputError as exc:
        raise InputError(f"{exc} (--vocab)") from None
    except Exception as exc:  # a corrupt file the libraries choke on
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: --vocab: cannot load the vocab ({first})") from None


def continuation_table(tok: Any) -> np.ndarray:
    """``table[id]`` is True for WordPiece continuation pieces (``##x``): they never start a word."""
    table = np.zeros(tok.vocab_size, dtype=bool)
    if tok.kind == "char":
        pieces = tok.convert_ids_to_tokens(range(tok.vocab_size))
        table[[i for i, p in enumerate(pieces) if p.startswith("##") and len(p) > 2]] = True
    return table


# --------------------------------------------------------------------------- word alignment


def segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``out[i] = values[offsets[i]:offsets[i + 1]].sum()`` (0 for empty segments)."""
    out = np.zeros(len(offsets) - 1, dtype=np.int64)
    nonempty = offsets[:-1] < offsets[1:]
    if values.size and nonempty.any():
        out[nonempty] = np.add.reduceat(values, offsets[:-1][nonempty])
    return out


def align_sentences(
    tok: Any,
    is_cont: np.ndarray,
    sentences: Sequence[str],
    lens_flat: np.ndarray,
    lens_offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize sentences and mark the tokens that start a jieba word.

    ``lens_flat[lens_offsets[i]:lens_offsets[i+1]]`` are the word lengths of sentence i, which
    add up to its length. Returns flat ``(ids, word_starts, token_offsets)``: sentence i has
    tokens ``token_offsets[i]:token_offsets[i+1]``.

    Rule: a token starts a word iff (a) its start offset is the start of a jieba word, (b) it
    is not a WordPiece ``##`` continuation, and (c) no earlier token of the sentence starts at
    the same offset (a zero-width spm "▁" piece and the piece after it form one unit). A token
    that spans a word boundary (spm pieces can) belongs to the word it starts in, and the word
    it runs into is merged with that one: no token starts at the boundary, so the tokens up to
    the next word start form one masking unit. The first token of a sentence always starts a
    word. Special tokens written in the text become [UNK].
    """
    enc = tok.encode_arrays(list(sentences))
    n_sent = len(enc)
    tok_off = enc.bounds
    counts = np.diff(tok_off)
    n = int(tok_off[-1])
    ids = enc.ids.copy()
    starts = enc.starts  # offsets into each sentence

    # Character positions are made global by laying the sentences end to end; the word lengths
    # of a sentence add up to its length, so their running sum gives global word starts.
    char_base = np.zeros(n_sent + 1, dtype=np.int64)
    np.cumsum(segment_sums(lens_flat, lens_offsets), out=char_base[1:])
    word_start_mark = np.zeros(int(char_base[-1]) + 1, dtype=bool)
    word_start_mark[np.cumsum(lens_flat) - lens_flat] = True

    sent_of_tok = np.repeat(np.arange(n_sent), counts)
    gstart = char_base[sent_of_tok] + starts
    ws = word_start_mark[np.minimum(gstart, word_start_mark.size - 1)] & ~is_cont[ids]
    ws &= gstart < char_base[sent_of_tok + 1]  # a zero-width piece at the very end starts nothing
    same_as_prev = np.zeros(n, dtype=bool)
    same_as_prev[1:] = gstart[1:] == gstart[:-1]
    ws &= ~same_as_prev
    first = tok_off[:-1][counts > 0]
    ws[first] = True
    special = np.isin(ids, np.fromiter(tok.special_ids, dtype=np.int32))
    if special.any():
        ids[special] = tok.unk_id
    return ids, ws, tok_off


def align_words(
    tok: Any, sentences: Sequence[str], word_lens: Sequence[Sequence[int]]
) -> list[tuple[list[int], list[bool]]]:
    """Convenience form of :func:`align_sentences`: per sentence ``(ids, word_starts)``."""
    lens_offsets = np.zeros(len(word_lens) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in word_lens], out=lens_offsets[1:])
    lens_flat = np.fromiter(chain.from_iterable(word_lens), dtype=np.int64)
    ids, ws, off = align_sentences(tok, continuation_table(tok), sentences, lens_flat, lens_offsets)
    return [
        (ids[off[i] : off[i + 1]].tolist(), ws[off[i] : off[i + 1]].tolist())
        for i in range(len(sentences))
    ]


# --------------------------------------------------------------------------- instances


@dataclass
class Counters:
    """Per-part counters (summed into the manifest's ``stats``). Documents, sentences, tokens
    and text bytes count the input once; the instance counters add up over all copies."""

    docs: int = 0
    text_bytes: int = 0
    empty_docs: int = 0
    sentences: int = 0
    long_sentences_split: int = 0
    tokens: int = 0
    instances: int = 0
    instance_tokens: int = 0
    short_target: int = 0
    sop_swapped: int = 0
    single_sentence_split: int = 0
    dropped_too_short: int = 0
    truncated_tokens: int = 0
    masked_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Instance:
    """One instance; the token columns are NumPy arrays (int32 ids, int8 types, bool starts)."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    word_starts: np.ndarray
    sop_label: int
    extra: dict[str, Any] = field(default_factory=dict)


Sentence = tuple[Sequence[int], Sequence[bool]]


@dataclass
class Doc:
    """One document as flat token arrays; sentence k is ``ids[bounds[k]:bounds[k + 1]]``."""

    ids: np.ndarray  # int32
    word_starts: np.ndarray  # bool
    bounds: list[int]

    @classmethod
    def from_sentences(cls, sentences: Sequence[Sentence]) -> Doc:
        ids: list[int] = []
        ws: list[bool] = []
        bounds = [0]
        for s_ids, s_ws in sentences:
            ids.extend(s_ids)
            ws.extend(s_ws)
            bounds.append(len(ids))
        return cls(np.asarray(ids, dtype=np.int32), np.asarray(ws, dtype=bool), bounds)


def _cut_points(ws: np.ndarray, start: int, end: int, limit: int) -> list[int]:
    """Inner cut positions that split ``[start, end)`` into pieces of at most ``limit`` tokens,
    at word starts where possible (a hard cut inside a word longer than ``limit``)."""
    cuts = []
    i = start
    while end - i > limit:
        j = i + limit
        while j > i + 1 and not ws[j]:
            j -= 1
        if not ws[j]:
            j = i + limit
            ws[j] = True  # the cut piece begins a new unit
        cuts.append(j)
        i = j
    return cuts


def trim_counts(la: int, lb: int, max_tokens: int, coins: np.ndarray) -> tuple[int, int, int, int]:
    """albert's ``truncate_seq_pair`` in closed form: tokens dropped from
    ``(front of A, back of A, front of B, back of B)``.

    albert removes one token per step from the longer side (B on a tie), from the front when the
    step's coin is True. So the longer side first shrinks to the other's length, then B and A
    alternate; ``coins`` holds one coin per step (``la + lb - max_tokens`` of them).
    """
    excess = la + lb - max_tokens
    if excess <= 0:
        return 0, 0, 0, 0
    d = min(excess, abs(la - lb))
    head, alt = coins[:d], coins[d:excess]
    b_steps, a_steps = alt[0::2], alt[1::2]
    fa, na = int(np.count_nonzero(a_steps)), len(a_steps)
    fb, nb = int(np.count_nonzero(b_steps)), len(b_steps)
    if la > lb:
        fa, na = fa + int(np.count_nonzero(head)), na + d
    else:
        fb, nb = fb + int(np.count_nonzero(head)), nb + d
    return fa, na - fa, fb, nb - fb


_TRUE = np.ones(2, dtype=bool)
_TRUE.flags.writeable = False


@functools.lru_cache(maxsize=16)
def _id_array(token_id: int) -> np.ndarray:
    """A read-only one-element int32 array (the [CLS]/[SEP] pieces of every instance)."""
    a = np.array([token_id], dtype=np.int32)
    a.flags.writeable = False
    return a


def document_instances(
    doc: Doc,
    rng: np.random.Generator,
    *,
    max_seq_len: int,
    short_seq_prob: float,
    cls_id: int,
    sep_id: int,
    counters: Counters | None = None,
) -> Iterator[Instance]:
    """SOP instances of one document (see the module docstring for the rules)."""
    c = counters if counters is not None else Counters()
    max_tokens = max_seq_len - 3
    ids, ws = doc.ids, doc.word_starts
    cls, sep = _id_array(cls_id), _id_array(sep_id)
    one, two = _TRUE[:1], _TRUE
    # Sentence ends (token offsets); empty sentences vanish, long ones are cut at word starts.
    cuts = [doc.bounds[0]]
    for k in range(1, len(doc.bounds)):
        s, e = cuts[-1], doc.bounds[k]
        if e <= s:
            continue
        if e - s > max_tokens:
            c.long_sentences_split += 1
            cuts.extend(_cut_points(ws, s, e, max_tokens))
        cuts.append(e)
    n_sent = len(cuts) - 1
    if n_sent == 0:
        c.empty_docs += 1
        return

    def draw_target() -> int:
        if short_seq_prob > 0 and rng.random() < short_seq_prob:
            c.short_target += 1
            return int(rng.integers(2, max_tokens + 1))
        return max_tokens

    target = draw_target()
    first = 0  # the current chunk is sentences first..i
    for i in range(n_sent):
        start, end = cuts[first], cuts[i + 1]
        last = i == n_sent - 1
        if not last and end - start < target:
            continue
        n_chunk = i + 1 - first
        first = i + 1
        if n_chunk >= 2:
            mid = cuts[i + 1 - n_chunk + int(rng.integers(1, n_chunk))]
        elif end - start < 2:
            c.dropped_too_short += 1
            if not last:
                target = draw_target()
            continue
        else:
            c.single_sentence_split += 1
            inner = np.flatnonzero(ws[start + 1 : end]) + (start + 1)
            mid = int(rng.choice(inner)) if len(inner) else int(rng.integers(start + 1, end))
        (a0, a1), (b0, b1) = (start, mid), (mid, end)
        swap = bool(rng.random() < 0.5)
        if swap:
            (a0, a1), (b0, b1) = (b0, b1), (a0, a1)
            c.sop_swapped += 1
        la, lb = a1 - a0, b1 - b0
        if la + lb > max_tokens:
            excess = la + lb - max_tokens
            c.truncated_tokens += excess
            fa, ba, fb, bb = trim_counts(la, lb, max_tokens, rng.random(excess) < 0.5)
            a0, a1, b0, b1 = a0 + fa, a1 - ba, b0 + fb, b1 - bb
        input_ids = np.concatenate((cls, ids[a0:a1], sep, ids[b0:b1], sep))
        word_starts = np.concatenate((two, ws[a0 + 1 : a1], two, ws[b0 + 1 : b1], one))
        types = np.zeros(len(input_ids), dtype=np.int8)
        types[a1 - a0 + 2 :] = 1
        c.instances += 1
        c.instance_tokens += len(input_ids)
        yield Instance(input_ids, types, word_starts, int(swap))
        if not last:
            target = draw_target()


# --------------------------------------------------------------------------- one part


@dataclass
class _Job:
    index: int
    source: str
    out_dir: str
    vocab: str
    config: dict[str, Any]
    origin: dict[str, Any]  # recorded in the part's footer (dataset.origin_of)


_TOKENIZER: dict[tuple, tuple[Any, np.ndarray]] = {}


def _tokenizer(path: str) -> tuple[Any, np.ndarray]:
    """The tokenizer (and continuation table) of ``--vocab``, loaded once per process while
    the vocab files stay the same (its code point table is built on first use)."""
    p = Path(path)
    try:
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        stats = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    except OSError:
        tok = open_vocab(p)  # names the problem
        return tok, continuation_table(tok)
    key = (str(p.resolve()), stats)
    if key not in _TOKENIZER:
        tok = open_vocab(p)
        _TOKENIZER.clear()
        _TOKENIZER[key] = (tok, continuation_table(tok))
    return _TOKENIZER[key]


def _list_array(
    offsets: Sequence[int] | np.ndarray, values: np.ndarray, typ: pa.DataType
) -> pa.Array:
    return pa.ListArray.from_arrays(
        pa.array(np.asarray(offsets, dtype=np.int32)), pa.array(values, type=typ)
    )


class _PartWriter:
    """Streams instances of one part into a temp Parquet file; renamed into place at the end."""

    def __init__(self, out_dir: fs.Location, index: int, static: bool, row_group_rows: int) -> None:
        self.final = fs.join(out_dir, ds.part_name(index))
        self.tmp = fs.tmp_for(self.final)
        self.schema = pa.schema(INSTANCE_FIELDS + (STATIC_FIELDS if static else []))
        filesystem, where = fs.split(self.tmp)
        self.writer = pq.ParquetWriter(
            where, self.schema, compression="zstd", store_schema=False, filesystem=filesystem
        )
        self.rows = row_group_rows
        self.buf: list[Instance] = []

    def extend(self, rows: list[Instance]) -> None:
        """Buffer rows; write full row groups of exactly ``row_group_rows`` as they fill."""
        self.buf.extend(rows)
        while len(self.buf) >= self.rows:
            self.write(self.buf[: self.rows])
            self.buf = self.buf[self.rows :]

    def write(self, rows: list[Instance]) -> None:
        if not rows:
            return
        cols: dict[str, pa.Array] = {}
        lengths = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r.input_ids) for r in rows], out=lengths[1:])
        flat = lambda key, dt: np.concatenate([getattr(r, key) for r in rows]).astype(dt)  # noqa: E731
        cols["input_ids"] = _list_array(lengths, flat("input_ids", np.int32), pa.int32())
        cols["token_type_ids"] = _list_array(lengths, flat("token_type_ids", np.int8), pa.int8())
        cols["word_starts"] = _list_array(lengths, flat("word_starts", np.bool_), pa.bool_())
        cols["sop_label"] = pa.array(np.array([r.sop_label for r in rows], np.int8))
        if "masked_positions" in self.schema.names:
            mlen = [0]
            for r in rows:
                mlen.append(mlen[-1] + len(r.extra["positions"]))
            pos = np.concatenate([r.extra["positions"] for r in rows]).astype(np.int32)
            lab = np.concatenate([r.extra["labels"] for r in rows]).astype(np.int32)
            cols["masked_positions"] = _list_array(mlen, pos, pa.int32())
            cols["masked_ids"] = _list_array(mlen, lab, pa.int32())
        table = pa.Table.from_arrays([cols[n] for n in self.schema.names], schema=self.schema)
        self.writer.write_table(table, row_group_size=len(rows))

    def close(self, stats: dict[str, Any], origin: dict[str, Any]) -> None:
        self.write(self.buf)
        self.buf = []
        meta = ds.part_metadata(stats, origin)
        self.writer.add_key_value_metadata({k.decode(): v.decode() for k, v in meta.items()})
        self.writer.close()
        fs.commit(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            fs.remove(self.tmp, missing_ok=True)


def _docs_of_batch(batch: pa.RecordBatch, source: str, tok: Any, is_cont: np.ndarray) -> list[Doc]:
    """Token ids, word starts and sentence bounds of every document of one input batch."""
    sentences = batch.column("sentences")
    word_lens = batch.column("word_lens")
    s_off = sentences.offsets.to_numpy()
    s_off = s_off - s_off[0]
    w_outer = word_lens.offsets.to_numpy()
    w_outer = w_outer - w_outer[0]
    if sentences.null_count or word_lens.null_count or not np.array_equal(s_off, w_outer):
        bad = _first_bad_doc(batch)
        raise DatasetError(f"{source}: document {bad}: 'word_lens' does not match 'sentences'")
    flat_sent = sentences.flatten()
    inner = word_lens.flatten()
    l_off = inner.offsets.to_numpy().astype(np.int64)
    lens_flat = inner.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    l_off = l_off - l_off[0]
    if flat_sent.null_count:
        raise DatasetError(f"{source}: column 'sentences' holds a null sentence")
    texts = flat_sent.to_pylist()
    sent_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    sums = segment_sums(lens_flat, l_off)
    if (lens_flat < 0).any():
        raise DatasetError(f"{source}: column 'word_lens' holds negative lengths")
    if not np.array_equal(sums, sent_len):
        k = int(np.nonzero(sums != sent_len)[0][0])
        doc = int(np.searchsorted(s_off, k, side="right") - 1)
        raise DatasetError(
            f"{source}: document {_doc_id(batch, doc)}: word_lens of sentence {k - s_off[doc]} add "
            f"up to {sums[k]}, the sentence has {sent_len[k]} characters"
        )
    ids, ws, t_off = align_sentences(tok, is_cont, texts, lens_flat, l_off)
    t = t_off.tolist()
    docs = []
    for d in range(len(s_off) - 1):
        lo, hi = int(s_off[d]), int(s_off[d + 1])
        t0, t1 = t[lo], t[hi]
        docs.append(Doc(ids[t0:t1], ws[t0:t1], [x - t0 for x in t[lo : hi + 1]]))
    return docs


def _utf8_bytes(strings: pa.Array) -> int:
    """Total UTF-8 bytes of a string array (from its offsets buffer)."""
    if len(strings) == 0:
        return 0
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)
    return int(offsets[strings.offset + len(strings)] - offsets[strings.offset])


def _doc_id(batch: pa.RecordBatch, row: int) -> str:
    if "doc_id" in batch.schema.names:
        return repr(batch.column("doc_id")[row].as_py())
    return f"#{row}"


def _first_bad_doc(batch: pa.RecordBatch) -> str:
    s, w = batch.column("sentences").to_pylist(), batch.column("word_lens").to_pylist()
    for i, (a, b) in enumerate(zip(s, w, strict=True)):
        if a is None or b is None or len(a) != len(b):
            return _doc_id(batch, i)
    return "?"


def _mask_static(
    rows: list[Instance], tok: Any, opts: MaskingOptions, rng: np.random.Generator
) -> int:
    """Mask ``rows`` in place (one padded batch); returns the number of masked tokens."""
    if not rows:
        return 0
    width = max(len(r.input_ids) for r in rows)
    ids = np.full((len(rows), width), tok.pad_id, dtype=np.int32)
    wss = np.zeros((len(rows), width), dtype=bool)
    for k, r in enumerate(rows):
        ids[k, : len(r.input_ids)] = r.input_ids
        wss[k, : len(r.word_starts)] = r.word_starts
    out = mask_batch(
        ids,
        wss,
        rng,
        opts,
        vocab_size=tok.vocab_size,
        mask_id=tok.mask_id,
        special_ids=tok.special_ids,
    )
    for k, r in enumerate(rows):
        n = int(out.num_predictions[k])
        r.input_ids = out.input_ids[k, : len(r.input_ids)].copy()
        r.extra = {"positions": out.positions[k, :n], "labels": out.labels[k, :n]}
    return int(out.num_predictions.sum())


def make_part(job: _Job) -> dict[str, Any]:
    """Build output part ``job.index`` from one words part; returns its counters.

    Each input batch is tokenized once and turned into ``copies`` sets of instances, copy d
    drawing from generators seeded with ``(seed, index, d)``.
    """
    cfg = ShardsConfig.model_validate(job.config)
    tok, is_cont = _tokenizer(job.vocab)
    static = cfg.masking == "static"
    opts = cfg.masking_options()
    c = Counters()
    rngs = [np.random.default_rng([cfg.seed, job.index, d, 0]) for d in range(cfg.copies)]
    mask_rngs = [np.random.default_rng([cfg.seed, job.index, d, 1]) for d in range(cfg.copies)]
    # Locations travel as strings; each worker process resolves a URL's filesystem itself.
    writer = _PartWriter(fs.location(job.out_dir), job.index, static, cfg.row_group_rows)
    try:
        for batch in ds.iter_batches(
            fs.location(job.source), ["doc_id", "sentences", "word_lens"], INPUT_BATCH_DOCS
        ):
            docs = _docs_of_batch(batch, job.source, tok, is_cont)
            c.docs += len(docs)
            c.text_bytes += _utf8_bytes(batch.column("sentences").flatten())
            c.sentences += sum(len(doc.bounds) - 1 for doc in docs)
            c.tokens += sum(len(doc.ids) for doc in docs)
            for d in range(cfg.copies):
                rows = [
                    inst
                    for doc in docs
                    for inst in document_instances(
                        doc,
                        rngs[d],
                        max_seq_len=cfg.max_seq_len,
                        short_seq_prob=cfg.short_seq_prob,
                        cls_id=tok.cls_id,
                        sep_id=tok.sep_id,
                        counters=c,
                    )
                ]
                if static:
                    c.masked_tokens += _mask_static(rows, tok, opts, mask_rngs[d])
                writer.extend(rows)
        writer.close(c.as_dict(), job.origin)
    except BaseException:
        writer.abort()
        raise
    return c.as_dict()


# --------------------------------------------------------------------------- the stage


def _check_input(cfg: ShardsConfig) -> tuple[dict[str, Any], list[fs.Location]]:
    manifest, parts = ds.open_dataset(cfg.input, INPUT_STAGE, WORDS_COLUMNS, verify=cfg.verify)
    if not parts:
        raise DatasetError(f"{cfg.input}: the words dataset has no parts")
    return manifest, parts


def run(cfg: ShardsConfig) -> Summary:
    """Turn a words dataset into an instances dataset; see the module docstring."""
    outputs.check_apart(cfg.output, {"INPUT": cfg.input, "--vocab": cfg.vocab})
    shard = (cfg.shard_index, cfg.num_shards)
    with ds.output_lock(cfg.output, break_lock=cfg.break_lock, shard=shard):
        return _run(cfg)


def _run(cfg: ShardsConfig) -> Summary:
    t0 = time.perf_counter()
    # Arrow's default allocator (mimalloc) keeps freed pages, so peak RSS would grow with the
    # size of the parts read; the system allocator returns them (same speed here).
    pa.set_memory_pool(pa.system_memory_pool())
    manifest_in, parts = _check_input(cfg)
    tok = open_vocab(cfg.vocab)
    if tok.vocab_size > np.iinfo(np.int32).max:
        raise InputError(f"{cfg.vocab}: --vocab: {tok.vocab_size} tokens do not fit int32 ids")
    shard = (cfg.shard_index, cfg.num_shards)
    # What the words and vocab hold, not the paths they were given: shards agree on it, and
    # --resume keeps only parts made from it (refused before the output is touched).
    identities = {"input": ds.dataset_identity(manifest_in), "vocab": tok.hash}
    origin = ds.origin_of(STAGE, cfg, identities)
    if cfg.resume:
        schema = pa.schema(INSTANCE_FIELDS + (STATIC_FIELDS if cfg.masking == "static" else []))
        ds.check_resume(cfg.output, origin, total_parts=len(parts), shard=shard, schema=schema)
    out = ds.prepare_output(cfg.output, resume=cfg.resume, overwrite=cfg.overwrite, shard=shard)
    mine = ds.select_shard(parts, cfg.shard_index, cfg.num_shards)
    todo = [(i, p) for i, p in mine if not (cfg.resume and ds.part_complete(out, i))]
    config = cfg.model_dump(mode="json")
    jobs = [_Job(i, str(p), str(out), str(cfg.vocab), config, origin) for i, p in todo]
    with progress("make-shards", total=len(jobs), unit="parts") as bar:
        done_bytes = 0
        for counts in ds.map_units(make_part, jobs, cfg.workers):
            done_bytes += counts["text_bytes"]
            bar.advance()
    extra = {
        "vocab": {
            "kind": tok.kind,
            "size": tok.vocab_size,
            "hash": tok.hash,
            "special_ids": tok.special_ids_by_role,
        },
        "max_seq_len": cfg.max_seq_len,
        "masking": cfg.masking,
        "masking_options": cfg.masking_options().model_dump(mode="json"),
        "dupe_factor": cfg.copies,
        "short_seq_prob": cfg.short_seq_prob,
        "seed": cfg.seed,
    }
    manifest = ds.finish_output(
        out,
        STAGE,
        cfg,
        [str(cfg.input), str(cfg.vocab)],
        extra,
        shard=shard,
        total_parts=len(parts),
        digest=ds.config_digest(cfg, identities),
    )
    st = manifest["stats"]
    seconds = time.perf_counter() - t0
    n = max(1, st.get("instances", 0))
    figures: dict[str, Any] = {
        "output": str(out),
        "parts": {"written": len(jobs), "skipped": len(mine) - len(jobs)},
        "documents": st.get("docs", 0),
        "sentences": st.get("sentences", 0),
        "tokens": st.get("tokens", 0),
        "instances": manifest["rows"],
        "mean_length": round(st.get("instance_tokens", 0) / n, 1),
        "sop_swapped": round(st.get("sop_swapped", 0) / n, 3),
        "short_target": round(st.get("short_target", 0) / n, 3),
        "masking": cfg.masking,
        "copies": cfg.copies,
        "vocab": f"{tok.kind} {tok.vocab_size} {tok.hash[:12]}",
        "seconds": round(seconds, 2),
        "text_mb_per_s": round(done_bytes / 1e6 / max(seconds, 1e-9), 2),
    }
    if (status := ds.shard_figure(out, shard)) is not None:
        figures["dataset"] = status
    if cfg.masking == "static":
        figures["masked_per_instance"] = round(st.get("masked_tokens", 0) / n, 2)
    return Summary(STAGE, figures)
