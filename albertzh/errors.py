"""User-caused errors. The CLI prints one red line for these and exits with code 2."""

from __future__ import annotations

import errno
import os
import re
from typing import Any


class AlbertzhError(Exception):
    """Base class for errors a user can cause (bad path, bad config, bad data)."""


class InputError(AlbertzhError):
    """An input file or directory is missing, unreadable, or malformed."""


class ConfigError(AlbertzhError):
    """A configuration value is invalid; the message names the flag or field."""


class DatasetError(AlbertzhError):
    """A stage directory is incomplete, of the wrong stage, or has the wrong schema."""


class VocabMismatchError(AlbertzhError):
    """Data was produced with another vocabulary than the one in use."""


class ModelDirError(AlbertzhError):
    """A model directory is missing files or its weights do not match the config."""


class FileSystemError(AlbertzhError):
    """A file or directory cannot be read or written: permission denied, disk full, read-only."""


# The OSErrors a user's files and disks cause, as the one line says them; any other errno stays a
# traceback (a bug to report).
_ERRNO_TEXT = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large for the file system",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
}


def from_os_error(
    exc: BaseException, where: str | os.PathLike[str] | None = None, *, where_first: bool = False
) -> AlbertzhError | None:
    """The one-line error for an OSError caused by the user's files or disk, else None.

    Also finds that OSError behind a library's own exception: torch.save's ``RuntimeError``
    (the OSError as its context) and safetensors' ``... (os error 28)``. The line names the
    OSError's path (a hidden temporary file is named by its directory, the place the user can
    fix), else (or with ``where_first``) ``where``: ``run/checkpoints: no space left on device``.
    """
    found = _os_error_in(exc)
    if found is None:
        return None
    code, path = found
    text = _ERRNO_TEXT[code]
    path = where if path in (None, "") or where_first else path
    if path is None:
        return FileSystemError(text)
    path = os.fsdecode(path)
    name = os.path.basename(path)
    if name.startswith(".") and ".tmp" in name:  # a temporary file of an atomic write
        path = os.path.dirname(path) or "."
    return FileSystemError(f"{path}: {text}")


def _os_error_in(exc: BaseException | None, depth: int = 0) -> tuple[int, Any] | None:
    """(errno, path or None) of a known OSError that is ``exc`` or caused it."""
    if exc is None or depth > 4 or isinstance(exc, BrokenPipeError):
        return None
    if isinstance(exc, OSError):
        if exc.errno in _ERRNO_TEXT:
            return exc.errno, exc.filename
        return None
    match = re.search(r"\(os error (\d+)\)", str(exc))  # Rust's io::Error (safetensors)
    if match and int(match.group(1)) in _ERRNO_TEXT:
        return int(match.group(1)), None
    return _os_error_in(exc.__cause__, depth + 1) or _os_error_in(exc.__context__, depth + 1)
