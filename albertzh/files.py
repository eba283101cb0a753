"""Local files: atomic writes and sha256 digests (no pyarrow, no torch).

An atomic write puts the content under a hidden temporary name in the destination's directory
(``.NAME.tmp-PID-XXXXXXXX``, so listings and the datasets' ``.*.tmp-*`` clean-up see it as a
temporary file), fsyncs it and ``os.replace``\\ s it onto the destination: a reader sees the old
file or the complete new one, never half a file. On an error the temporary file is removed and
the destination is left as it was. Parent directories are not created.

Stage datasets that may live at a URL use :func:`albertzh.data.dataset.atomic_write_bytes`
instead, which comes here for local paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

StrPath = str | os.PathLike[str]

_CHUNK = 1 << 20


def _open_temp(path: Path, binary: bool, encoding: str) -> tuple[Path, IO[Any]]:
    """A new temporary file beside ``path`` (created exclusively, with the umask's mode)."""
    while True:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            if binary:
                return tmp, open(tmp, "xb")  # noqa: SIM115  (closed by the caller)
            return tmp, open(tmp, "x", encoding=encoding)  # noqa: SIM115
        except FileExistsError:  # pragma: no cover  (a 32-bit random name taken)
            continue


@contextlib.contextmanager
def atomic_writer(path: StrPath, mode: str = "w", *, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success fsync and rename it onto
    ``path``. If the ``with`` body raises, the temporary file is removed and ``path`` untouched.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"`` (bytes).
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_writer: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    tmp, f = _open_temp(path, binary="b" in mode, encoding=encoding)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: StrPath, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: StrPath, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (newlines written as given)."""
    atomic_write_bytes(path, text.encode(encoding))


def json_text(obj: Any) -> str:
    """``obj`` as albertzh writes JSON files: indent 2, non-ASCII kept, trailing newline."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def atomic_write_json(path: StrPath, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically as JSON (indent 2, non-ASCII kept, final newline)."""
    atomic_write_text(path, json_text(obj))


def sha256_bytes(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: StrPath, chunk: int = _CHUNK) -> str:
    """The sha256 hex digest of a local file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
