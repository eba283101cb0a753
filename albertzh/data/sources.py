"""Input discovery and reading for ``clean``: files, directories, gzip and stdin, in work units.

Inputs are ``.txt`` (one document per line, or blank-line separated documents with
``doc_sep="blank"``), ``.jsonl``/``.json`` (JSON lines, text in a field), ``.parquet`` (text in
a column), the gzip'd ``.txt.gz``/``.jsonl.gz``/``.json.gz``, directories of those (recursive,
sorted, hidden files skipped), each as a local path or a URL, and ``-`` for stdin (text, one document per line or blank-line
separated).

Work is split into :class:`Unit`\\ s of bounded size so that one big file still streams and
parallelises: a plain text/JSON-lines file becomes byte ranges of about ``chunk_bytes`` whose
edges sit on line starts (for ``doc_sep="blank"``: on document starts, the first non-blank line
after a blank one); a Parquet file becomes one unit per row group. Gzip and stdin cannot be
split, so each is one unit, still read as a stream. A unit owns exactly the documents that
start inside it, so the units of a file together read every document once.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from albertzh.data.fs import is_url, resolve
from albertzh.errors import InputError

STDIN = "-"
FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_KNOWN = ".txt, .jsonl, .json, .parquet (text ones also .gz)"


@dataclass(frozen=True)
class InputFile:
    """One input: its path as given (``-`` for stdin), format and whether it is gzip'd."""

    path: str
    fmt: str  # "txt" | "jsonl" | "parquet"
    gz: bool = False


@dataclass(frozen=True)
class Unit:
    """A bounded piece of one input: a byte range ``[start, end)`` or a Parquet row group.

    ``end`` is None for streams read to the end (gzip, stdin).
    """

    file: InputFile
    start: int = 0
    end: int | None = None
    row_group: int | None = None

    @property
    def source(self) -> str:
        return self.file.path


# --------------------------------------------------------------------------- file access

# Inputs may also be URLs (file://, s3://, gs://, hdfs://, ... as far as this pyarrow build
# supports them, and any fsspec URL such as memory:// when fsspec is installed; see
# albertzh.data.fs); plain paths use the local disk.


def _fs(name: str) -> tuple[Any, str]:
    return resolve(name, error=InputError)


def _open(name: str) -> BinaryIO:
    """A seekable binary file for a local path or a URI."""
    if is_url(name):
        fs, path = _fs(name)
        return io.BufferedReader(fs.open_input_file(path), buffer_size=1 << 20)  # type: ignore[arg-type]
    return open(name, "rb")


def _size(name: str) -> int:
    if is_url(name):
        fs, path = _fs(name)
        return fs.get_file_info(path).size
    return Path(name).stat().st_size


def _parquet(name: str) -> pq.ParquetFile:
    if is_url(name):
        fs, path = _fs(name)
        return pq.ParquetFile(fs.open_input_file(path))
    return pq.ParquetFile(name)


def _discover_uri(name: str) -> list[InputFile]:
    import pyarrow.fs as pafs

    fs, path = _fs(name)
    info = fs.get_file_info(path)
    prefix = name[: name.index("://") + 3]
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = []
        for i in sorted(infos, key=lambda i: i.path):
            rel = PurePosixPath(i.path).relative_to(PurePosixPath(path)).parts
            if i.type == pafs.FileType.File and not any(p.startswith(".") for p in rel):
                f = _format_of(PurePosixPath(i.path), prefix + i.path)
                if f is not None:
                    files.append(f)
        if not files:
            raise InputError(f"{name}: no input files in this directory (expected {_KNOWN})")
        return files
    if info.type == pafs.FileType.File:
        f = _format_of(PurePosixPath(path), name)
        if f is None:
            raise InputError(
                f"{name}: unknown input type '{''.join(PurePosixPath(path).suffixes)}' (expected {_KNOWN})"
            )
        return [f]
    raise InputError(f"{name}: no such file or directory")


# --------------------------------------------------------------------------- discovery


def _format_of(path: PurePath, name: str | None = None) -> InputFile | None:
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (gz and fmt == "parquet"):
        return None
    return InputFile(name or str(path), fmt, gz)


def discover(inputs: Iterable[str | Path], exclude: Path | None = None) -> list[InputFile]:
    """Expand the given paths (files, directories, ``-``) into input files, in a fixed order.

    Files under ``exclude`` (the stage's own output directory) are skipped in directories.
    """
    skip = exclude.resolve() if exclude is not None else None
    found: list[InputFile] = []
    seen_stdin = False
    for raw in inputs:
        name = str(raw)
        if name == STDIN:
            if seen_stdin:
                raise InputError("-: stdin given more than once")
            seen_stdin = True
            found.append(InputFile(STDIN, "txt"))
            continue
        if is_url(name):
            found.extend(_discover_uri(name))
            continue
        path = Path(name)
        if path.is_dir():
            files = []
            for p in sorted(path.rglob("*")):
                rel = p.relative_to(path).parts
                if skip is not None and p.resolve().is_relative_to(skip):
                    continue
                if p.is_file() and not any(part.startswith(".") for part in rel):
                    f = _format_of(p)
                    if f is not None:
                        files.append(f)
            if not files:
                raise InputError(f"{path}: no input files in this directory (expected {_KNOWN})")
            found.extend(files)
        elif path.is_file():
            f = _format_of(path)
            if f is None:
                raise InputError(
                    f"{path}: unknown input type '{''.join(path.suffixes) or path.name}' (expected {_KNOWN})"
                )
            found.append(f)
        elif path.exists():
            raise InputError(f"{path}: not a regular file or directory")
        else:
            raise InputError(f"{path}: no such file or directory")
    if not found:
        raise InputError("INPUTS: no inputs given")
    return found


# --------------------------------------------------------------------------- planning


def _is_blank(line: bytes) -> bool:
    return not line.strip()


def _next_boundary(f: BinaryIO, target: int, size: int, blank_docs: bool) -> int:
    """The first line start (or document start, with ``blank_docs``) at or after ``target``."""
    f.seek(target - 1)
    f.readline()  # finish the line holding byte target-1: we are now at a line start
    pos = f.tell()
    if not blank_docs:
        return pos
    # A document starts at a non-blank line after a blank one. We do not know whether the line
    # before ``pos`` was blank, so we wait to see one: any document start is a valid edge.
    prev_blank = False
    while pos < size:
        line = f.readline()
        if not line:
            break
        if prev_blank and not _is_blank(line):
            return pos
        prev_blank = _is_blank(line)
        pos += len(line)
    return size


def _plain_units(file: InputFile, chunk_bytes: int, blank_docs: bool) -> list[Unit]:
    size = _size(file.path)
    if size == 0:
        return []
    edges = [0]
    with _open(file.path) as f:
        while edges[-1] + chunk_bytes < size:
            edge = _next_boundary(f, edges[-1] + chunk_bytes, size, blank_docs)
            if edge >= size:
                break
            edges.append(edge)
    edges.append(size)
    return [Unit(file, a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _parquet_units(file: InputFile, text_column: str) -> list[Unit]:
    try:
        pf = _parquet(file.path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{file.path}: not a readable Parquet file ({exc})") from exc
    schema = pf.schema_arrow
    if text_column not in schema.names:
        raise InputError(
            f"{file.path}: no column '{text_column}' (columns: {', '.join(schema.names)}; "
            "choose one with --text-column)"
        )
    typ = schema.field(text_column).type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        raise InputError(f"{file.path}: column '{text_column}' has type {typ}, expected string")
    return [Unit(file, row_group=i) for i in range(pf.num_row_groups)]


def plan_units(
    files: Iterable[InputFile], chunk_bytes: int, doc_sep: str = "line", text_column: str = "text"
) -> list[Unit]:
    """Split the input files into work units; unit *i* becomes output part *i*."""
    units: list[Unit] = []
    for file in files:
        if file.fmt == "parquet":
            units.extend(_parquet_units(file, text_column))
        elif file.gz or file.path == STDIN:
            units.append(Unit(file))
        else:
            units.extend(_plain_units(file, chunk_bytes, doc_sep == "blank" and file.fmt == "txt"))
    return units


# --------------------------------------------------------------------------- reading


def _lines(unit: Unit) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line) of every line the unit owns."""
    file = unit.file
    if file.path == STDIN:
        stream: Iterable[bytes] = sys.stdin.buffer
        pos = 0
        for line in stream:
            yield pos, line
            pos += len(line)
        return
    if file.gz:
        try:
            with _open(file.path) as raw, gzip.open(raw, "rb") as f:
                pos = 0
                for line in f:
                    yield pos, line
                    pos += len(line)
        except (gzip.BadGzipFile, EOFError) as exc:
            raise InputError(f"{file.path}: broken gzip stream ({exc})") from exc
        return
    with _open(file.path) as f:
        f.seek(unit.start)
        pos, end = unit.start, unit.end
        while end is None or pos < end:
            line = f.readline()
            if not line:
                break
            yield pos, line
            pos += len(line)


def _decode(line: bytes, pos: int, unit: Unit, errors: str, counters: dict[str, int]) -> str | None:
    """Decode one line as UTF-8; None when it is skipped (``errors="skip-line"``)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        if errors == "replace":
            counters["replaced_lines"] = counters.get("replaced_lines", 0) + 1
            return line.decode("utf-8", errors="replace")
        if errors == "skip-line":
            counters["skipped_lines"] = counters.get("skipped_lines", 0) + 1
            return None
        where = "decompressed byte" if unit.file.gz else "byte"
        raise InputError(
            f"{unit.source}: {where} {pos + exc.start}: not valid UTF-8 "
            "(use --encoding-errors replace or skip-line to go on)"
        ) from None


def _field(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            raise KeyError(dotted)
        obj = obj[key]
    return obj


def read_unit(
    unit: Unit,
    *,
    doc_sep: str = "line",
    text_field: str = "text",
    text_column: str = "text",
    encoding_errors: str = "strict",
    counters: dict[str, int] | None = None,
) -> Iterator[str]:
    """Yield the raw text of every document in the unit, in order.

    ``counters`` receives ``bytes_in`` and, with lenient ``encoding_errors``, the number of
    ``skipped_lines`` / ``replaced_lines``.
    """
    counters = counters if counters is not None else {}
    counters.setdefault("bytes_in", 0)
    fmt = unit.file.fmt
    if fmt == "parquet":
        pf = _parquet(unit.file.path)
        for batch in pf.iter_batches(
            batch_size=4096, row_groups=[unit.row_group], columns=[text_column]
        ):
            for text in batch.column(0).to_pylist():
                text = text or ""
                counters["bytes_in"] += len(text.encode("utf-8"))
                yield text
        return

    blank_docs = fmt == "txt" and doc_sep == "blank"
    doc: list[str] = []
    for pos, raw in _lines(unit):
        counters["bytes_in"] += len(raw)
        line = _decode(raw, pos, unit, encoding_errors, counters)
        if line is None:
            continue
        line = line.rstrip("\r\n")
        if fmt == "jsonl":
            if line.strip():
                yield _json_text(line, pos, unit, text_field)
        elif not blank_docs:
            yield line
        elif line.strip():
            doc.append(line)
        elif doc:
            yield "\n".join(doc)
            doc = []
    if doc:
        yield "\n".join(doc)


def _json_text(line: str, pos: int, unit: Unit, text_field: str) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{unit.source}: byte {pos}: invalid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise InputError(
            f"{unit.source}: byte {pos}: expected one JSON object per line, got {type(obj).__name__} "
            "(JSON arrays are not read; write JSON lines)"
        )
    try:
        value = _field(obj, text_field)
    except KeyError:
        raise InputError(
            f"{unit.source}: byte {pos}: no field '{text_field}' (choose one with --text-field)"
        ) from None
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(
            f"{unit.source}: byte {pos}: field '{text_field}' is {type(value).__name__}, expected a string"
        )
    return value
