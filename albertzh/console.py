"""Terminal output: rich progress on a terminal, quiet when piped; summaries as a table or JSON."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# All human-facing chatter goes to stderr so stdout stays clean for --json and pipelines.
err_console = Console(stderr=True)
out_console = Console()


@dataclass
class Summary:
    """What a stage reports when it ends: a title and (possibly nested) figures."""

    stage: str
    figures: dict[str, Any] = field(default_factory=dict)
    # Non-zero when the run did not finish although its summary is valid: 130/143 after
    # SIGINT/SIGTERM (a checkpoint was saved). The CLI exits with it after printing.
    exit_code: int = field(default=0, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **self.figures}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def print_summary(summary: Summary, as_json: bool = False) -> None:
    """Print a summary: one JSON object on stdout with ``as_json``, else a rich table."""
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict(), ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()
        return
    table = Table(title=f"albertzh {summary.stage}", show_header=False, title_justify="left")
    table.add_column("what", style="cyan")
    table.add_column("value", justify="right")
    for k, v in _flatten(summary.figures):
        table.add_row(escape(k), escape(_fmt(v)))
    out_console.print(table)


def print_error(message: str) -> None:
    """The one red ``error:`` line on stderr that every user error ends with."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    err_console.file.flush()


def print_warning(message: str) -> None:
    """One yellow ``warning:`` line on stderr: something was worked around, the run goes on."""
    err_console.print(
        f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True
    )
    err_console.file.flush()


def interactive() -> bool:
    """True when progress bars should be drawn (stderr is a terminal)."""
    return err_console.is_terminal


LOG_EVERY_SECONDS = 30.0  # off a terminal, a time-driven progress line at most this often


@contextmanager
def progress(
    description: str, total: float | None = None, unit: str = "", enabled: bool = True
) -> Iterator[Any]:
    """A progress bar on a terminal; plain log lines on stderr otherwise.

    Yields an object with ``advance(n=1)``, ``skip(n)`` (work a resumed run had done),
    ``update(**fields)`` (the latest figures) and
    ``log(**fields)`` (a training stage's every ``--log-every`` steps); with ``enabled=False``
    (DDP ranks but the first) it does nothing. Off a terminal (nohup,
    ``tee``, SLURM, CI) nothing is drawn: ``log`` prints one line at once, and work that never
    calls it prints one line every :data:`LOG_EVERY_SECONDS` (units done, rate, ETA).
    """
    if not enabled:  # e.g. DDP ranks other than 0
        yield _Quiet()
        return
    if not interactive():
        yield _LogLines(description, total, unit)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn()
        if total
        else TextColumn("{task.completed:,.0f}" + (f" {unit}" if unit else "")),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False) as prog:
        task = prog.add_task(description, total=total, info="")
        yield _Bar(prog, task)


def _count(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Quiet:
    def advance(self, n: float = 1) -> None:
        pass

    def skip(self, n: float) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass

    def log(self, **fields: Any) -> None:
        pass


class _LogLines:
    """Progress as plain lines on stderr, for logs that nobody watches live."""

    def __init__(self, description: str, total: float | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.done = 0.0
        self.skipped = 0.0  # work done before this run (a resumed training run's steps)
        self.t0 = self.last_line = time.monotonic()
        self.fields: dict[str, Any] = {}
        self.driven_by_log = False

    def skip(self, n: float) -> None:
        self.done += n
        self.skipped += n

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        if not self.driven_by_log and now - self.last_line >= LOG_EVERY_SECONDS:
            self._line(now)

    def update(self, **fields: Any) -> None:
        self.fields.update(fields)

    def log(self, **fields: Any) -> None:
        self.driven_by_log = True
        self._line(time.monotonic(), fields)

    def _line(self, now: float, fields: dict[str, Any] | None = None) -> None:
        self.last_line = now
        elapsed = now - self.t0
        unit = f" {self.unit}" if self.unit else ""
        parts = [self.description]
        if self.total:
            pct = 100 * self.done / self.total
            parts.append(f"{_count(self.done)}/{_count(self.total)}{unit} ({pct:.0f}%)")
        else:
            parts.append(f"{_count(self.done)}{unit}")
        shown = self.fields if fields is None else fields
        parts += [f"{k} {_fmt(v)}" for k, v in shown.items() if v is not None]
        fresh = self.done - self.skipped
        if elapsed > 0 and fresh > 0:
            rate = fresh / elapsed
            if not self.driven_by_log:
                parts.append(f"{rate:,.3g}{unit}/s")
            parts.append(f"elapsed {_clock(elapsed)}")
            if self.total:
                parts.append(f"eta {_clock(max(self.total - self.done, 0) / rate)}")
        err_console.print("  ".join(parts), highlight=False, markup=False, soft_wrap=True)
        err_console.file.flush()


class _Bar:
    def __init__(self, prog: Progress, task: Any) -> None:
        self._prog, self._task = prog, task

    def advance(self, n: float = 1) -> None:
        self._prog.advance(self._task, n)

    def skip(self, n: float) -> None:
        self.advance(n)

    def update(self, **fields: Any) -> None:
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
        self._prog.update(self._task, info=info)

    def log(self, **fields: Any) -> None:
        self.update(**fields)
