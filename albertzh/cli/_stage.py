"""Turn a stage's pydantic config into a Typer command: the fields *are* the flags.

Each flag defaults to "not given" so that a ``--config`` file supplies values and explicit flags
override them; the help text is the field description plus its default.
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

import typer
from pydantic.fields import FieldInfo

from albertzh.config import StageConfig, build_config
from albertzh.console import Summary, print_error, print_summary
from albertzh.errors import AlbertzhError

DEBUG = {"on": False}


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red error line on stderr and return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)


def print_config_json(cfg: StageConfig) -> None:
    """``--print-config``: the resolved config as indented JSON on stdout."""
    sys.stdout.write(json.dumps(cfg.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn an AlbertzhError into one red line + exit 2 (re-raised under --debug); ^C exits 130."""
    try:
        yield
    except AlbertzhError as exc:
        if DEBUG["on"]:
            raise
        if getattr(exc, "reported", False):  # printed already (by the DDP rank it came from)
            raise typer.Exit(2) from None
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None


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


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return " (required)"
    default = field.get_default(call_default_factory=True)
    if default is None or default == [] or default == "":
        return ""
    if isinstance(default, bool):
        return ""  # shown by the --x/--no-x pair
    return f" (default: {default})"


def stage_command(
    name: str,
    config_cls: type[StageConfig],
    run: Callable[[Any], Summary],
    help: str,
    epilog: str | None = None,
) -> Any:
    """Build the click command for one stage from its config class and run function."""
    params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    for fname, field in config_cls.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("cli") is False:
            continue
        mapped = _cli_type(field.annotation)
        if mapped is None:
            continue
        tp, kwargs = mapped
        desc = (field.description or "").strip()
        if extra.get("argument"):
            info = typer.Argument(
                None, help=desc, metavar=fname.upper(), show_default=False, **kwargs
            )
        else:
            decls = [f"--{fname.replace('_', '-')}"]
            if extra.get("flag"):  # a flag name other than the field's (e.g. reserved names)
                decls = [str(extra["flag"])]
            if tp is bool:
                decls = [f"--{fname.replace('_', '-')}/--no-{fname.replace('_', '-')}"]
            if extra.get("short"):
                decls.append(str(extra["short"]))
            info = typer.Option(
                None, *decls, help=desc + _default_text(field), show_default=False, **kwargs
            )
        ann = Optional[tp]  # noqa: UP045  (typer needs typing.Optional here)
        annotations[fname] = ann
        params.append(
            inspect.Parameter(fname, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=ann)
        )

    extras = {
        "config": (
            Optional[Path],  # noqa: UP045
            typer.Option(
                None, "--config", help="YAML or JSON file with config values; flags override it."
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
        with user_errors():
            cfg = build_config(config_cls, config_file, overrides)
            if print_config:
                print_config_json(cfg)
                return
            summary = run(cfg)
        # Under torchrun every rank runs the stage; only rank 0 prints the summary.
        if os.environ.get("RANK", "0") == "0":
            print_summary(summary, as_json=as_json)
        if summary.exit_code:
            raise typer.Exit(summary.exit_code)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help

    sub = typer.Typer(add_completion=False, rich_markup_mode="rich")
    sub.command(name=name, help=help, epilog=epilog)(command)
    return typer.main.get_command(sub)
