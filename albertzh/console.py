"""Terminal output: rich progress on a terminal, quiet when piped; summaries as a table or JSON."""

from __future__ import annotations

import json
import sys
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
    exit_code: int = 0

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


def interactive() -> bool:
    """True when progress bars should be drawn (stderr is a terminal)."""
    return err_console.is_terminal


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "") -> Iterator[Any]:
    """A progress bar on a terminal; a no-op object when output is piped.

    Yields an object with ``advance(n=1)`` and ``update(**fields)``.
    """
    if not interactive():
        yield _NullBar()
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


class _NullBar:
    def advance(self, n: float = 1) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass


class _Bar:
    def __init__(self, prog: Progress, task: Any) -> None:
        self._prog, self._task = prog, task

    def advance(self, n: float = 1) -> None:
        self._prog.advance(self._task, n)

    def update(self, **fields: Any) -> None:
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
        self._prog.update(self._task, info=info)
