"""Shared by the CLI tests: the click command behind ``albertzh``, --help and one-error-line checks."""

from __future__ import annotations

from collections.abc import Iterable

import typer
from click.testing import CliRunner, Result

import albertzh.cli

root = typer.main.get_command(albertzh.cli.app)
runner = CliRunner()


def assert_help_lists(command: str, flags: Iterable[str]) -> None:
    """``albertzh COMMAND --help`` (200 columns wide) exits 0 and names every flag."""
    r = runner.invoke(root, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for flag in flags:
        assert flag in r.stdout, flag


def one_error_line(r: Result, *needles: str) -> str:
    """Exit 2, no traceback, exactly one line on stderr holding every needle; returns that line."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
