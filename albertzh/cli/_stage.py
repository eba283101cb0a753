"""Turn a stage's pydantic config into a Typer command: the fields *are* the flags.

Each flag defaults to "not given" so that a ``--config`` file supplies values and explicit flags
override them; the help text is the field description plus its default. Required fields are
listed first and marked "(required)"; they are checked by the config (a ``--config`` file may
supply them), so a missing one is one red line naming the flag or the positional (``INPUT``).
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Optional, Union

import click
import typer
from pydantic.fields import FieldInfo
from rich.markup import escape
from typer.core import TyperCommand

from albertzh.config import StageConfig, build_config, cli_name
from albertzh.console import Summary, print_error, print_summary
from albertzh.errors import AlbertzhError, ConfigError, from_os_error

DEBUG = {"on": False}


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red error line on stderr and return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)


def print_config_json(cfg: StageConfig) -> None:
    """``--print-config``: the resolved config as indented JSON on stdout."""
    sys.stdout.write(json.dumps(cfg.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n")


class ErrorScope:
    """What :func:`user_errors` knows of the run: ``where`` (its output) names the place of an
    OSError that carries no path (a full disk seen by a library's ``write``)."""

    where: Any = None


@contextlib.contextmanager
def user_errors() -> Iterator[ErrorScope]:
    """Turn an AlbertzhError, or an OSError the user's files or disk cause (permission denied,
    disk full, ...), into one red line + exit 2 (re-raised under --debug); ^C exits 130."""
    scope = ErrorScope()
    try:
        yield scope
    except AlbertzhError as exc:
        if DEBUG["on"]:
            raise
        if getattr(exc, "reported", False):  # printed already (by the DDP rank it came from)
            raise typer.Exit(2) from None
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None
    except Exception as exc:  # an OSError behind it? BrokenPipeError and bugs pass on
        error = from_os_error(exc, scope.where)
        if error is None or DEBUG["on"]:
            raise
        raise fail(str(error)) from None


def _output_of(cfg: StageConfig) -> Any:
    """The stage's output location (None when it writes to stdout)."""
    for name in ("output", "predictions"):
        value = getattr(cfg, name, None)
        if value is not None and str(value) != "-":
            return value
    return None


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _path_or_url(tp: Any) -> bool:
    """A ``PathOrURL`` field (``Path | str``): a text flag, so typer keeps ``s3://b/x`` intact."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    union = typing.get_origin(tp) in (Union, types.UnionType)
    return union and set(typing.get_args(tp)) == {Path, str}


def _cli_type(tp: Any) -> tuple[Any, dict[str, Any]] | None:
    """Map a field annotation to (annotation typer understands, extra Option kwargs)."""
    tp = _unwrap_optional(tp)
    if _path_or_url(tp):
        return str, {}
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = [str(c) for c in typing.get_args(tp)]
        # typer renders Enums as choices; values are turned back into plain strings below.
        return enum.Enum("Choice", {c: c for c in choices}, type=str), {}
    if origin in (list, tuple, typing.List, typing.Sequence):  # noqa: UP006
        args = typing.get_args(tp)
        inner = _unwrap_optional(args[0]) if args else str
        if inner in (str, int, float, Path):
            return list[inner], {}
        return None
    if tp in (str, int, float, bool, Path):
        return tp, {}
    return None  # dicts, nested models: config file only


def _default_text(fname: str, field: FieldInfo) -> str:
    if field.is_required():
        return " (required)"
    default = field.get_default(call_default_factory=True)
    if default is None or default == [] or default == "":
        return ""
    if isinstance(default, bool):  # an on/off pair: name the side that is the default
        return f" (default: --{'' if default else 'no-'}{fname.replace('_', '-')})"
    return f" (default: {default})"


def plain_switches(params: list[click.Parameter]) -> None:
    """Show flags (``--json``, ``--x/--no-x``, ``--help``) without a ``<bool>`` value placeholder."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""


class StageCommand(TyperCommand):
    """A stage command whose help shows switches as switches and required positionals as such.

    The positionals are optional to click (a ``--config`` file may supply them); ``required``
    names those the config requires, so the usage line shows ``INPUT`` rather than ``[INPUT]``.
    """

    required: tuple[str, ...] = ()

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        plain_switches(self.get_params(ctx))
        super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.name in self.required and param.metavar:
                pieces.append(param.metavar + ("..." if param.nargs != 1 else ""))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


def _field_param(
    config_cls: type[StageConfig], fname: str, field: FieldInfo, extra: dict[str, Any]
) -> tuple[Any, Any] | None:
    """(annotation, typer Argument/Option) for one config field; None for config-file-only ones."""
    mapped = _cli_type(field.annotation)
    if mapped is None:
        return None
    tp, kwargs = mapped
    # Help is rich markup: escape it, or "pip install 'albertzh[demo]'" loses its "[demo]".
    desc = escape((field.description or "").strip()) + _default_text(fname, field)
    if extra.get("argument"):
        metavar = cli_name(config_cls, fname)  # INPUT, also in the errors
        info = typer.Argument(None, help=desc, metavar=metavar, show_default=False, **kwargs)
    else:
        decls = [cli_name(config_cls, fname)]
        if tp is bool:
            decls = [f"--{fname.replace('_', '-')}/--no-{fname.replace('_', '-')}"]
        if extra.get("short"):
            decls.append(str(extra["short"]))
        info = typer.Option(None, *decls, help=desc, show_default=False, **kwargs)
    return Optional[tp], info  # noqa: UP045  (typer needs typing.Optional here)


def stage_command(
    name: str,
    config_cls: type[StageConfig],
    run: Callable[[Any], Summary],
    help: str,
    epilog: str | None = None,
    *,
    data_on_stdout: Callable[[Any], bool] | None = None,
    report: Callable[[Summary, Any], None] | None = None,
) -> Any:
    """Build the click command for one stage from its config class and run function.

    ``data_on_stdout(cfg)`` says when the stage writes its own output to stdout (``predict -o
    -``); ``--json`` is then refused, as stdout could not hold one JSON object. ``report(summary,
    cfg)`` replaces the summary table (``predict``'s one line on stderr).
    """
    fields: list[tuple[str, FieldInfo, dict[str, Any]]] = []
    for fname, field in config_cls.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("cli") is not False:
            fields.append((fname, field, extra))
    # Help order: positionals, then required flags, then the rest (stable within each group).
    fields.sort(key=lambda f: 0 if f[2].get("argument") else 1 if f[1].is_required() else 2)

    params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    required: list[str] = []
    for fname, field, extra in fields:
        mapped = _field_param(config_cls, fname, field, extra)
        if mapped is None:
            continue
        annotations[fname], info = mapped
        if extra.get("argument") and field.is_required():
            required.append(fname)
        params.append(
            inspect.Parameter(
                fname, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotations[fname]
            )
        )

    extras = {
        "config": (
            Optional[Path],  # noqa: UP045
            typer.Option(
                None,
                "--config",
                help="YAML or JSON file with config values; flags override it.",
                readable=False,  # checked when read: one error line, not a usage box
            ),
        ),
        "print_config": (
            bool,
            typer.Option(
                False, "--print-config", help="Print the resolved config as JSON and exit."
            ),
        ),
        "json_out": (
            bool,
            typer.Option(False, "--json", help="Print the summary as one JSON object on stdout."),
        ),
    }
    for pname, (ann, info) in extras.items():
        annotations[pname] = ann
        params.append(
            inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=ann)
        )

    def command(**kwargs: Any) -> None:
        config_file = kwargs.pop("config")
        print_config = kwargs.pop("print_config")
        as_json = kwargs.pop("json_out")
        overrides = {
            k: (v.value if isinstance(v, enum.Enum) else v)
            for k, v in kwargs.items()
            if v is not None and v != []
        }
        try:
            with user_errors() as scope:
                cfg = build_config(config_cls, config_file, overrides)
                scope.where = _output_of(cfg)
                if print_config:
                    print_config_json(cfg)
                    return
                if as_json and data_on_stdout is not None and data_on_stdout(cfg):
                    raise ConfigError(
                        f"--json: {name} writes its output to stdout here (-o -); "
                        "give -o FILE to get the summary as JSON"
                    )
                summary = run(cfg)
        except BrokenPipeError:  # `albertzh predict ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no noise at exit
            raise typer.Exit(0) from None
        # Under torchrun every rank runs the stage; only rank 0 prints the summary.
        if os.environ.get("RANK", "0") == "0":
            if report is not None and not as_json:
                report(summary, cfg)
            else:
                print_summary(summary, as_json=as_json)
        if summary.exit_code:
            raise typer.Exit(summary.exit_code)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help

    sub = typer.Typer(add_completion=False, rich_markup_mode="rich")
    sub.command(
        name=name,
        help=escape(help),
        epilog=escape(epilog) if epilog else None,
        cls=StageCommand,
    )(command)
    click_command = typer.main.get_command(sub)
    click_command.required = tuple(required)
    return click_command
