"""segment: split every document into sentences and every sentence into jieba words.

Input: a docs dataset (``clean`` output). Output rows (words dataset, see docs/internals.md):
``doc_id: string, sentences: list<string>, word_lens: list<list<int32>>``. ``word_lens[i]``
are the lengths (in characters) of the words of ``sentences[i]``; they add up to
``len(sentences[i])``, so the words are slices of the sentence (:func:`words_of`).

How it runs: part *i* of the input becomes part *i* of the output (``--resume`` keeps complete
parts made from the same input, user dict and options, and refuses any other;
``--shard-index/--num-shards`` pick a disjoint subset of parts). Inside a part the main
process streams batches of ``--batch-docs`` documents to ``--workers`` processes, keeps at most
``2 * workers`` batches in flight, and writes the results in input order, so the output is
byte-identical for any number of workers.

Engines: ``rjieba`` (jieba-rs, Rust) and ``jieba`` (the Python original) share the dictionary,
the DAG + max-probability route, the HMM for unknown words, and the user-dict rules
(``word [freq] [tag]`` lines fed to ``add_word``). rjieba has no ``load_userdict``, so albertzh
parses the file itself (with jieba's rules) and calls ``add_word`` on either engine.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from albertzh import outputs
from albertzh.config import CorpusStageConfig, PathOrURL
from albertzh.console import Summary, progress
from albertzh.data import dataset as ds
from albertzh.data.fs import Location
from albertzh.errors import ConfigError, InputError
from albertzh.files import sha256_file

STAGE = ds.WORDS_STAGE
INPUT_STAGE = ds.DOCS_STAGE

WORDS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("sentences", pa.list_(pa.string())),
        ("word_lens", pa.list_(pa.list_(pa.int32()))),
    ]
)
DOCS_COLUMNS = {"doc_id": pa.string(), "text": pa.string()}


def words_of(sentence: str, lens: Sequence[int]) -> list[str]:
    """The words of ``sentence`` given their lengths (a row's ``word_lens[i]``)."""
    out, pos = [], 0
    for n in lens:
        out.append(sentence[pos : pos + n])
        pos += n
    if pos != len(sentence):
        raise ValueError(f"word lengths add up to {pos}, sentence has {len(sentence)} characters")
    return out


class SegmentConfig(CorpusStageConfig):
    """Options of ``albertzh segment``."""

    input: PathOrURL = Field(
        ...,
        description="Docs dataset directory (the output of 'albertzh clean'): a local path or a URL.",
        json_schema_extra={"argument": True},
    )
    engine: Literal["auto", "rjieba", "jieba"] = Field(
        "auto",
        description="Segmenter: 'rjieba' (Rust, fast), 'jieba' (Python), 'auto' = rjieba when installed.",
    )
    user_dict: Path | None = Field(
        None,
        description="jieba user dictionary: one word per line, optionally followed by a frequency and a tag ('云计算 5 n'), UTF-8; applied with either engine.",
    )
    hmm: bool = Field(
        True, description="Use jieba's HMM to join characters of words not in the dictionary."
    )
    batch_docs: int = Field(
        256,
        ge=1,
        description="Documents per batch sent to a worker (memory/latency knob; never changes the output).",
    )
    verify: bool = Field(False, description=ds.VERIFY_HELP)


# --------------------------------------------------------------------------- user dictionary

_TAG = re.compile(r"^[A-Za-z]+$")
# jieba's finalseg: how an out-of-dictionary run of non-Chinese characters is split.
_ENG_RUN = re.compile(r"([a-zA-Z0-9]+(?:\.\d+)?%?)")
# A run jieba might split has one of +#&._%- next to another run character.
_SPLIT_HINT = re.compile(r"[a-zA-Z0-9+#&._%\-][+#&._%\-]|[+#&._%\-][a-zA-Z0-9+#&._%\-]")


def read_user_dict(path: Path) -> list[tuple[str, int | None, str | None]]:
    """Parse a jieba user dict: ``word [freq] [tag]`` per line; blank lines are skipped.

    The word is the first field (no spaces, as in jieba's own dict.txt); ``freq`` a
    non-negative integer; ``tag`` letters. Anything else is an error naming ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: user dict not found (--user-dict)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: user dict is not UTF-8 (byte {exc.start})") from exc
    entries: list[tuple[str, int | None, str | None]] = []
    for lineno, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        word, freq, tag = fields[0], None, None
        rest = fields[1:]
        if rest and rest[0].isdigit():
            freq = int(rest.pop(0))
        if rest and _TAG.match(rest[0]):
            tag = rest.pop(0)
        if rest:
            raise InputError(
                f"{path}:{lineno}: malformed user-dict line {line.strip()!r} (expected a word, then optionally a frequency and a tag)"
            )
        entries.append((word, freq, tag))
    return entries


# --------------------------------------------------------------------------- engines


def resolve_engine(engine: str) -> str:
    """'auto' -> 'rjieba' when it can be imported, else 'jieba'; check the named one exists."""
    if engine == "auto":
        try:
            import rjieba  # noqa: F401

            return "rjieba"
        except ImportError:
            return "jieba"
    try:
        __import__(engine)
    except ImportError as exc:
        raise ConfigError(f"--engine: {engine} is not installed (pip install {engine})") from exc
    return engine


class Segmenter:
    """One engine instance with the user dict applied; ``cut(text) -> list[str]``."""

    def __init__(
        self,
        engine: str,
        user_dict: Sequence[tuple[str, int | None, str | None]] = (),
        hmm: bool = True,
    ):
        self.engine = resolve_engine(engine)
        self.hmm = hmm
        if self.engine == "rjieba":
            import rjieba

            self._jieba = rjieba.Jieba()
            if hmm:
                self._cut = lambda text: self._jieba_compat(text, self._jieba.cut(text, True))
            else:
                self._cut = lambda text: self._jieba.cut(text, False)
        else:
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)
            self._jieba = jieba.Tokenizer()
            self._jieba.initialize()
            self._cut = lambda text: self._jieba.lcut(text, HMM=hmm)
        for word, freq, tag in user_dict:
            self._jieba.add_word(word, freq, tag)

    def cut(self, text: str) -> list[str]:
        return self._cut(text)

    def _jieba_compat(self, text: str, words: list[str]) -> list[str]:
        """Make rjieba's HMM output equal jieba's for runs of ASCII letters/digits/``+#&._%-``.

        For a stretch of characters outside the dictionary, jieba's HMM step
        (``finalseg.cut``) splits the non-Chinese part with ``[a-zA-Z0-9]+(?:\\.\\d+)?%?``,
        so "4220-4230" -> "4220", "-", "4230" and "4.2k" -> "4.2", "k"; rjieba 0.2 keeps
        such a run as one word. Words in the dictionary (user dict included) stay whole.
        """
        if not _SPLIT_HINT.search(text):
            return words  # only plain letter/digit runs: nothing jieba would split
        ascii_words = {w for w in words if len(w) > 1 and w.isascii()}
        bad = {
            w
            for w in ascii_words
            if not _ENG_RUN.fullmatch(w)
            and sum(1 for x in _ENG_RUN.split(w) if x) > 1
            and not self._jieba.has_word(w)
        }
        if not bad:
            return words
        out: list[str] = []
        for w in words:
            if w in bad:
                out.extend(x for x in _ENG_RUN.split(w) if x)
            else:
                out.append(w)
        return out

    def split_doc(self, text: str) -> list[tuple[str, list[int]]]:
        """Sentences of a document (its "\\n"-separated lines, empty ones skipped) with the
        lengths of their words.

        The whole document is cut at once ("\\n" is never inside a jieba word: it splits
        jieba's blocks), then the word boundaries are cut at every "\\n".
        """
        words = self._cut(text)
        lens = list(map(len, words))
        if sum(lens) != len(text):
            raise RuntimeError(f"{self.engine} returned words that do not cover the text")
        newlines = text.count("\n")
        if newlines == 0:
            return [(text, lens)] if text else []
        if words.count("\n") == newlines:
            # Fast path: every "\n" is a word of its own; cut the length list at them.
            out: list[tuple[str, list[int]]] = []
            pos = k = 0
            for _ in range(newlines):
                j = words.index("\n", k)
                if j > k:
                    n = sum(lens[k:j])
                    out.append((text[pos : pos + n], lens[k:j]))
                    pos += n
                pos += 1
                k = j + 1
            if k < len(words):
                out.append((text[pos:], lens[k:]))
            return out
        return self._split_slow(text, words)

    @staticmethod
    def _split_slow(text: str, words: list[str]) -> list[tuple[str, list[int]]]:
        # Words holding "\n" with other characters ("\r\n"): cut inside them.
        out: list[tuple[str, list[int]]] = []
        lens: list[int] = []
        start = pos = 0
        for word in words:
            for k, piece in enumerate(word.split("\n")):
                if k:  # a "\n" ends the sentence before this piece
                    if pos > start:
                        out.append((text[start:pos], lens))
                    lens, pos = [], pos + 1
                    start = pos
                if piece:
                    lens.append(len(piece))
                    pos += len(piece)
        if pos > start:
            out.append((text[start:pos], lens))
        return out


# --------------------------------------------------------------------------- worker side

_SEGMENTER: dict[str, Any] = {}


def _get_segmenter(spec: tuple[str, tuple, bool]) -> Segmenter:
    seg = _SEGMENTER.get("seg")
    if seg is None or _SEGMENTER.get("spec") != spec:
        engine, user_dict, hmm = spec
        seg = Segmenter(engine, list(user_dict), hmm)
        _SEGMENTER.update(seg=seg, spec=spec)
    return seg


def _init_worker(spec: tuple[str, tuple, bool]) -> None:
    # Forked workers inherit the parent's loaded engine; others load it here, once.
    _get_segmenter(spec)


def segment_batch(doc_ids: list[str], texts: list[str]) -> tuple[pa.Table, dict[str, int]]:
    """Segment one batch of documents into a words table (and its counters), with the
    engine set up by :func:`_get_segmenter` in this process."""
    seg = _SEGMENTER["seg"]
    ids, sents, lens = [], [], []
    stats = {"docs_in": len(texts), "docs": 0, "empty_docs": 0, "sentences": 0, "words": 0}
    chars = 0
    for doc_id, text in zip(doc_ids, texts, strict=True):
        pairs = seg.split_doc(text or "")
        if any(not s.strip() for s, _ in pairs):
            kept = [(s, w) for s, w in pairs if s.strip()]
            stats["blank_sentences"] = stats.get("blank_sentences", 0) + len(pairs) - len(kept)
            pairs = kept
        if not pairs:
            stats["empty_docs"] += 1
            continue
        ids.append(doc_id)
        sents.append([s for s, _ in pairs])
        lens.append([w for _, w in pairs])
        stats["sentences"] += len(pairs)
        stats["words"] += sum(len(w) for _, w in pairs)
        chars += sum(len(s) for s, _ in pairs)
    stats["docs"] = len(ids)
    stats["chars"] = chars
    table = pa.table(
        {
            "doc_id": pa.array(ids, pa.string()),
            "sentences": pa.array(sents, WORDS_SCHEMA.field("sentences").type),
            "word_lens": pa.array(lens, WORDS_SCHEMA.field("word_lens").type),
        },
        schema=WORDS_SCHEMA,
    )
    return table, stats


class _Inline:
    """A stand-in executor that runs the work in this process (``--workers 1``)."""

    def submit(self, fn: Any, *args: Any) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _utf8_bytes(strings: pa.Array) -> int:
    """Total UTF-8 bytes of a string array (from its offsets buffer; nulls count 0)."""
    if len(strings) == 0:
        return 0
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)
    return int(offsets[strings.offset + len(strings)] - offsets[strings.offset])


def _segment_part(
    pool: Any,
    workers: int,
    src: Location,
    out: Location,
    index: int,
    batch_docs: int,
    bar: Any,
    origin: dict[str, Any],
) -> dict[str, int]:
    """Stream one input part through the pool into output part ``index`` (atomic)."""
    totals: dict[str, int] = {}
    tables: list[pa.Table] = []
    pending: deque[tuple[Future, int]] = deque()

    def drain(limit: int) -> None:
        while len(pending) > limit:
            fut, nbytes = pending.popleft()
            table, stats = fut.result()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + v
            tables.append(table)
            bar.advance(nbytes)

    for batch in ds.iter_batches(src, ["doc_id", "text"], batch_rows=batch_docs):
        doc_ids = batch.column("doc_id").to_pylist()
        texts = batch.column("text").to_pylist()
        nbytes = _utf8_bytes(batch.column("text"))
        totals["bytes"] = totals.get("bytes", 0) + nbytes
        pending.append((pool.submit(segment_batch, doc_ids, texts), nbytes))
        drain(2 * workers)
    drain(0)
    # One input part (bounded by clean's --chunk-mb) gives one output part: written whole,
    # atomically, with the counters in its footer.
    table = pa.concat_tables(tables) if tables else WORDS_SCHEMA.empty_table()
    ds.write_part(out, index, table, totals, origin=origin)
    return totals


# --------------------------------------------------------------------------- the stage


def run(config: SegmentConfig) -> Summary:
    """Segment a docs dataset into a words dataset."""
    outputs.check_apart(config.output, {"INPUT": config.input, "--user-dict": config.user_dict})
    shard = (config.shard_index, config.num_shards)
    with ds.output_lock(config.output, break_lock=config.break_lock, shard=shard):
        return _run(config)


def _run(config: SegmentConfig) -> Summary:
    t0 = time.perf_counter()
    # Arrow's default allocator (mimalloc) keeps freed pages, so peak RSS would grow with the
    # size of the parts read; the system allocator returns them (same speed here).
    pa.set_memory_pool(pa.system_memory_pool())
    manifest, parts = ds.open_dataset(config.input, INPUT_STAGE, DOCS_COLUMNS, verify=config.verify)
    engine = resolve_engine(config.engine)
    user_dict = tuple(read_user_dict(config.user_dict)) if config.user_dict else ()
    spec = (engine, user_dict, config.hmm)
    shard = (config.shard_index, config.num_shards)
    cfg = config.model_copy(update={"engine": engine})
    user_dict_sha = sha256_file(config.user_dict) if config.user_dict else None
    # What the input and user dict hold, not the paths they were given: shards must agree on
    # it, and --resume keeps only parts made from it.
    identities = {"input": ds.dataset_identity(manifest), "user_dict": user_dict_sha}
    # The engines give the same words (see Segmenter._jieba_compat); batch size is a knob.
    origin = ds.origin_of(STAGE, cfg, identities, ignore={"batch_docs", "engine"})
    if config.resume:
        ds.check_resume(
            config.output, origin, total_parts=len(parts), shard=shard, schema=WORDS_SCHEMA
        )
    out = ds.prepare_output(
        config.output, resume=config.resume, overwrite=config.overwrite, shard=shard
    )

    mine = ds.select_shard(parts, config.shard_index, config.num_shards)
    todo = [(i, p) for i, p in mine if not ds.part_complete(out, i)]
    _get_segmenter(spec)  # load the dictionary once, before the workers fork
    workers = config.workers
    pool: Any
    if workers > 1:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ds._pool_context(),
            initializer=_init_worker,
            initargs=(spec,),
        )
    else:
        pool = _Inline()
    totals: dict[str, int] = {}
    try:
        with pool, progress("segment", total=None, unit="bytes") as bar:
            for i, p in todo:
                stats = _segment_part(pool, workers, p, out, i, config.batch_docs, bar, origin)
                totals = ds.merge_counts([totals, stats])
    finally:
        if workers > 1:
            pool.shutdown(cancel_futures=True)

    extra = {
        "engine": engine,
        "hmm": config.hmm,
        "user_dict": (
            {
                "path": str(config.user_dict),
                "sha256": user_dict_sha,
                "words": len(user_dict),
            }
            if config.user_dict
            else None
        ),
        "parts": len(parts),
    }
    final = ds.finish_output(
        out,
        STAGE,
        cfg,
        [str(config.input)],
        extra=extra,
        shard=shard,
        total_parts=len(parts),
        digest=ds.config_digest(cfg, identities),
    )
    seconds = time.perf_counter() - t0
    mb = totals.get("bytes", 0) / 1e6
    stats = final.get("stats", {})
    status = ds.shard_figure(out, shard)
    return Summary(
        STAGE,
        {
            **({"dataset": status} if status else {}),
            "output": str(out),
            "engine": engine,
            "parts": len(mine),
            "parts_resumed": len(mine) - len(todo),
            "docs": stats.get("docs", 0),
            "empty_docs": stats.get("empty_docs", 0),
            "sentences": stats.get("sentences", 0),
            "words": stats.get("words", 0),
            "chars": stats.get("chars", 0),
            "mb": round(mb, 3),
            "seconds": round(seconds, 3),
            "mb_per_s": round(mb / seconds, 3) if seconds > 0 else None,
        },
    )


def iter_words(path: Location) -> Iterator[tuple[str, list[str], list[list[int]]]]:
    """Rows ``(doc_id, sentences, word_lens)`` of a words dataset, streamed part by part."""
    _, parts = ds.open_dataset(
        path, STAGE, {k: WORDS_SCHEMA.field(k).type for k in WORDS_SCHEMA.names}
    )
    for p in parts:
        for batch in ds.iter_batches(p, ["doc_id", "sentences", "word_lens"]):
            cols = batch.to_pydict()
            yield from zip(cols["doc_id"], cols["sentences"], cols["word_lens"], strict=True)
