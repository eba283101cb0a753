"""Outputs that never cost a user data: apart from the inputs, replaced only where albertzh
wrote them, written by one process at a time (the promises are in docs/guarantees.md).

- :func:`check_apart`: an output may never be, hold or sit inside an input (paths resolved,
  symlinks followed; URLs compared by scheme and path). Stages call it first, before reading.
- :class:`Layout`: what albertzh writes in one kind of output directory (a dataset, a run
  directory, ...). :func:`prepare_dir` refuses a non-empty directory without ``--resume`` or
  ``--overwrite``; ``--overwrite`` (:func:`clear`) deletes only the layout's entries and
  refuses, naming it, a directory holding anything else. :func:`check_file_output`: a
  single-file output replaces an existing file only with ``--overwrite``.
- :func:`locked`: an exclusive lock on an output directory while a stage writes there: the file
  ``.albertzh.lock`` (pid, host, process start time), created with ``O_EXCL``; a second writer
  gets one line. The lock is removed on the way out (errors, Ctrl-C and an unhandled SIGTERM
  included). A lock left by a process that is gone (SIGKILL, a crash) is reported and broken
  only with ``--break-lock``; the lock of a live process is never broken. Lock files are never
  "foreign" and never outlive the run. URLs are not locked (object stores have no O_EXCL).

Base module: no pyarrow, no torch.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from albertzh.config import is_url
from albertzh.console import err_console
from albertzh.errors import InputError

LOCK_FILE = ".albertzh.lock"
_LOCKS = ".albertzh*.lock*"  # every lock name (shard locks, a lock being broken) matches
_SHARD_LOCKS = ".albertzh-shard-*.lock"
# albertzh's temporary names (files.atomic_writer, fs.tmp_for, staging dirs): ``.NAME.tmp-...``.
TEMP_PATTERNS = (".*.tmp-*", ".*.tmp")


# --------------------------------------------------------------------------- inputs vs outputs


def _place(x: Any) -> tuple[str, PurePath] | None:
    """(scheme, absolute path) of a location; None for stdin/stdout (``-``) and empty values."""
    text = os.fspath(x) if isinstance(x, os.PathLike) else str(x)
    if not text or text == "-":
        return None
    if is_url(text):
        scheme, _, rest = text.partition("://")
        rest = rest.partition("?")[0]
        if scheme.lower() != "file":
            return scheme.lower(), PurePosixPath("/" + rest.strip("/"))
        text = rest or "/"
    path = Path(text).expanduser()
    try:
        return "", path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare what we can
        return "", path.absolute()


def check_apart(output: Any, inputs: Mapping[str, Any], flag: str = "-o") -> None:
    """Refuse an ``output`` that is, holds or sits inside one of ``inputs``.

    ``inputs`` maps the flag that names an input (``"--data"``, ``"INPUT"``) to a location, a
    list of them, or None.
    """
    out = _place(output)
    if out is None:
        return
    for name, value in inputs.items():
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        for v in values:
            place = None if v is None else _place(v)
            if place is None or place[0] != out[0]:
                continue
            if place[1] == out[1]:
                how = "is the input"
            elif out[1] in place[1].parents:
                how = "holds the input"
            elif place[1] in out[1].parents:
                how = "is inside the input"
            else:
                continue
            raise InputError(
                f"{output}: {flag} {how} {name} {v}; write the output somewhere else "
                "(an output may never be, hold or sit inside an input)"
            )


def check_file_output(path: Path, *, overwrite: bool, flag: str) -> None:
    """A single-file output: never a directory; an existing file only with ``--overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {flag} is a directory; give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise InputError(f"{path}: {flag} exists (use --overwrite to replace it)")


# --------------------------------------------------------------------------- what albertzh wrote


def is_lock(name: str) -> bool:
    """Whether a directory entry is an albertzh lock file."""
    return fnmatch.fnmatchcase(name, _LOCKS)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class Layout:
    """What albertzh writes in one kind of output directory.

    ``owned``: name patterns of entries albertzh writes (a directory among them is its whole);
    ``inside``: (pattern, layout) of subdirectories whose entries follow their own layout.
    Lock files and albertzh's temporary names (:data:`TEMP_PATTERNS`) belong to every layout.
    """

    kind: str
    owned: tuple[str, ...] = ()
    inside: tuple[tuple[str, Layout], ...] = ()

    def _sub(self, name: str) -> Layout | None:
        return next((lay for pat, lay in self.inside if fnmatch.fnmatchcase(name, pat)), None)

    def owns(self, name: str) -> bool:
        """Whether an entry called ``name`` may be albertzh's (by name only: for URLs)."""
        return (
            is_lock(name)
            or _matches(name, (*TEMP_PATTERNS, *self.owned))
            or self._sub(name) is not None
        )

    def foreign(self, path: Path) -> Path | None:
        """The first entry under ``path`` that albertzh did not write, or None."""
        for entry in sorted(Path(path).iterdir()):
            name = entry.name
            if is_lock(name):
                continue
            if entry.is_symlink():  # albertzh never writes links
                return entry
            if _matches(name, (*TEMP_PATTERNS, *self.owned)):
                continue
            sub = self._sub(name)
            if sub is None or not entry.is_dir():
                return entry
            found = sub.foreign(entry)
            if found is not None:
                return found
        return None


def entries(path: Path) -> list[str]:
    """The names in a directory, lock files left out ([] when it does not exist)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(n for n in os.listdir(path) if not is_lock(n))


def foreign_message(path: Any, entry: Any) -> str:
    return (
        f"{path}: --overwrite refused: {entry} was not written by albertzh (--overwrite deletes "
        "only albertzh's own files; move it away or choose another output)"
    )


def check_foreign(path: Path, layout: Layout) -> None:
    """Refuse, naming it, an entry under ``path`` that albertzh did not write."""
    bad = layout.foreign(path)
    if bad is not None:
        raise InputError(foreign_message(path, bad))


def clear(path: Path, layout: Layout, keep: Iterable[str] = ()) -> None:
    """``--overwrite``: delete every entry of ``path`` (but lock files and ``keep``), after
    checking that albertzh wrote all of them; otherwise delete nothing and refuse."""
    path = Path(path)
    check_foreign(path, layout)
    keep = set(keep)
    for name in entries(path):
        if name not in keep:
            p = path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)


def prepare_dir(
    path: Path, layout: Layout, *, resume: bool = False, overwrite: bool = False
) -> Path:
    """Create (or re-open) a local output directory.

    A non-empty one needs ``resume`` (taken as it is) or ``overwrite`` (:func:`clear`).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: {layout.kind} exists and is not a directory")
    if entries(path):
        if overwrite:
            clear(path, layout)
        elif not resume:
            raise InputError(
                f"{path}: {layout.kind} is not empty (use --resume to continue or --overwrite to replace it)"
            )
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- one writer at a time


def lock_name(shard: tuple[int, int] | None = None) -> str:
    """The lock file of a whole directory, or of shard ``(i, n)`` of a sharded output."""
    if shard is None or shard[1] <= 1:
        return LOCK_FILE
    return f".albertzh-shard-{shard[0]}-of-{shard[1]}.lock"


def _proc_start(pid: int) -> int | None:
    """When process ``pid`` started (Linux: clock ticks since boot), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(holder: Mapping[str, Any]) -> bool | None:
    """True: the lock's process runs; False: it is gone; None: cannot tell (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    except OSError:
        return None
    start, now = holder.get("start"), _proc_start(pid)
    return start is None or now is None or start == now  # else the pid was reused


class DirLock:
    """An exclusive lock on an output directory: the file ``name`` in it, made with O_EXCL.

    ``conflicts`` is a pattern of other lock names that exclude this one while their process
    lives (a sharded and an unsharded writer of one directory).
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str = LOCK_FILE,
        break_lock: bool = False,
        conflicts: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.break_lock = break_lock
        self.conflicts = conflicts
        self.held = False
        self._pid = os.getpid()
        self._token = secrets.token_hex(8)

    def _info(self) -> dict[str, Any]:
        return {
            "pid": self._pid,
            "host": socket.gethostname(),
            "start": _proc_start(self._pid),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "token": self._token,
        }

    def _read(self, path: Path | None = None) -> tuple[bytes | None, dict[str, Any] | None]:
        """(raw bytes or None when gone, parsed holder or None when unreadable)."""
        try:
            raw = (path or self.path).read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError:
            return b"", None
        try:
            holder = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return raw, None
        return raw, holder if isinstance(holder, dict) else None

    def acquire(self) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise InputError(
                        f"{self.directory}: another albertzh keeps taking the lock "
                        f"{self.path.name}; wait for it to finish"
                    ) from None
                self._existing()
                continue
            except OSError as exc:
                raise InputError(
                    f"{self.directory}: cannot create the lock file {self.path.name} "
                    f"({exc.strerror or exc})"
                ) from None
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(json.dumps(self._info()) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
            self.held = True
            self._check_conflicts()
            return

    def _existing(self) -> None:
        """The lock file is there: refuse, or (``--break-lock``, holder gone) break it."""
        raw, holder = self._read()
        if raw is None:  # released meanwhile: try again
            return
        if holder is None and self._young():  # being written right now
            time.sleep(0.05)
            return
        alive = _alive(holder) if holder is not None else None
        if alive or not self.break_lock:
            raise InputError(self._message(holder, alive))
        self._break(raw, holder)

    def _young(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime < 2.0
        except OSError:
            return False

    def _message(self, holder: Mapping[str, Any] | None, alive: bool | None) -> str:
        where = self.directory
        if holder is None:
            return (
                f"{where}: locked ({self.path.name} is unreadable); if no albertzh is writing "
                "here, run again with --break-lock"
            )
        who = f"pid {holder.get('pid')} on {holder.get('host')}"
        since = f" since {holder['created']}" if holder.get("created") else ""
        if alive:
            note = (
                " (--break-lock breaks only the lock of a process that is gone)"
                if self.break_lock
                else ""
            )
            return (
                f"{where}: another albertzh ({who}{since}) is writing here; wait for it to "
                f"finish{note}"
            )
        if alive is False:
            return (
                f"{where}: locked by {who}{since}, which is no longer running (killed or "
                "crashed?); run again with --break-lock to break its stale lock"
            )
        return (
            f"{where}: locked by {who}{since} (another machine); if that run is gone, run "
            "again with --break-lock"
        )

    def _break(self, raw: bytes, holder: Mapping[str, Any] | None) -> None:
        # Move it aside and check it is still the lock judged stale: another writer may have
        # broken it and taken the lock in between (then it goes back).
        aside = self.path.with_name(f"{self.path.name}.broken-{os.getpid()}-{self._token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if self._read(aside)[0] != raw:
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        who = f" of pid {holder.get('pid')} on {holder.get('host')}" if holder else ""
        err_console.print(
            f"{self.directory}: broke the stale lock{who}", highlight=False, markup=False
        )

    def _check_conflicts(self) -> None:
        if self.conflicts is None:
            return
        for name in sorted(os.listdir(self.directory)):
            if name == self.path.name or not fnmatch.fnmatchcase(name, self.conflicts):
                continue
            _, holder = self._read(self.directory / name)
            if holder is not None and _alive(holder) is not False:
                self.release()
                raise InputError(
                    f"{self.directory}: pid {holder.get('pid')} on {holder.get('host')} holds "
                    f"{name}; a sharded and an unsharded run cannot write here at once"
                )

    def release(self) -> None:
        """Remove the lock file, if it is still this process's own."""
        if not self.held or os.getpid() != self._pid:  # a forked child never releases
            return
        self.held = False
        _, holder = self._read()
        if holder is not None and holder.get("token") == self._token:
            self.path.unlink(missing_ok=True)


def _makedirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; returns the directories created, outermost first."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create the directory ({exc.strerror or exc})") from None
    return list(reversed(missing))


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While the body runs, an unhandled SIGTERM exits through the ``finally`` blocks (exit
    143), so the lock is released; a handler someone else installed is left alone."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def locked(
    directory: Path, *, break_lock: bool = False, shard: tuple[int, int] | None = None
) -> Iterator[None]:
    """Hold ``directory``'s lock (shard ``(i, n)``'s own lock when sharded) while the body runs.

    The directory is created if needed, and removed again at the end when it was created here
    and is still empty (a run refused on its inputs leaves nothing behind). A path that exists
    and is not a directory is not locked: the stage reports it.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        yield
        return
    created = _makedirs(directory)
    sharded = shard is not None and shard[1] > 1
    lock = DirLock(
        directory,
        name=lock_name(shard),
        break_lock=break_lock,
        conflicts=LOCK_FILE if sharded else _SHARD_LOCKS,
    )
    try:
        lock.acquire()
        with _sigterm_unwinds():
            yield
    finally:
        lock.release()
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
