"""Where stage datasets live: a local path or a URL, and the few file operations they need.

A *location* is a :class:`~pathlib.Path` (the local disk) or a URL string such as
``s3://bucket/corpus/docs`` (:func:`location` makes one from what a user typed; a ``Path``
would collapse ``s3://b/x`` to ``s3:/b/x``, so URLs stay strings). Local paths use plain
``os``/``pathlib`` calls (fsync before rename, as always); a URL is resolved to a
``pyarrow.fs.FileSystem``: pyarrow's own for the schemes it knows (``file``, ``s3``, ``gs``,
``hdfs``, ``abfs``, ... as far as this pyarrow build supports them), otherwise an fsspec
filesystem (``memory``, ``gcs``/``s3`` through gcsfs/s3fs, ...) wrapped in
``PyFileSystem(FSSpecHandler(...))`` when fsspec is installed.

Only location strings travel to worker processes: each process resolves its own filesystem
(:func:`resolve` caches it per URL), so nothing unpicklable crosses a process boundary.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterator
from functools import lru_cache
from os import PathLike
from pathlib import Path, PurePath
from typing import IO, Any, Union

import pyarrow as pa
import pyarrow.fs as pafs

from albertzh.config import is_url
from albertzh.errors import AlbertzhError, DatasetError

Location = Union[Path, str]  # noqa: UP007  (a runtime alias, used in annotations)


def location(value: str | PathLike[str]) -> Location:
    """A URL string as given, anything else as a ``Path``."""
    if isinstance(value, Path):
        return value
    text = os.fspath(value) if isinstance(value, (PathLike, PurePath)) else str(value)
    return text if is_url(text) else Path(text)


def is_remote(loc: Location) -> bool:
    """True for a URL location (handled through a pyarrow filesystem)."""
    return isinstance(loc, str) and is_url(loc)


def _query(url: str) -> tuple[str, str]:
    """``("s3://b/x", "?region=..")`` for ``"s3://b/x?region=.."`` (the query stays at the end)."""
    base, sep, query = url.partition("?")
    return base, sep + query


def join(loc: Location, name: str) -> Location:
    """``loc / name`` for a path; the URL with ``/name`` appended for a URL."""
    if not is_remote(loc):
        return Path(loc) / name
    base, query = _query(str(loc))
    return f"{base.rstrip('/')}/{name}{query}"


def name_of(loc: Location) -> str:
    """The last component of a location."""
    if not is_remote(loc):
        return Path(loc).name
    base, _ = _query(str(loc))
    return base.rstrip("/").rsplit("/", 1)[-1]


def tmp_for(loc: Location) -> Location:
    """A temporary name beside ``loc`` for this process (hidden, so listings skip it)."""
    if not is_remote(loc):
        p = Path(loc)
        return p.with_name(f".{p.name}.tmp-{os.getpid()}")
    base, query = _query(str(loc))
    head, _, name = base.rstrip("/").rpartition("/")
    return f"{head}/.{name}.tmp-{os.getpid()}{query}"


# --------------------------------------------------------------------------- resolving URLs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@lru_cache(maxsize=256)
def _resolve(url: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(url)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        # A scheme pyarrow does not know (or was built without): try fsspec.
        arrow_error = exc
    except OSError as exc:  # known scheme, but it cannot be reached or set up
        raise DatasetError(f"{url}: cannot open this URL ({_first_line(exc)})") from None
    try:
        import fsspec
    except ImportError:
        raise DatasetError(
            f"{url}: cannot open this URL ({_first_line(arrow_error)}; "
            "install fsspec for more URL schemes)"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:  # unknown protocol / its package not installed
        raise DatasetError(
            f"{url}: cannot open this URL ({_first_line(arrow_error)}; fsspec: {_first_line(exc)})"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def resolve(url: str, error: type[AlbertzhError] = DatasetError) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it for a URL (cached per process).

    An unknown scheme, a missing fsspec package or an unreachable store raise ``error``
    naming the URL.
    """
    try:
        return _resolve(url)
    except DatasetError as exc:
        if error is DatasetError:
            raise
        raise error(str(exc)) from None


def split(loc: Location) -> tuple[pafs.FileSystem | None, Any]:
    """``(filesystem, path)`` for the ``filesystem=`` argument of pyarrow's Parquet readers and
    writers: ``(None, loc)`` for a local path, so local files are read exactly as before."""
    if not is_remote(loc):
        return None, loc
    return resolve(str(loc))


# --------------------------------------------------------------------------- file operations


def kind(loc: Location) -> str | None:
    """``"file"``, ``"dir"`` or ``"other"``, or None when nothing is there."""
    if not is_remote(loc):
        p = Path(loc)
        if not p.exists():
            return None
        return "dir" if p.is_dir() else "file" if p.is_file() else "other"
    fs, path = resolve(str(loc))
    t = fs.get_file_info(path).type
    if t == pafs.FileType.NotFound:
        return None
    return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(t, "other")


def listdir(loc: Location) -> list[str]:
    """The names in a directory (hidden ones included), sorted."""
    if not is_remote(loc):
        return sorted(p.name for p in Path(loc).iterdir())
    fs, path = resolve(str(loc))
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def size(loc: Location) -> int:
    if not is_remote(loc):
        return Path(loc).stat().st_size
    fs, path = resolve(str(loc))
    return int(fs.get_file_info(path).size)


@contextlib.contextmanager
def open_input(loc: Location) -> Iterator[IO[bytes]]:
    """A binary stream reading the whole file."""
    if not is_remote(loc):
        with open(loc, "rb") as f:
            yield f
        return
    fs, path = resolve(str(loc))
    with fs.open_input_stream(path) as f:
        yield f  # type: ignore[misc]


def read_bytes(loc: Location) -> bytes:
    with open_input(loc) as f:
        return f.read()


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a file (not atomic: write a :func:`tmp_for` name and :func:`commit` it)."""
    if not is_remote(loc):
        Path(loc).write_bytes(data)
        return
    fs, path = resolve(str(loc))
    with fs.open_output_stream(path, compression=None) as f:
        f.write(data)


def remove(loc: Location, missing_ok: bool = False) -> None:
    """Delete one file."""
    if not is_remote(loc):
        Path(loc).unlink(missing_ok=missing_ok)
        return
    fs, path = resolve(str(loc))
    if missing_ok and fs.get_file_info(path).type == pafs.FileType.NotFound:
        return
    fs.delete_file(path)


def makedirs(loc: Location) -> None:
    """Create a directory and its parents (object stores: a no-op or a marker object)."""
    if not is_remote(loc):
        Path(loc).mkdir(parents=True, exist_ok=True)
        return
    fs, path = resolve(str(loc))
    fs.create_dir(path, recursive=True)


def empty_dir(loc: Location) -> None:
    """Delete everything in a directory (``--overwrite``); it is left empty (or gone, locally)."""
    if not is_remote(loc):
        import shutil

        shutil.rmtree(loc)
        return
    # delete_dir_contents, not delete_dir: the output may be a bucket's root.
    fs, path = resolve(str(loc))
    fs.delete_dir_contents(path, missing_dir_ok=True)


def commit(tmp: Location, final: Location) -> None:
    """Give a finished temporary file its final name.

    Locally: fsync, then rename (atomic). On a URL: ``FileSystem.move``, a rename on file-like
    stores (file://, hdfs, memory). On object stores (s3, gs) a move is a server-side copy
    plus delete: not atomic, but an object is only visible once it is complete, so a reader
    never sees half a file under the final name. Where a filesystem cannot move at all, the
    file is copied and the temporary one deleted.
    """
    if not is_remote(final):
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return
    fs, src = resolve(str(tmp))
    _, dst = resolve(str(final))
    try:
        fs.move(src, dst)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        fs.copy_file(src, dst)
        fs.delete_file(src)
