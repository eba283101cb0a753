"""``albertzh convert``: albert_zh TF checkpoints and HF directories in, albertzh/HF/TF out.

Built by hand rather than with ``stage_command`` because albert_zh's own words are the flags
users expect: ``--from tf``, ``--to hf`` and ``--config albert_config.json`` (so this command
takes no YAML ``--config``). Errors and summaries follow the other commands exactly.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, Optional

import typer

from albertzh.cli._stage import fail, print_config_json, user_errors
from albertzh.config import build_config
from albertzh.console import print_summary

HELP = "Convert albert_zh TF checkpoints and HF directories (both ways)."
EPILOG = (
    "Example: albertzh convert --from tf albert_tiny_zh/albert_model.ckpt "
    "--config albert_tiny_zh/albert_config_tiny.json --vocab albert_tiny_zh/vocab.txt "
    "-o models/albert_tiny_zh"
)


def _help(field: str) -> str:
    from albertzh.pipeline.convert import ConvertConfig

    info = ConvertConfig.model_fields[field]
    default = info.get_default() if not info.is_required() else None
    extra = f" (default: {default})" if isinstance(default, str) else ""
    return (info.description or "") + extra


def _choices(*values: str) -> Any:
    return enum.Enum("Choice", {v: v for v in values}, type=str)


From = _choices("tf", "hf")
To = _choices("albertzh", "hf", "tf")
Layout = _choices("auto", "google", "brightmart")
LnType = _choices("auto", "postln", "preln")

app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command(name="convert", help=HELP, epilog=EPILOG)
def convert(
    source: Path = typer.Argument(..., metavar="SOURCE", help=_help("source"), show_default=False),
    source_format: Optional[From] = typer.Option(  # noqa: UP045
        None, "--from", help=_help("source_format"), show_default=False
    ),
    target_format: Optional[To] = typer.Option(  # noqa: UP045
        None, "--to", help=_help("target_format"), show_default=False
    ),
    output: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--output", "-o", help=_help("output") + " (required)", show_default=False
    ),
    albert_config: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--config", help=_help("albert_config"), show_default=False
    ),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help=_help("vocab"), show_default=False),  # noqa: UP045
    layout: Optional[Layout] = typer.Option(  # noqa: UP045
        None, "--layout", help=_help("layout"), show_default=False
    ),
    ln_type: Optional[LnType] = typer.Option(  # noqa: UP045
        None, "--ln-type", help=_help("ln_type"), show_default=False
    ),
    verify: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--verify/--no-verify", help=_help("verify"), show_default=False
    ),
    overwrite: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--overwrite/--no-overwrite", help=_help("overwrite"), show_default=False
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved options as JSON and exit."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the summary as one JSON object on stdout."
    ),
) -> None:
    from albertzh.pipeline.convert import ConvertConfig, run

    given = {
        "source": source,
        "source_format": source_format,
        "target_format": target_format,
        "output": output,
        "albert_config": albert_config,
        "vocab": vocab,
        "layout": layout,
        "ln_type": ln_type,
        "verify": verify,
        "overwrite": overwrite,
    }
    overrides = {
        k: (v.value if isinstance(v, enum.Enum) else v) for k, v in given.items() if v is not None
    }
    with user_errors():
        if output is None:
            raise fail("-o/--output: missing (the directory to write)")
        cfg = build_config(ConvertConfig, None, overrides)
        if print_config:
            print_config_json(cfg)
            return
        summary = run(cfg)
    print_summary(summary, as_json=json_out)


command = typer.main.get_command(app)
