"""The ``clean`` stage: raw text in any mix of formats -> a docs dataset (Parquet + manifest).

How it runs:

1. **Plan.** The inputs are discovered and split into work units of about ``--chunk-mb``
   (:mod:`albertzh.data.sources`). Part *i* of the output is unit *i*, whatever
   ``--workers``; ``doc_id`` is ``<unit>-<row>`` (the row counts every document the unit
   read, kept or not, so ids do not move when a filter changes).
2. **Clean, in parallel.** Each worker streams one unit through the rules of
   :mod:`albertzh.data.textrules` (normalize -> split sentences -> filters) and writes the
   kept documents with their xxhash64 (and, with ``--near-dup``, MinHash signature) to a
   staging Arrow file, in batches, so memory stays bounded by a batch.
3. **De-duplicate, in order.** The main process takes the units in input order. For each one
   it first decides from the hashes alone which documents are duplicates of any earlier
   document (first occurrence in input order wins), then streams the kept rows into
   ``part-<i>.parquet`` (temp name + rename) with the unit's counters in the footer. Because
   this pass is sequential and in input order, the output is byte-identical for any
   ``--workers``. Memory grows only with the set of seen hashes (and the MinHash LSH index).
   ``--exclude`` is decided here too, before the duplicate check: the exclude files are read
   and cleaned by the same :class:`Cleaner` before the output directory is touched, and a
   document whose :func:`text_hash` (or that of one of its sentences of 10+ characters) is one
   of theirs is dropped as ``excluded``. Every copy counts as ``excluded``, none as seen.
4. **Resume.** ``--resume`` keeps every complete part. The seen-hash set (and LSH index) is
   rebuilt by re-hashing the text of those kept parts as the in-order pass reaches them, so a
   resumed run drops exactly the duplicates a single run would. Each part's footer records the
   options and inputs that shape it (:func:`part_origin`: inputs by name, format and size; for
   ``--exclude``, the digest of the excluded keys — never paths); parts written with other
   options or inputs are refused before the output is touched (:func:`dataset.check_resume`).
   The manifest is written last.

Staging files live in ``<output>/.staging-clean/`` (in a local temporary directory when the
output is a URL) and are removed as each unit is finished.
A stdin unit is read by the main process (pool workers get /dev/null as stdin).

With ``--num-shards`` each machine de-duplicates within its own units only.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import xxhash
from pydantic import Field, model_validator

from albertzh import outputs
from albertzh.config import CorpusStageConfig
from albertzh.console import Summary, progress
from albertzh.data import dataset as ds
from albertzh.data import fs
from albertzh.data import textrules as tr
from albertzh.data.sources import STDIN, InputFile, Unit, discover, plan_units, read_unit
from albertzh.errors import ConfigError, InputError

STAGE = "clean"
DOCS_SCHEMA = pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("source", pa.string())])
STAGING_DIR = ".staging-clean"
BATCH_ROWS = 8192
BATCH_BYTES = 8 << 20
MINHASH_SEED = 1


class CleanConfig(CorpusStageConfig):
    """Options of ``albertzh clean``."""

    inputs: list[str] = Field(
        ...,
        description="Input files or directories (.txt, .jsonl, .json, .parquet, .gz of the text ones; local paths or pyarrow filesystem URIs) or - for stdin.",
        json_schema_extra={"argument": True},
    )
    doc_sep: Literal["line", "blank"] = Field(
        "line",
        description="Text files: 'line' = one document per line; 'blank' = documents separated by blank lines, one sentence per line (albert_zh style).",
    )
    text_field: str = Field(
        "text", description="JSON lines: the field holding the text (a.b for nested)."
    )
    text_column: str = Field("text", description="Parquet: the column holding the text.")
    chunk_mb: float = Field(
        4.0,
        gt=0,
        description="Split plain text/JSON-lines files into work units of about this many MB.",
    )
    encoding_errors: Literal["strict", "replace", "skip-line"] = Field(
        "strict",
        description="Invalid UTF-8: 'strict' stops with the file and byte offset; 'replace' uses U+FFFD; 'skip-line' drops the line.",
    )
    invisible: bool = Field(
        True, description="Remove control and invisible characters (zero-width, BOM, soft hyphen)."
    )
    html: bool = Field(True, description="Remove HTML tags and decode HTML entities.")
    fullwidth: bool = Field(
        True,
        description="Map full-width ASCII forms (ＡＢＣ１２３) and the ideographic space to ASCII.",
    )
    nfkc: bool = Field(True, description="Unicode NFKC normalization.")
    keep_cn_punct: bool = Field(
        True,
        description="Keep Chinese full-width punctuation ，！？：；（）～… as is (NFKC and --fullwidth would make it ASCII).",
    )
    t2s: bool = Field(
        False, description="Convert traditional to simplified Chinese (needs opencc, extra 't2s')."
    )
    urls: Literal["mask", "drop", "keep"] = Field(
        "mask",
        description="URLs and e-mails: 'mask' replaces them with --url-token/--email-token, 'drop' drops the document (reason url), 'keep' leaves them.",
    )
    url_token: str = Field("[URL]", description="Placeholder for a masked URL.")
    email_token: str = Field("[EMAIL]", description="Placeholder for a masked e-mail address.")
    whitespace: bool = Field(
        True, description="Collapse runs of spaces/tabs to one space and drop empty lines."
    )
    split_sentences: bool = Field(
        True,
        description="Split documents into sentences on 。！？!?；… and '. ' (one per line in the output).",
    )
    min_sentence_chars: int = Field(
        2, ge=0, description="Drop sentences shorter than this inside documents."
    )
    min_chars: int = Field(
        10, ge=0, description="Drop documents shorter than this many characters (too_short)."
    )
    max_chars: int = Field(
        100_000,
        ge=0,
        description="Drop documents longer than this many characters (too_long); 0 = no limit.",
    )
    min_chinese_ratio: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Drop documents where fewer than this share of the letters are Chinese ideographs; digits and punctuation do not count (low_chinese_ratio).",
    )
    max_char_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Drop documents where one letter (ideograph, a-z, ...) is more than this share of all letters (char_spam); 1 = off.",
    )
    max_char_run: int = Field(
        10,
        ge=0,
        description="Drop documents with a run of this many equal letters/ideographs, e.g. 哈哈哈... (char_run); 0 = off.",
    )
    max_repeated_lines: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Drop documents where repeated sentences make up more than this share of the characters (repeated_lines); 1 = off.",
    )
    dedup: bool = Field(
        True,
        description="Drop exact duplicates (xxhash64 of the cleaned text) across the whole input; the first one wins.",
    )
    near_dup: bool = Field(
        False,
        description="Also drop near-duplicates with MinHash LSH (reason near_duplicate; needs datasketch).",
    )
    near_dup_threshold: float = Field(
        0.8, gt=0, lt=1, description="Estimated Jaccard similarity that counts as near-duplicate."
    )
    near_dup_num_perm: int = Field(
        128, ge=16, le=1024, description="MinHash permutations for --near-dup."
    )
    near_dup_ngram: int = Field(
        5, ge=1, description="Character n-gram size of the --near-dup shingles."
    )
    exclude: list[Path] = Field(
        default_factory=list,
        description="A file of texts to keep out of the output, e.g. a benchmark's dev split (repeatable): .tsv = every field, .jsonl/.json = every string value, else each line (.gz too). A document that, cleaned, equals one of them or has a 10+ character sentence equal to one is dropped (excluded); labels and texts under 4 characters are ignored.",
    )

    @model_validator(mode="after")
    def _check_lengths(self) -> CleanConfig:
        if self.max_chars and self.max_chars < self.min_chars:
            raise ValueError(
                f"--max-chars {self.max_chars} must not be smaller than --min-chars {self.min_chars}"
            )
        return self


# --------------------------------------------------------------------------- per-document rules


class Cleaner:
    """Applies the configured rules to one document at a time and counts what they did."""

    def __init__(self, cfg: CleanConfig) -> None:
        self.cfg = cfg
        self.rules: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        steps: list[tuple[str, Any]] = []
        if cfg.invisible:
            steps.append(("invisible", tr.remove_invisible))
        if cfg.html:
            steps.append(("html", tr.strip_html))
        if cfg.fullwidth:
            steps.append(("fullwidth", lambda t: tr.fullwidth_to_halfwidth(t, cfg.keep_cn_punct)))
        if cfg.nfkc:
            steps.append(("nfkc", lambda t: tr.nfkc(t, cfg.keep_cn_punct)))
        if cfg.t2s:
            steps.append(("t2s", tr.t2s))
        if cfg.urls == "mask":
            steps.append(("urls_masked", lambda t: tr.mask_urls(t, cfg.url_token, cfg.email_token)))
        if cfg.whitespace:
            steps.append(("whitespace", tr.collapse_whitespace))
        self.steps = steps

    def normalize(self, text: str) -> str:
        """Run the normalizers, counting the documents each one changed."""
        for name, fn in self.steps:
            new = fn(text)
            if new != text:
                self.rules[name] += 1
                text = new
        return text

    def sentences(self, text: str) -> list[str]:
        """The sentences of a normalized document, without the too-short ones."""
        cfg = self.cfg
        if cfg.split_sentences:
            sents = tr.split_sentences(text)
        else:
            sents = [s for s in (line.strip() for line in text.split("\n")) if s]
        if cfg.min_sentence_chars > 1:
            kept = [s for s in sents if len(s) >= cfg.min_sentence_chars]
            if len(kept) < len(sents):
                self.rules["short_sentences"] += len(sents) - len(kept)
            sents = kept
        return sents

    def text_of(self, raw: str) -> str:
        """The text a document gets before the filters (normalized, one sentence per line)."""
        return "\n".join(self.sentences(self.normalize(raw)))

    def __call__(self, raw: str) -> str | None:
        """The cleaned document (sentences joined by newlines), or None when it is dropped."""
        cfg = self.cfg
        text = self.normalize(raw)
        reason = None
        if cfg.urls == "drop" and tr.find_urls(text):
            reason = "url"
        else:
            sents = self.sentences(text)
            text = "\n".join(sents)
            reason = (
                ("empty" if not sents else None)
                or tr.too_short(text, cfg.min_chars)
                or tr.too_long(text, cfg.max_chars)
                or tr.low_chinese_ratio(text, cfg.min_chinese_ratio)
                or tr.repeated_lines(sents, cfg.max_repeated_lines)
                or tr.char_run(text, cfg.max_char_run)
                or tr.char_spam(text, cfg.max_char_fraction)
            )
        if reason:
            self.dropped[reason] += 1
            return None
        return text


def options_digest(
    cfg: CleanConfig, files: Sequence[InputFile], excluded: Excluded | None = None
) -> str:
    """A short hash of the options and inputs that decide the parts (kept in each part's stats;
    shards of one output must agree on it).

    Run-only fields (output, workers, shards, ...) change how a run goes, not what it writes.
    Inputs count by what they are — each file's name, format and size, in order — not by the
    paths given, so machines that mount the corpus at different places agree; ``--exclude``
    counts by the digest of the excluded keys.
    """
    opts = cfg.model_dump(mode="json", exclude=set(ds.RUN_ONLY_FIELDS) | {"exclude", "inputs"})
    opts["inputs"] = [
        [fs.name_of(f.path), f.fmt, f.gz, None if f.path == STDIN else fs.size(f.path)]
        for f in files
    ]
    if cfg.exclude:
        if excluded is None:
            raise ValueError("options_digest: --exclude is set, pass its Excluded")
        opts["exclude"] = excluded.digest
    return hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:16]


def part_origin(
    cfg: CleanConfig, files: Sequence[InputFile], excluded: Excluded | None = None
) -> dict[str, Any]:
    """What each part records it was made from (see :func:`dataset.origin_of`): the options,
    a digest of the inputs (as in :func:`options_digest`) and of the ``--exclude`` keys."""
    origin = ds.origin_of(STAGE, cfg, ignore={"exclude", "inputs"})
    inputs = [
        [fs.name_of(f.path), f.fmt, f.gz, None if f.path == STDIN else fs.size(f.path)]
        for f in files
    ]
    origin["inputs"] = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]
    origin["exclude"] = excluded.digest if cfg.exclude and excluded is not None else None
    return origin


def text_hash(text: str) -> int:
    """The exact-duplicate key: xxhash64 of the cleaned text's UTF-8 bytes."""
    return xxhash.xxh64_intdigest(text.encode("utf-8"))


# --------------------------------------------------------------------------- --exclude

EXCLUDE_MIN_CHARS = 4  # shorter texts (labels such as 1/0, empty fields) never exclude
EXCLUDE_SENTENCE_MIN_CHARS = 10  # a shorter sentence is too common to drop its document for


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (object values, list items, nested)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def exclude_texts(path: Path) -> Iterator[str]:
    """The candidate texts of one ``--exclude`` file, raw (before cleaning).

    ``.tsv``: every tab-separated field of every line; ``.jsonl``/``.json`` (JSON lines):
    every string value; anything else: each line. ``.gz`` is decompressed. Errors are
    :class:`InputError` naming the file (and the line).
    """
    suffixes = [x.lower() for x in path.suffixes]
    gz = suffixes[-1:] == [".gz"]
    kind = (suffixes[:-1] if gz else suffixes)[-1:]
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    raise InputError(f"{path}: line {n}: not valid UTF-8") from None
                if n == 1:
                    line = line.removeprefix("\ufeff")
                if kind == [".tsv"]:
                    yield from line.split("\t")
                elif kind in ([".jsonl"], [".json"]):
                    if line.strip():
                        try:
                            yield from _strings(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise InputError(
                                f"{path}: line {n}: not valid JSON ({exc.msg})"
                            ) from None
                else:
                    yield line
    except FileNotFoundError:
        raise InputError(f"{path}: --exclude file not found") from None
    except (OSError, EOFError) as exc:  # unreadable, a directory, a broken .gz
        raise InputError(f"{path}: cannot read --exclude file ({exc.strerror or exc})") from None


def _is_exclude_text(text: str) -> bool:
    """False for a short text and for one ASCII token (a label or id: ``entailment``, ``q-42``)."""
    return len(text) >= EXCLUDE_MIN_CHARS and not (text.isascii() and len(text.split()) == 1)


class Excluded:
    """The keys (:func:`text_hash` of the cleaned text) of the ``--exclude`` texts.

    A document is excluded when its key is one of them, or when one of its sentences of at
    least :data:`EXCLUDE_SENTENCE_MIN_CHARS` characters is (so a task text that sits inside a
    longer document is caught too).
    """

    def __init__(self, keys: set[int]) -> None:
        self.keys = keys
        raw = b"".join(k.to_bytes(8, "little") for k in sorted(keys))
        self.digest = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def load(cls, cfg: CleanConfig) -> Excluded:
        """Read and clean every ``--exclude`` text with the documents' own normalizers."""
        cleaner = Cleaner(cfg)
        keys = set()
        for path in cfg.exclude:
            for raw in exclude_texts(Path(path)):
                text = cleaner.text_of(raw)
                if _is_exclude_text(text):
                    keys.add(text_hash(text))
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def matches(self, h: int, text: str) -> bool:
        """Whether the document (its key ``h`` and cleaned text) is or holds an excluded text."""
        if h in self.keys:
            return True
        if "\n" not in text:  # one sentence: its key is the document's
            return False
        return any(
            len(s) >= EXCLUDE_SENTENCE_MIN_CHARS and text_hash(s) in self.keys
            for s in text.split("\n")
        )


_MINHASH_TEMPLATE: dict[int, Any] = {}


def minhash_values(text: str, cfg: CleanConfig) -> Any:
    """MinHash signature (numpy uint64 array) of the text's character n-grams."""
    from datasketch import MinHash

    # Building the permutations is the slow part of a MinHash: do it once per process.
    tmpl = _MINHASH_TEMPLATE.get(cfg.near_dup_num_perm)
    if tmpl is None:
        tmpl = _MINHASH_TEMPLATE[cfg.near_dup_num_perm] = MinHash(
            num_perm=cfg.near_dup_num_perm, seed=MINHASH_SEED
        )
    m = tmpl.copy()  # an empty MinHash sharing the template's permutations
    m.update_batch(sorted(tr.shingles(text, cfg.near_dup_ngram)))
    return m.hashvalues.astype("uint64")  # uint32 or uint64 depending on the scheme


# --------------------------------------------------------------------------- worker: one unit


def _staging_schema(near_dup: bool) -> pa.Schema:
    fields = [
        ("row", pa.int64()),
        ("text", pa.string()),
        ("hash", pa.uint64()),
        ("sentences", pa.int32()),
    ]
    if near_dup:
        fields.append(("sig", pa.binary()))
    return pa.schema(fields)


def clean_unit(job: tuple[CleanConfig, int, Unit, str]) -> tuple[int, str, dict[str, Any]]:
    """Clean one work unit into a staging Arrow file; returns (index, staging path, stats)."""
    cfg, index, unit, staging_dir = job
    cleaner = Cleaner(cfg)
    counters: dict[str, int] = {}
    path = os.path.join(staging_dir, f"unit-{index:05d}.arrow")
    schema = _staging_schema(cfg.near_dup)
    cols: dict[str, list[Any]] = {name: [] for name in schema.names}
    size = 0
    rows_in = 0

    def flush(writer: Any) -> None:
        nonlocal size
        if cols["row"]:
            writer.write_batch(pa.record_batch([cols[n] for n in schema.names], schema=schema))
        for v in cols.values():
            v.clear()
        size = 0

    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        docs = read_unit(
            unit,
            doc_sep=cfg.doc_sep,
            text_field=cfg.text_field,
            text_column=cfg.text_column,
            encoding_errors=cfg.encoding_errors,
            counters=counters,
        )
        for row, raw in enumerate(docs):
            rows_in += 1
            text = cleaner(raw)
            if text is None:
                continue
            cols["row"].append(row)
            cols["text"].append(text)
            cols["hash"].append(text_hash(text))
            cols["sentences"].append(text.count("\n") + 1)
            if cfg.near_dup:
                cols["sig"].append(minhash_values(text, cfg).tobytes())
            size += len(text)
            if len(cols["row"]) >= BATCH_ROWS or size >= BATCH_BYTES:
                flush(writer)
        flush(writer)

    stats: dict[str, Any] = {
        "rows_in": rows_in,
        "bytes_in": counters.get("bytes_in", 0),
        "dropped": dict(cleaner.dropped),
        "rules": dict(cleaner.rules),
    }
    for key in ("skipped_lines", "replaced_lines"):
        if counters.get(key):
            stats[key] = counters[key]
    return index, path, stats


# --------------------------------------------------------------------------- main: dedup + write


class Deduper:
    """Remembers every kept document (hash set, optional MinHash LSH) in input order.

    Also drops the documents that match ``--exclude`` (before they count as seen).
    """

    def __init__(self, cfg: CleanConfig, excluded: Excluded | None = None) -> None:
        self.cfg = cfg
        self.excluded = excluded or Excluded(set())
        self.seen: set[int] = set()
        self.lsh = None
        self._lean_kw: dict[str, Any] = {}
        if cfg.near_dup:
            from datasketch import MinHash, MinHashLSH

            try:
                self.lsh = MinHashLSH(
                    threshold=cfg.near_dup_threshold, num_perm=cfg.near_dup_num_perm
                )
            except ValueError as exc:
                raise ConfigError(
                    f"--near-dup-threshold {cfg.near_dup_threshold} with --near-dup-num-perm "
                    f"{cfg.near_dup_num_perm}: {exc}; lower the threshold or use more permutations"
                ) from None
            # datasketch >= 2 wants the hashing scheme of stored signatures spelled out.
            scheme = getattr(MinHash(num_perm=16, seed=MINHASH_SEED), "scheme", None)
            if scheme:
                self._lean_kw["scheme"] = scheme

    def check(self, key: Any, h: int, sig: bytes | None, text: str | None = None) -> str | None:
        """None when the document is new (and remember it), else the drop reason.

        ``key`` names the document in the LSH index (any unique hashable); ``text`` (the
        cleaned text) is checked against ``--exclude`` when given.
        """
        if text is not None and self.excluded.matches(h, text):
            return "excluded"
        if self.cfg.dedup:
            if h in self.seen:
                return "duplicate"
            self.seen.add(h)
        if self.lsh is not None and sig is not None:
            import numpy as np
            from datasketch import LeanMinHash

            values = np.frombuffer(sig, dtype=np.uint64)
            m = LeanMinHash(seed=MINHASH_SEED, hashvalues=values, **self._lean_kw)
            if self.lsh.query(m):
                return "near_duplicate"
            self.lsh.insert(key, m)
        return None

    def absorb_part(self, path: fs.Location) -> None:
        """Remember the documents of an already complete part (for --resume).

        Its parts hold no excluded document (their options digest covers the --exclude keys).
        """
        if not self.cfg.dedup and self.lsh is None:
            return
        for batch in ds.iter_batches(path, ["doc_id", "text"]):
            for doc_id, text in zip(
                batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
            ):
                sig = minhash_values(text, self.cfg).tobytes() if self.lsh is not None else None
                self.check(doc_id, text_hash(text), sig)


def _doc_id(index: int, row: int) -> str:
    return f"{index:05d}-{row:06d}"


def _finish_unit(
    out: fs.Location,
    index: int,
    unit: Unit,
    staging: str,
    stats: dict[str, Any],
    dedup: Deduper,
    origin: dict[str, Any],
) -> dict[str, Any]:
    """Decide duplicates for one staged unit, then stream its kept rows into part ``index``."""
    # Plain reads, not a memory map: mapped pages would count in RSS for the whole unit.
    reader = pa.ipc.open_file(pa.OSFile(staging))
    near = dedup.cfg.near_dup
    keep: list[pa.BooleanArray] = []  # one bit per document, whatever the unit's size
    dropped: Counter[str] = Counter()
    sentences = 0
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        rows = batch.column("row").to_pylist()
        hashes = batch.column("hash").to_pylist()
        sigs = batch.column("sig").to_pylist() if near else [None] * len(rows)
        texts = batch.column("text").to_pylist() if dedup.excluded else [None] * len(rows)
        mask = []
        for row, h, sig, text in zip(rows, hashes, sigs, texts, strict=True):
            reason = dedup.check((index, row), h, sig, text)
            if reason:
                dropped[reason] += 1
            mask.append(reason is None)
        keep.append(pa.array(mask, pa.bool_()))
        sentences += pa.compute.sum(batch.column("sentences").filter(keep[-1])).as_py() or 0

    stats = dict(stats)
    stats["dropped"] = dict(Counter(stats.get("dropped", {})) + dropped)
    stats["rows_out"] = sum(m.true_count for m in keep)
    stats["sentences"] = sentences

    def batches() -> Iterator[pa.Table]:
        for b, mask in enumerate(keep):
            batch = reader.get_batch(b).filter(mask)
            n = batch.num_rows
            if n == 0:
                continue
            ids = [_doc_id(index, r) for r in batch.column("row").to_pylist()]
            yield pa.table(
                [pa.array(ids, pa.string()), batch.column("text"), pa.array([unit.source] * n)],
                schema=DOCS_SCHEMA,
            )

    _write_part_streaming(out, index, batches(), stats, origin)
    return stats


def _write_part_streaming(
    out: fs.Location,
    index: int,
    tables: Iterator[pa.Table],
    stats: dict[str, Any],
    origin: dict[str, Any],
) -> None:
    """Like :func:`dataset.write_part` (temp name, fsync, rename, stats and origin in the
    footer), streamed."""
    final = fs.join(out, ds.part_name(index))
    tmp = fs.tmp_for(final)
    schema = DOCS_SCHEMA.with_metadata(ds.part_metadata(stats, origin))
    filesystem, where = fs.split(tmp)
    try:
        with pq.ParquetWriter(where, schema, compression="zstd", filesystem=filesystem) as writer:
            for t in tables:
                writer.write_table(
                    t.replace_schema_metadata(schema.metadata), ds.DEFAULT_ROW_GROUP_ROWS
                )
        fs.commit(tmp, final)
    finally:
        fs.remove(tmp, missing_ok=True)


# --------------------------------------------------------------------------- the stage


def _ordered_map(
    fn: Any, jobs: list[Any], workers: int, inline: Any = lambda job: False
) -> Iterator[Any]:
    """``fn`` over ``jobs`` in ``workers`` processes, results in order, a few jobs ahead.

    Unlike :func:`dataset.map_units` this keeps at most ``2 * workers`` units in flight (so
    staging files never pile up on disk), cancels the rest at once when one unit fails, and
    runs the jobs for which ``inline(job)`` holds in this process when their turn comes
    (stdin: pool workers get /dev/null as stdin).
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield fn(job)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    ex = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx)
    pending: deque[tuple[Future[Any] | None, Any]] = deque()

    def submit(job: Any) -> None:
        pending.append((None, job) if inline(job) else (ex.submit(fn, job), job))

    try:
        it = iter(jobs)
        for job in it:
            submit(job)
            if len(pending) >= 2 * workers:
                break
        while pending:
            future, job = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                submit(nxt)
            yield fn(job) if future is None else future.result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _check_optional_packages(cfg: CleanConfig) -> None:
    if cfg.t2s:
        try:
            tr.load_opencc()
        except ImportError as exc:
            raise ConfigError(str(exc)) from None
    if cfg.near_dup:
        try:
            import datasketch  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--near-dup needs the datasketch package: pip install 'albertzh[neardup]'"
            ) from None


def run(config: CleanConfig) -> Summary:
    """Clean, filter and de-duplicate the inputs into a docs dataset; returns the summary."""
    outputs.check_apart(config.output, {"INPUTS": config.inputs, "--exclude": config.exclude})
    shard = (config.shard_index, config.num_shards)
    with ds.output_lock(config.output, break_lock=config.break_lock, shard=shard):
        return _run(config)


def _run(config: CleanConfig) -> Summary:
    t0 = time.perf_counter()
    # Arrow's default allocator (mimalloc) keeps freed pages, so peak RSS would grow with the
    # size of the parts read; the system allocator returns them (same speed here).
    pa.set_memory_pool(pa.system_memory_pool())
    _check_optional_packages(config)
    remote = fs.is_remote(config.output)
    files = discover(config.inputs, exclude=None if remote else Path(config.output))
    units = plan_units(
        files, max(1, int(config.chunk_mb * (1 << 20))), config.doc_sep, config.text_column
    )
    excluded = Excluded.load(config)  # bad --exclude files stop here, before the output exists
    dedup = Deduper(config, excluded)
    digest = options_digest(config, files, excluded)
    origin = part_origin(config, files, excluded)
    shard = (config.shard_index, config.num_shards)
    if config.resume:  # refuse a mixed output before touching it
        ds.check_resume(
            config.output, origin, total_parts=len(units), shard=shard, schema=DOCS_SCHEMA
        )
    out = ds.prepare_output(
        config.output, resume=config.resume, overwrite=config.overwrite, shard=shard
    )
    if remote:  # workers write staging files with plain local I/O
        staging_dir = Path(tempfile.mkdtemp(prefix="albertzh-clean-"))
    else:
        # One staging folder per shard: machines sharing the output never touch each other's.
        suffix = f"-{shard[0]}-of-{shard[1]}" if shard[1] > 1 else ""
        staging_dir = Path(out) / f"{STAGING_DIR}{suffix}"
        shutil.rmtree(staging_dir, ignore_errors=True)
        staging_dir.mkdir()

    mine = ds.select_shard(units, config.shard_index, config.num_shards)
    todo = [(i, u) for i, u in mine if not ds.part_complete(out, i)]
    jobs = [(config, i, u, str(staging_dir)) for i, u in todo]
    results = _ordered_map(
        clean_unit, jobs, config.workers, inline=lambda job: job[2].source == STDIN
    )
    done: list[dict[str, Any]] = []
    resumed = kept = 0
    try:
        with progress("clean", total=len(mine), unit="units") as bar:
            for i, unit in mine:
                if ds.part_complete(out, i):
                    dedup.absorb_part(fs.join(out, ds.part_name(i)))
                    resumed += 1
                else:
                    index, staging, stats = next(results)
                    assert index == i, (index, i)
                    stats["options"] = digest
                    done.append(_finish_unit(out, i, unit, staging, stats, dedup, origin))
                    os.unlink(staging)
                    kept += done[-1]["rows_out"]
                    bar.update(docs=kept)
                bar.advance(1)
    finally:
        results.close()
        shutil.rmtree(staging_dir, ignore_errors=True)

    manifest = ds.finish_output(
        out,
        STAGE,
        config,
        config.inputs,
        extra={"units": len(units), "input_files": len(files)},
        shard=shard,
        total_parts=len(units),
        digest=digest,
    )
    seconds = time.perf_counter() - t0
    mb = sum(d["bytes_in"] for d in done) / 1e6
    total = manifest["stats"]
    figures: dict[str, Any] = {
        "output": str(out),
        "input_files": len(files),
        "units": len(mine),
        "units_resumed": resumed,
        "rows_in": total.get("rows_in", 0),
        "rows_out": manifest["rows"],
        "bytes_in": total.get("bytes_in", 0),
        "sentences": total.get("sentences", 0),
        "dropped": dict(sorted(total.get("dropped", {}).items())),
        "rules": dict(sorted(total.get("rules", {}).items())),
    }
    for key in ("skipped_lines", "replaced_lines"):
        if total.get(key):
            figures[key] = total[key]
    if (status := ds.shard_figure(out, shard)) is not None:
        figures["dataset"] = status
    figures["seconds"] = round(seconds, 3)
    figures["mb_per_s"] = round(mb / seconds, 3) if seconds > 0 else 0.0
    return Summary(STAGE, figures)
