"""Stage datasets on disk: Parquet parts plus a manifest written last, atomically.

A stage output directory holds ``part-00000.parquet``, ``part-00001.parquet``, ... and a
``manifest.json``. Part *i* is the output of work unit *i* (an input file, chunk or part), so
the layout is the same whatever the number of workers, and ``--resume`` can skip units whose
part already exists. Each part is written to a temporary name, fsynced and renamed, so a part
with its final name is always complete; per-part counters (kept/dropped rows, ...) travel in
the Parquet footer's key-value metadata under ``albertzh.stats``.

A directory without ``manifest.json`` is incomplete, and :func:`read_manifest` refuses it.

Reading is checked (:func:`open_dataset`): every part's size, row count and schema are compared
with the manifest and the stage's schema (a stat and a footer read per part), and with
``verify`` its sha256 too (a full read); a part that does not match is a DatasetError naming it.
Each part also records in its footer what it was made from (``albertzh.origin``: the stage, its
options and the identity of its inputs, :func:`origin_of`), so ``--resume`` keeps only parts of
the same run (:func:`check_resume`).

With ``--shard-index i --num-shards n`` several machines write into one directory: each shard
writes its own parts and ``manifest.shard-i-of-n.json``, and whichever shard completes the set
merges the n shard manifests into ``manifest.json`` (:func:`finish_output`, :func:`merge_shards`).

Every directory and file argument is a location (:mod:`albertzh.data.fs`): a local path, or
a URL that pyarrow (or fsspec) can open, e.g. ``s3://bucket/docs`` or ``memory://docs``. On a
URL, files are written under a temporary name and moved into place (see :func:`fs.commit`);
the manifest is still written last.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import multiprocessing as mp
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs  # noqa: F401  (pa.fs)
import pyarrow.parquet as pq

from albertzh import __version__, outputs
from albertzh import files as local_files
from albertzh.data import fs
from albertzh.data.fs import Location
from albertzh.errors import DatasetError, InputError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STATS_KEY = b"albertzh.stats"
ORIGIN_KEY = b"albertzh.origin"
DEFAULT_ROW_GROUP_ROWS = 8192

# The ``stage`` in each dataset's manifest, by row schema (docs/internals.md); a stage that
# reads a dataset passes the one it expects to :func:`read_manifest`.
DOCS_STAGE = "clean"
WORDS_STAGE = "segment"
INSTANCES_STAGE = "make-shards"

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------- small file helpers


def atomic_write_bytes(path: Location, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename (never half-written).

    A local path goes through :func:`albertzh.files.atomic_write_bytes`; a URL is written under
    :func:`fs.tmp_for` and moved into place (:func:`fs.commit`).
    """
    loc = fs.location(path)
    if not fs.is_remote(loc):
        local_files.atomic_write_bytes(loc, data)
        return
    tmp = fs.tmp_for(loc)
    fs.write_bytes(tmp, data)
    fs.commit(tmp, loc)


def atomic_write_json(path: Location, obj: Any) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as JSON (indent 2, non-ASCII kept, final newline)."""
    atomic_write_bytes(path, local_files.json_text(obj).encode("utf-8"))


def sha256_file(path: Location, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file at a local path or URL."""
    loc = fs.location(path)
    if not fs.is_remote(loc):
        return local_files.sha256_file(loc, chunk)
    h = hashlib.sha256()
    with fs.open_input(loc) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# --------------------------------------------------------------------------- output side


RUN_ONLY_FIELDS = frozenset(
    {
        "output",
        "workers",
        "resume",
        "overwrite",
        "break_lock",
        "shard_index",
        "num_shards",
        "verify",
    }
)
# What a stage writes in a dataset directory: --overwrite deletes these and nothing else.
DATASET_LAYOUT = outputs.Layout(
    "dataset",
    owned=(MANIFEST, "manifest.shard-*-of-*.json", "part-*.parquet", ".staging-*"),
)
VERIFY_HELP = (
    "Also check the sha256 of every input part against its manifest (reads every byte once; "
    "sizes, row counts and schemas are always checked)."
)
_SHARD_MANIFEST_RE = re.compile(r"manifest\.shard-(\d+)-of-(\d+)\.json")
_PART_RE = re.compile(r"\.?part-(\d+)\.parquet(\.tmp-.*)?")


def shard_manifest_name(index: int, count: int) -> str:
    return f"manifest.shard-{index}-of-{count}.json"


def _own_name(name: str, shard: tuple[int, int]) -> bool:
    """Whether ``name`` in an output directory belongs to shard ``(i, n)``: its parts, their
    temp files, its shard manifest and that manifest's temp files."""
    i, n = shard
    m = _PART_RE.fullmatch(name)
    if m and (name.startswith(".") == bool(m.group(2))):
        return int(m.group(1)) % n == i
    own = shard_manifest_name(i, n)
    return name == own or fnmatch.fnmatchcase(name, f".{own}.tmp-*")


def _is_tmp(name: str) -> bool:
    return fnmatch.fnmatchcase(name, ".*.tmp-*")


def output_lock(
    path: Location, *, break_lock: bool = False, shard: tuple[int, int] = (0, 1)
) -> contextlib.AbstractContextManager[None]:
    """Hold the lock of a local stage output while a stage writes it (shard *i*'s own lock
    with ``shard=(i, n)``, so shards can write one directory at once); URLs are not locked."""
    loc = fs.location(path)
    if fs.is_remote(loc):
        return contextlib.nullcontext()
    return outputs.locked(Path(loc), break_lock=break_lock, shard=shard)


def prepare_output(
    path: Location,
    *,
    resume: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Location:
    """Create (or re-open with ``resume``) a stage output directory; returns its location.

    A non-empty directory is refused unless ``resume`` (keep complete parts) or ``overwrite``
    is given, so a re-run never silently mixes old and new parts. ``overwrite`` deletes only
    what a stage wrote (:data:`DATASET_LAYOUT`); a directory holding anything else is refused,
    naming the file, and nothing is deleted. Lock files are left alone.

    With ``shard=(i, n)``, ``n > 1`` (``--shard-index i --num-shards n``), several machines
    share the directory: only shard *i*'s own files (parts whose index % n == i, their temp
    files, ``manifest.shard-i-of-n.json``) count for the non-empty check, are deleted by
    ``overwrite`` and cleaned up by ``resume``; other shards' files are left alone. A merged
    ``manifest.json`` is removed: it is stale once any shard runs again.
    """
    loc = fs.location(path)
    found = fs.kind(loc)
    if found is not None and found != "dir":
        raise DatasetError(f"{loc}: output exists and is not a directory")
    names = [n for n in fs.listdir(loc) if not outputs.is_lock(n)] if found else []
    i, n = shard
    if n > 1:
        own = [name for name in names if _own_name(name, shard)]
        if own and overwrite:
            for name in own:
                fs.remove(fs.join(loc, name), missing_ok=True)
        elif own and not resume:
            raise DatasetError(
                f"{loc}: shard {i} of {n} already has files here ({own[0]}, ...) "
                "(use --resume to continue or --overwrite to replace this shard's files)"
            )
        fs.makedirs(loc)
        fs.remove(fs.join(loc, MANIFEST), missing_ok=True)
        if resume:
            for name in own:
                if _is_tmp(name) or name == shard_manifest_name(i, n):
                    fs.remove(fs.join(loc, name), missing_ok=True)
        return loc
    if names:
        if overwrite:
            _clear_output(loc, names)
        elif not resume:
            raise DatasetError(
                f"{loc}: output directory is not empty (use --resume to continue or --overwrite to replace it)"
            )
    fs.makedirs(loc)
    if resume:
        # The manifest describes a finished run; it is rewritten at the end of this one.
        fs.remove(fs.join(loc, MANIFEST), missing_ok=True)
        for name in fs.listdir(loc):
            if _is_tmp(name):
                fs.remove(fs.join(loc, name))
    return loc


def _clear_output(loc: Location, names: list[str]) -> None:
    """``--overwrite``: empty a dataset directory, after checking that a stage wrote it all."""
    if not fs.is_remote(loc):
        try:
            outputs.clear(Path(loc), DATASET_LAYOUT)
        except InputError as exc:
            raise DatasetError(str(exc)) from None
        return
    foreign = next((name for name in names if not DATASET_LAYOUT.owns(name)), None)
    if foreign is not None:
        raise DatasetError(outputs.foreign_message(loc, fs.join(loc, foreign)))
    fs.empty_dir(loc)


def part_complete(out_dir: Location, index: int) -> bool:
    return fs.kind(fs.join(fs.location(out_dir), part_name(index))) == "file"


def part_metadata(
    stats: Mapping[str, Any] | None, origin: Mapping[str, Any] | None = None
) -> dict[bytes, bytes]:
    """The footer key-value metadata of a part: its counters and what it was made from."""
    meta = {STATS_KEY: json.dumps(dict(stats or {}), sort_keys=True).encode()}
    if origin is not None:
        meta[ORIGIN_KEY] = json.dumps(dict(origin), sort_keys=True).encode()
    return meta


def write_part(
    out_dir: Location,
    index: int,
    table: pa.Table,
    stats: dict[str, Any] | None = None,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    origin: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one part atomically, with ``stats`` (and ``origin``, see :func:`origin_of`) in its
    footer; returns the file entry."""
    final = fs.join(fs.location(out_dir), part_name(index))
    tmp = fs.tmp_for(final)
    meta = dict(table.schema.metadata or {})
    meta.update(part_metadata(stats, origin))
    table = table.replace_schema_metadata(meta)
    filesystem, where = fs.split(tmp)
    pq.write_table(
        table, where, row_group_size=row_group_rows, compression="zstd", filesystem=filesystem
    )
    fs.commit(tmp, final)
    return {"name": part_name(index), "rows": table.num_rows}


def read_part_stats(path: Location) -> dict[str, Any]:
    filesystem, where = fs.split(fs.location(path))
    meta = pq.read_schema(where, filesystem=filesystem).metadata or {}
    raw = meta.get(STATS_KEY)
    return json.loads(raw) if raw else {}


def merge_counts(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up (possibly nested) numeric counters from several parts."""
    total: dict[str, Any] = {}
    for d in items:
        for k, v in d.items():
            if isinstance(v, dict):
                total[k] = merge_counts([total.get(k, {}), v])
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] = total.get(k, 0) + v
            else:
                total[k] = v
    return total


def _where(x: Any) -> str:
    """An input as the manifest records it: local paths made absolute, so a later stage run
    from another directory still finds e.g. the vocab make-shards used; URLs and ``-`` as given."""
    text = str(x)
    if text == "-" or "://" in text:
        return text
    p = Path(text)
    return str(p.resolve()) if p.exists() else text


def config_digest(config: Any, identities: Mapping[str, Any] | None = None) -> str:
    """A short hash of a stage config without its run-only fields (output, workers, shard, ...):
    shards of one dataset must agree on it.

    ``identities`` replaces the values of fields that name inputs by what those inputs hold
    (e.g. :func:`dataset_identity`), so machines that mount the same data at different paths,
    or read it through a URL, still agree.
    """
    cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    opts = {k: v for k, v in cfg.items() if k not in RUN_ONLY_FIELDS}
    opts.update(identities or {})
    return hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:16]


def dataset_identity(manifest: Mapping[str, Any]) -> str:
    """What a dataset holds, wherever it lives: a hash of its stage and its parts' names and
    sha256 (from its manifest)."""
    files = sorted((f["name"], f["sha256"]) for f in manifest.get("files", []))
    raw = json.dumps([manifest.get("stage"), files])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def origin_of(
    stage: str,
    config: Any,
    identities: Mapping[str, Any] | None = None,
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """What a part is made from, as its footer records it: the stage, the config without its
    run-only fields (and ``ignore``: fields that never change the output), and ``identities``
    in place of the fields that name inputs (see :func:`config_digest`)."""
    cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    skip = RUN_ONLY_FIELDS | set(ignore)
    out = {k: v for k, v in cfg.items() if k not in skip}
    out.update(identities or {})
    out["stage"] = stage
    return out


def _origin_and_schema(path: Location) -> tuple[dict[str, Any] | None, pa.Schema]:
    """The origin a part's footer records (None for a part written without one), and its
    schema."""
    filesystem, where = fs.split(fs.location(path))
    try:
        schema = pq.read_schema(where, filesystem=filesystem)
        raw = (schema.metadata or {}).get(ORIGIN_KEY)
        origin = json.loads(raw) if raw else None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(
            f"{path}: not a readable Parquet part ({_first_line(exc)}); --resume cannot keep it "
            "(delete it, or use --overwrite)"
        ) from None
    return (origin if isinstance(origin, dict) else None), schema


def _flag(key: str) -> str:
    if key in ("input", "inputs"):
        return "input"
    return "--" + key.replace("_", "-")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def check_resume(
    out_dir: Location,
    origin: Mapping[str, Any],
    *,
    total_parts: int,
    shard: tuple[int, int] = (0, 1),
    schema: pa.Schema | None = None,
) -> None:
    """Refuse to resume into ``out_dir`` unless every complete part there (of this shard) was
    made from ``origin`` (:func:`origin_of`): same stage, options and inputs (and, given
    ``schema``, has the stage's columns and types).

    Call it before :func:`prepare_output`, so a refused run changes nothing. Raises a
    DatasetError naming the first odd part and what differs. Costs one footer read per part.
    """
    loc = fs.location(out_dir)
    if fs.kind(loc) != "dir":
        return
    stage = origin.get("stage")
    for name in fs.listdir(loc):
        m = _PART_RE.fullmatch(name)
        if not m or name.startswith(".") or m.group(2):
            continue
        if shard[1] > 1 and not _own_name(name, shard):
            continue
        p = fs.join(loc, name)
        if int(m.group(1)) >= total_parts:
            raise DatasetError(
                f"{p}: the input makes only {total_parts} parts, so this one is from another "
                "run; --resume cannot keep it (use --overwrite)"
            )
        found, found_schema = _origin_and_schema(p)
        if found is None:
            raise DatasetError(
                f"{p}: has no record of the options and inputs it was made from (written by "
                "an older albertzh or another tool); --resume cannot keep it (use --overwrite)"
            )
        if found.get("stage") != stage:
            raise DatasetError(
                f"{p}: a part written by {found.get('stage')}, not by {stage}; --resume cannot "
                "keep it (is -o the right directory?)"
            )
        keys = sorted(set(found) | set(origin))
        diff = [k for k in keys if found.get(k) != origin.get(k)]
        if diff:
            what = ", ".join(
                f"{_flag(k)} ({_short(found.get(k))} there, {_short(origin.get(k))} now)"
                for k in diff[:3]
            )
            raise DatasetError(
                f"{p}: written with other {stage} options or inputs: {what}; --resume keeps "
                "only parts made from the same ones (or use --overwrite)"
            )
        if schema is not None and (odd := _schema_difference(found_schema, schema)):
            raise DatasetError(
                f"{p}: not the columns {stage} writes ({odd}); --resume cannot keep it "
                "(use --overwrite)"
            )


def _schema_difference(found: pa.Schema, expected: pa.Schema) -> str | None:
    """The first difference of two schemas' columns, in words (None when they agree)."""
    for field in expected:
        if field.name not in found.names:
            return f"no column '{field.name}'"
        if not found.field(field.name).type.equals(field.type):
            return f"column '{field.name}' is {found.field(field.name).type}, not {field.type}"
    extra = [n for n in found.names if n not in expected.names]
    if extra:
        return f"an extra column '{extra[0]}'"
    if found.names != expected.names:
        return f"columns in another order: {found.names}"
    return None


def finish_output(
    out_dir: Location,
    stage: str,
    config: Any,
    inputs: Sequence[str],
    extra: dict[str, Any] | None = None,
    *,
    shard: tuple[int, int] = (0, 1),
    total_parts: int | None = None,
    digest: str | None = None,
) -> dict[str, Any]:
    """List the parts, hash them, sum their stats, and write ``manifest.json`` last.

    With ``shard=(i, n)``, ``n > 1``: only shard *i*'s parts (index % n == i) are listed, they
    must be exactly the ones of ``total_parts`` units it owns, and the result goes to
    ``manifest.shard-i-of-n.json``. Then, when all n shard manifests are there, they are merged
    into ``manifest.json`` (see :func:`merge_shards`), which is returned; otherwise the shard
    manifest is. ``digest`` (default :func:`config_digest`) is what the shards must agree on.
    """
    out_dir = fs.location(out_dir)
    i, n = shard
    sharded = n > 1
    if sharded and total_parts is None:
        raise ValueError("finish_output: a shard needs total_parts")
    files, rows, stats = [], 0, []
    for name in fs.listdir(out_dir):
        if not fnmatch.fnmatchcase(name, "part-*.parquet"):
            continue
        if sharded and not _own_name(name, shard):
            continue
        p = fs.join(out_dir, name)
        filesystem, where = fs.split(p)
        rows_n = pq.read_metadata(where, filesystem=filesystem).num_rows
        files.append({"name": name, "rows": rows_n, "bytes": fs.size(p), "sha256": sha256_file(p)})
        rows += rows_n
        stats.append(read_part_stats(p))
    cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    manifest = {
        "stage": stage,
        "format_version": FORMAT_VERSION,
        "albertzh_version": __version__,
        "config": cfg,
        "inputs": [_where(x) for x in inputs],
        "files": files,
        "rows": rows,
        "stats": merge_counts(stats),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        manifest.update(extra)
    if not sharded:
        atomic_write_json(fs.join(out_dir, MANIFEST), manifest)
        return manifest
    assert total_parts is not None
    expected = [part_name(k) for k in range(total_parts) if k % n == i]
    found = [f["name"] for f in files]
    if found != expected:
        odd = sorted(set(found) ^ set(expected))
        raise DatasetError(
            f"{out_dir}: shard {i} of {n} should have {len(expected)} parts, found {len(found)} "
            f"(differs at {', '.join(odd[:3])}); re-run it with --overwrite"
        )
    manifest["shard"] = {"index": i, "count": n}
    manifest["total_parts"] = total_parts
    manifest["config_digest"] = digest or config_digest(config)
    atomic_write_json(fs.join(out_dir, shard_manifest_name(i, n)), manifest)
    merged = merge_shards(out_dir, n)
    return merged if merged is not None else manifest


def finished_shards(out_dir: Location, count: int) -> list[int]:
    """Indices of the shards of ``count`` whose shard manifest is in ``out_dir``."""
    done = []
    for name in fs.listdir(fs.location(out_dir)):
        m = _SHARD_MANIFEST_RE.fullmatch(name)
        if m and int(m.group(2)) == count and int(m.group(1)) < count:
            done.append(int(m.group(1)))
    return sorted(done)


def merge_shards(out_dir: Location, count: int) -> dict[str, Any] | None:
    """Write ``manifest.json`` from the ``count`` shard manifests once all are there.

    Returns the merged manifest, or None while shards are missing. Shards that disagree on the
    stage, the config digest or the number of parts raise a DatasetError naming the files.
    Two shards finishing at once may both merge; they write the same content (but ``created``).
    """
    out_dir = fs.location(out_dir)
    if len(finished_shards(out_dir, count)) < count:
        return None
    names = [shard_manifest_name(k, count) for k in range(count)]
    shards = []
    for name in names:
        p = fs.join(out_dir, name)
        try:
            shards.append(json.loads(fs.read_bytes(p).decode("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{p}: unreadable shard manifest ({exc})") from exc

    def key(m: dict[str, Any]) -> tuple[Any, ...]:
        return (m.get("stage"), m.get("config_digest"), m.get("total_parts"))

    first = shards[0]
    for name, m in zip(names[1:], shards[1:], strict=True):
        if key(m) != key(first):
            what = [
                label
                for label, a, b in zip(
                    ("stage", "config or inputs", "number of parts"),
                    key(first),
                    key(m),
                    strict=True,
                )
                if a != b
            ]
            raise DatasetError(
                f"{fs.join(out_dir, names[0])} and {fs.join(out_dir, name)}: shards made with "
                f"a different {' and '.join(what)}; re-run the odd shard with the same options "
                "and inputs and --overwrite"
            )
    files = sorted((f for m in shards for f in m["files"]), key=lambda f: f["name"])
    if len(files) != first["total_parts"]:
        raise DatasetError(
            f"{out_dir}: the {count} shards hold {len(files)} parts, expected "
            f"{first['total_parts']}"
        )
    merged = {k: v for k, v in first.items() if k != "shard"}
    merged["config"] = {
        k: v for k, v in first["config"].items() if k not in ("shard_index", "num_shards")
    }
    merged["num_shards"] = count
    merged["files"] = files
    merged["rows"] = sum(m["rows"] for m in shards)
    merged["stats"] = merge_counts(m["stats"] for m in shards)
    merged["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(fs.join(out_dir, MANIFEST), merged)
    return merged


def shard_figure(out_dir: Location, shard: tuple[int, int]) -> str | None:
    """The stage summary's line on a sharded output: complete, or how many shards are missing."""
    _, n = shard
    if n <= 1:
        return None
    done = finished_shards(out_dir, n)
    if len(done) == n and fs.kind(fs.join(fs.location(out_dir), MANIFEST)) == "file":
        return f"complete: all {n} shards finished, {MANIFEST} written"
    missing = [k for k in range(n) if k not in done]
    return (
        f"{len(done)} of {n} shards finished; {len(missing)} still missing "
        f"(indices {', '.join(map(str, missing))})"
    )


# --------------------------------------------------------------------------- input side


def _refuse_partial_shards(path: Location) -> None:
    """Raise the "only k of n shards" error when ``path`` holds shard manifests only."""
    counts: dict[int, set[int]] = {}
    for name in fs.listdir(path):
        m = _SHARD_MANIFEST_RE.fullmatch(name)
        if m:
            counts.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    if not counts:
        return
    n, done = max(counts.items(), key=lambda kv: (len(kv[1]), kv[0]))
    missing = [k for k in range(n) if k not in done]
    if not missing:  # all there but never merged (a merge failed): say so
        raise DatasetError(
            f"{path}: all {n} shards are finished but {MANIFEST} is missing "
            "(their merge failed; re-run one shard with --resume to see why)"
        )
    raise DatasetError(
        f"{path}: only {len(done & set(range(n)))} of {n} shards are finished "
        f"(missing shard indices {', '.join(map(str, missing))}); run the others"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_manifest(path: Location, stage: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Load and check a stage directory's manifest; refuse incomplete or wrong-stage dirs.

    Also checks, cheaply, that its ``files`` are well formed, stay inside the directory, exist,
    and have the sizes the manifest records (one stat per part); see :func:`open_dataset` for
    the checks that read the parts.
    """
    path = fs.location(path)
    found = fs.kind(path)
    if found is None:
        raise DatasetError(f"{path}: no such directory")
    if found != "dir":
        raise DatasetError(f"{path}: expected a stage output directory, got a file")
    mpath = fs.join(path, MANIFEST)
    if fs.kind(mpath) != "file":
        _refuse_partial_shards(path)
        raise DatasetError(
            f"{path}: no {MANIFEST}; the stage that writes it did not finish (re-run it, with --resume to continue)"
        )
    try:
        manifest = json.loads(fs.read_bytes(mpath).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{mpath}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise DatasetError(f"{mpath}: unreadable manifest (not a JSON object)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{mpath}: format_version {manifest.get('format_version')!r}, this albertzh reads {FORMAT_VERSION}"
        )
    wanted = (stage,) if isinstance(stage, str) else tuple(stage or ())
    if wanted and manifest.get("stage") not in wanted:
        raise DatasetError(
            f"{path}: is a '{manifest.get('stage')}' dataset; expected {' or '.join(wanted)}"
        )
    _check_entries(path, mpath, manifest)
    for f in manifest["files"]:
        p = fs.join(path, f["name"])
        kind, size = _stat(p)
        if kind != "file":
            raise DatasetError(f"{p}: listed in the manifest but missing")
        if size != f["bytes"]:
            raise DatasetError(
                f"{p}: {size} bytes, the manifest says {f['bytes']} (truncated or replaced "
                "since the stage wrote it; re-run that stage)"
            )
    return manifest


_ENTRY_TYPES = {"name": str, "rows": int, "bytes": int, "sha256": str}


def _check_entries(path: Location, mpath: Location, manifest: dict[str, Any]) -> None:
    """The manifest's ``files``: a list of {name, rows, bytes, sha256}, each name a plain file
    name inside the directory (no separators, no ``..``), no name twice, rows adding up."""
    files = manifest.get("files")
    if not isinstance(files, list):
        raise DatasetError(
            f"{mpath}: no 'files' list, so not a complete albertzh dataset (re-run the stage "
            "that wrote it)"
        )
    seen: set[str] = set()
    for k, f in enumerate(files):
        bad = [
            key
            for key, typ in _ENTRY_TYPES.items()
            if not isinstance(f, dict)
            or not isinstance(f.get(key), typ)
            or isinstance(f.get(key), bool)
            or (typ is int and f.get(key) < 0)
        ]
        if bad:
            raise DatasetError(
                f"{mpath}: files[{k}] lacks a valid {', '.join(repr(b) for b in bad)} "
                "(a damaged manifest; re-run the stage that wrote it)"
            )
        name = f["name"]
        if (
            name in ("", ".", "..")
            or name != posixpath.basename(name)
            or "\\" in name
            or "\0" in name
            or ":" in name
        ):
            raise DatasetError(
                f"{mpath}: file name {name!r} is not a plain file name inside {path}; refused"
            )
        if name in seen:
            raise DatasetError(f"{mpath}: file {name!r} is listed twice")
        seen.add(name)
    rows = manifest.get("rows")
    if rows is not None and rows != sum(f["rows"] for f in files):
        raise DatasetError(
            f"{mpath}: 'rows' is {rows}, its files hold {sum(f['rows'] for f in files)} "
            "(a damaged manifest)"
        )


def _stat(loc: Location) -> tuple[str | None, int]:
    """(kind, size) of a location with one stat (one request for a URL)."""
    if not fs.is_remote(loc):
        try:
            st = Path(loc).stat()
        except OSError:
            return None, -1
        return ("file" if stat.S_ISREG(st.st_mode) else "other"), st.st_size
    filesystem, where = fs.resolve(str(loc))
    info = filesystem.get_file_info(where)
    if info.type == pa.fs.FileType.NotFound:
        return None, -1
    return ("file" if info.type == pa.fs.FileType.File else "other"), int(info.size or 0)


def part_paths(path: Location, manifest: dict[str, Any] | None = None) -> list[Location]:
    """The part files of a complete dataset, in order."""
    manifest = manifest or read_manifest(path)
    return [fs.join(fs.location(path), f["name"]) for f in manifest["files"]]


def open_dataset(
    path: Location,
    stage: str | Sequence[str] | None,
    columns: Mapping[str, pa.DataType] | None = None,
    *,
    verify: bool = False,
) -> tuple[dict[str, Any], list[Location]]:
    """A checked dataset: its manifest (:func:`read_manifest`) and its part locations, in
    order, each checked by :func:`check_parts`."""
    manifest = read_manifest(path, stage)
    return manifest, check_parts(path, manifest, columns, verify=verify)


def check_parts(
    path: Location,
    manifest: dict[str, Any],
    columns: Mapping[str, pa.DataType] | None = None,
    *,
    verify: bool = False,
) -> list[Location]:
    """The part locations of a dataset whose manifest :func:`read_manifest` gave, each checked.

    Always (cheap: a footer read per part, sizes were checked with the manifest): its row
    count against the manifest and its schema against ``columns``. With ``verify``: its
    sha256 too (reads every byte once). A part that fails is a DatasetError naming it.
    """
    parts = part_paths(path, manifest)
    for p, f in zip(parts, manifest["files"], strict=True):
        meta = read_metadata(p)
        if meta.num_rows != f["rows"]:
            raise DatasetError(
                f"{p}: {meta.num_rows} rows, the manifest says {f['rows']} (replaced since the "
                "stage wrote it; re-run that stage)"
            )
        if columns:
            check_schema(p, columns, meta.schema.to_arrow_schema())
        if verify and _sha256_of_part(p) != f["sha256"]:
            raise DatasetError(
                f"{p}: sha256 differs from the manifest's (changed or replaced since the stage "
                "wrote it; re-run that stage)"
            )
    return parts


def _sha256_of_part(path: Location) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({_first_line(exc)})") from None


def read_metadata(path: Location) -> pq.FileMetaData:
    """The Parquet footer of one part file (an unreadable one is a DatasetError naming it)."""
    filesystem, where = fs.split(fs.location(path))
    try:
        return pq.read_metadata(where, filesystem=filesystem)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None


def open_parquet(path: Location) -> pq.ParquetFile:
    """One part file opened for reading (row groups, batches)."""
    filesystem, where = fs.split(fs.location(path))
    try:
        return pq.ParquetFile(where, filesystem=filesystem)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None


def check_schema(
    path: Location, required: Mapping[str, pa.DataType], schema: pa.Schema | None = None
) -> None:
    """Raise a DatasetError naming the file and column when a part lacks a required column
    (``schema``: the part's, when already read)."""
    if schema is None:
        filesystem, where = fs.split(fs.location(path))
        try:
            schema = pq.read_schema(where, filesystem=filesystem)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(
                f"{path}: not a readable Parquet file ({_first_line(exc)})"
            ) from None
    for name, typ in required.items():
        if name not in schema.names:
            raise DatasetError(f"{path}: missing column '{name}'")
        if schema.field(name).type != typ:
            raise DatasetError(
                f"{path}: column '{name}' has type {schema.field(name).type}, expected {typ}"
            )


def iter_batches(
    path: Location, columns: Sequence[str] | None = None, batch_rows: int = DEFAULT_ROW_GROUP_ROWS
) -> Iterator[pa.RecordBatch]:
    """Stream record batches (only ``columns``) of one part file; a part that cannot be
    decoded is a DatasetError naming it."""
    with open_parquet(path) as pf:
        batches = pf.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as exc:
                raise DatasetError(
                    f"{path}: damaged Parquet data ({_first_line(exc)}); check the dataset "
                    "with --verify or re-run the stage that wrote it"
                ) from None
            yield batch


# --------------------------------------------------------------------------- parallel work units


def select_shard(
    units: Sequence[T], shard_index: int = 0, num_shards: int = 1
) -> list[tuple[int, T]]:
    """The (global index, unit) pairs this machine processes: every ``num_shards``-th unit."""
    return [(i, u) for i, u in enumerate(units) if i % num_shards == shard_index]


def _pool_context() -> mp.context.BaseContext:
    # fork is cheap and inherits imported modules; fall back to spawn where unavailable.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def map_units(fn: Callable[[T], R], units: Sequence[T], workers: int = 1) -> Iterator[R]:
    """Apply ``fn`` to every unit, in order, in ``workers`` processes (inline when 1).

    ``fn`` must be a module-level function (picklable). Results come back in unit order, so
    outputs do not depend on the number of workers.
    """
    if workers <= 1 or len(units) <= 1:
        for u in units:
            yield fn(u)
        return
    with ProcessPoolExecutor(
        max_workers=min(workers, len(units)), mp_context=_pool_context()
    ) as ex:
        yield from ex.map(fn, units, chunksize=1)
