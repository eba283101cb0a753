"""Shared by the CLI tests: the click command behind ``albertzh`` and the one-error-line check."""

from __future__ import annotations

import typer
from click.testing import CliRunner, Result

import albertzh.cli

root = typer.main.get_command(albertzh.cli.app)
runner = CliRunner()


def one_error_line(r: Result, *needles: str) -> str:
    """Exit 2, no traceback, exactly one line on stderr holding every needle; returns that line."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
