"""``albertzh predict``: JSON lines on stdout, so the summary goes to stderr (not stage_command)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from albertzh.cli._stage import user_errors
from albertzh.config import build_config
from albertzh.console import err_console
from albertzh.pipeline.predict import PredictConfig, run

HELP = """Classify sentences or a<TAB>b pairs (one per line, from FILE or stdin) with a finetuned
model; writes one JSON line per input line, in order: {"label": ..., "probabilities": {...}}."""

_F = {name: f.description or "" for name, f in PredictConfig.model_fields.items()}


def _predict(
    input: str = typer.Argument("-", metavar="[FILE|-]", help=_F["input"]),
    model: Path = typer.Option(..., "--model", help=_F["model"]),
    output: str = typer.Option("-", "--output", "-o", help=_F["output"]),
    batch_size: int = typer.Option(64, "--batch-size", help=_F["batch_size"]),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help=_F["max_seq_len"]),  # noqa: UP045
    device: str = typer.Option("auto", "--device", help=_F["device"] + " (auto|cpu|cuda)"),
    precision: str = typer.Option(
        "auto", "--precision", help=_F["precision"] + " (auto|fp32|bf16|fp16)"
    ),
    with_text: bool = typer.Option(False, "--with-text", help=_F["with_text"]),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line on stderr."),
) -> None:
    overrides = {
        "input": input,
        "model": model,
        "output": output,
        "batch_size": batch_size,
        "max_seq_len": max_seq_len,
        "device": device,
        "precision": precision,
        "with_text": with_text,
    }
    try:
        with user_errors():
            cfg = build_config(PredictConfig, None, overrides)
            summary = run(cfg)
    except BrokenPipeError:  # `albertzh predict ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no noise at exit
        raise typer.Exit(0) from None
    if not quiet:
        f = summary.figures
        err_console.print(
            f"predict: {f['rows']:,} rows -> {f['output']} in {f['seconds']} s", highlight=False
        )


_app = typer.Typer(add_completion=False, rich_markup_mode=None)
_app.command(name="predict", help=HELP)(_predict)
command = typer.main.get_command(_app)
