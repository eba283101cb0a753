"""Stage datasets on disk: Parquet parts plus a manifest written last, atomically.

A stage output directory holds ``part-00000.parquet``, ``part-00001.parquet``, ... and a
``manifest.json``. Part *i* is the output of work unit *i* (an input file, chunk or part), so
the layout is the same whatever the number of workers, and ``--resume`` can skip units whose
part already exists. Each part is written to a temporary name, fsynced and renamed, so a part
with its final name is always complete; per-part counters (kept/dropped rows, ...) travel in
the Parquet footer's key-value metadata under ``albertzh.stats``.

A directory without ``manifest.json`` is incomplete, and :func:`read_manifest` refuses it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from albertzh import __version__
from albertzh.errors import DatasetError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STATS_KEY = b"albertzh.stats"
DEFAULT_ROW_GROUP_ROWS = 8192

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------- small file helpers


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# --------------------------------------------------------------------------- output side


def prepare_output(path: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Create (or re-open with ``resume``) a stage output directory.

    A non-empty directory is refused unless ``resume`` (keep complete parts) or ``overwrite``
    (delete it first) is given, so a re-run never silently mixes old and new parts.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DatasetError(f"{path}: output exists and is not a directory")
    if path.exists() and any(path.iterdir()):
        if overwrite:
            shutil.rmtree(path)
        elif not resume:
            raise DatasetError(
                f"{path}: output directory is not empty (use --resume to continue or --overwrite to replace it)"
            )
    path.mkdir(parents=True, exist_ok=True)
    if resume:
        # The manifest describes a finished run; it is rewritten at the end of this one.
        (path / MANIFEST).unlink(missing_ok=True)
        for stale in path.glob(".*.tmp-*"):
            stale.unlink()
    return path


def part_complete(out_dir: Path, index: int) -> bool:
    return (Path(out_dir) / part_name(index)).is_file()


def write_part(
    out_dir: Path,
    index: int,
    table: pa.Table,
    stats: dict[str, Any] | None = None,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> dict[str, Any]:
    """Write one part atomically, with ``stats`` in its footer; returns the file entry."""
    out_dir = Path(out_dir)
    final = out_dir / part_name(index)
    tmp = out_dir / f".{final.name}.tmp-{os.getpid()}"
    meta = dict(table.schema.metadata or {})
    meta[STATS_KEY] = json.dumps(stats or {}, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    pq.write_table(table, tmp, row_group_size=row_group_rows, compression="zstd")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return {"name": final.name, "rows": table.num_rows}


def read_part_stats(path: Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
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


def finish_output(
    out_dir: Path,
    stage: str,
    config: Any,
    inputs: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """List the parts, hash them, sum their stats, and write ``manifest.json`` last."""
    out_dir = Path(out_dir)
    files, rows, stats = [], 0, []
    for p in sorted(out_dir.glob("part-*.parquet")):
        n = pq.read_metadata(p).num_rows
        files.append(
            {"name": p.name, "rows": n, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        )
        rows += n
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
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


# --------------------------------------------------------------------------- input side


def read_manifest(path: Path, stage: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Load and check a stage directory's manifest; refuse incomplete or wrong-stage dirs."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such directory")
    if not path.is_dir():
        raise DatasetError(f"{path}: expected a stage output directory, got a file")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise DatasetError(
            f"{path}: no {MANIFEST}; the stage that writes it did not finish (re-run it, with --resume to continue)"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{mpath}: unreadable manifest ({exc})") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{mpath}: format_version {manifest.get('format_version')!r}, this albertzh reads {FORMAT_VERSION}"
        )
    wanted = (stage,) if isinstance(stage, str) else tuple(stage or ())
    if wanted and manifest.get("stage") not in wanted:
        raise DatasetError(
            f"{path}: is a '{manifest.get('stage')}' dataset; expected {' or '.join(wanted)}"
        )
    for f in manifest.get("files", []):
        if not (path / f["name"]).is_file():
            raise DatasetError(f"{path / f['name']}: listed in the manifest but missing")
    return manifest


def part_paths(path: Path, manifest: dict[str, Any] | None = None) -> list[Path]:
    """The part files of a complete dataset, in order."""
    manifest = manifest or read_manifest(path)
    return [Path(path) / f["name"] for f in manifest["files"]]


def check_schema(path: Path, required: dict[str, pa.DataType]) -> None:
    """Raise a DatasetError naming the file and column when a part lacks a required column."""
    schema = pq.read_schema(path)
    for name, typ in required.items():
        if name not in schema.names:
            raise DatasetError(f"{path}: missing column '{name}'")
        if schema.field(name).type != typ:
            raise DatasetError(
                f"{path}: column '{name}' has type {schema.field(name).type}, expected {typ}"
            )


def iter_batches(
    path: Path, columns: Sequence[str] | None = None, batch_rows: int = DEFAULT_ROW_GROUP_ROWS
) -> Iterator[pa.RecordBatch]:
    """Stream record batches (only ``columns``) of one part file."""
    pf = pq.ParquetFile(path)
    yield from pf.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None)


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
