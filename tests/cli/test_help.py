"""CLI manners every command shares: one help style, switches shown as switches, required inputs
first and named as what they are, exit codes documented at the root."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from click.testing import Result

from albertzh.cli import COMMANDS
from tests.cli.conftest import invoke, one_error_line

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _help(*command: str) -> Result:
    r = invoke(*command, "--help")
    assert r.exit_code == 0, r.output
    return r


def _rows(text: str, panel: str) -> list[str]:
    """The rows of a rich help panel ("Options"), each joined with its wrapped lines."""
    rows: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(f"╭─ {panel} "):
            inside = True
        elif line.startswith("╰"):
            inside = False
        elif inside:
            body = line.strip("│ ")
            if re.match(r"^│\s{1,3}(\S)", line):  # a new row starts near the left border
                rows.append(body)
            elif rows:
                rows[-1] += " " + body
    return rows


def _row(text: str, flag: str) -> str:
    found = [r for r in _rows(text, "Options") if re.match(rf"{re.escape(flag)}(\s|$)", r)]
    assert len(found) == 1, (flag, found)
    return found[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_one_help_style_and_the_common_options(command: str) -> None:
    out = _help(command).stdout
    assert "╭─ Options" in out and f"Usage: albertzh {command} [OPTIONS]" in out
    for flag in ("--config", "--print-config", "--json", "--help"):
        _row(out, flag)
    assert "<bool>" not in out  # switches take no value
    for flag in ("--print-config", "--json", "--help"):
        assert "<" not in _row(out, flag)
    assert "[default:" not in out  # one default style: "(default: ...)"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_required_flags_come_first(command: str) -> None:
    rows = _rows(_help(command).stdout, "Options")
    required = [i for i, r in enumerate(rows) if "(required)" in r]
    optional = [i for i, r in enumerate(rows) if "(required)" not in r]
    assert not required or max(required) < min(optional), rows


def test_pretrain_lists_data_before_the_training_flags() -> None:
    rows = _rows(_help("pretrain").stdout, "Options")
    names = [r.split()[0] for r in rows]
    assert names.index("--data") < names.index("--seed") < names.index("--lr")


def test_on_off_flags_show_both_names_and_their_default() -> None:
    out = _help("segment").stdout
    assert re.match(
        r"--resume\s+--no-resume\s+Keep .*\(default: --no-resume\)$", _row(out, "--resume")
    )
    assert re.match(r"--hmm\s+--no-hmm\s+Use jieba.*\(default: --hmm\)$", _row(out, "--hmm"))
    out = _help("convert").stdout
    assert re.match(r"--verify\s+--no-verify\s.*\(default: --verify\)$", _row(out, "--verify"))


@pytest.mark.parametrize(
    ("command", "usage", "metavar"),
    [
        ("segment", "albertzh segment [OPTIONS] INPUT", "INPUT"),
        ("make-shards", "albertzh make-shards [OPTIONS] INPUT", "INPUT"),
        ("clean", "albertzh clean [OPTIONS] INPUTS...", "INPUTS"),
        ("convert", "albertzh convert [OPTIONS] SOURCE", "SOURCE"),
    ],
)
def test_required_positional_is_shown_and_reported_as_itself(
    command: str, usage: str, metavar: str, tmp_path
) -> None:
    out = _help(command).stdout
    assert usage in out
    (arg,) = _rows(out, "Arguments")
    assert arg.startswith(metavar) and arg.endswith("(required)")
    r = invoke(command, "-o", tmp_path / "out")
    line = one_error_line(r, f"{metavar}: missing")
    assert "--input" not in line and "--source" not in line
    assert not (tmp_path / "out").exists()


def test_optional_positionals_stay_optional() -> None:
    assert "albertzh predict [OPTIONS] [INPUT]" in _help("predict").stdout
    assert "albertzh build-vocab [OPTIONS] [INPUT]" in _help("build-vocab").stdout


def test_help_text_in_brackets_is_not_eaten_as_markup() -> None:
    assert "pip install 'albertzh[demo]'" in _help("quickstart").stdout
    assert "[CLS] A [SEP] B [SEP]" in _help("make-shards").stdout
    out = _help("build-vocab").stdout
    assert "(rest -> [UNK])" in out and "(after [CLS] [SEP] [MASK])" in out


def test_root_help_lists_every_command_and_the_exit_codes() -> None:
    out = _help().stdout
    rows = _rows(out, "Commands")
    assert [r.split()[0] for r in rows] == list(COMMANDS)
    for row, (_, line) in zip(rows, COMMANDS.values(), strict=True):
        assert " ".join(row.split()[1:]) == line  # one line each, word for word
    for flag in ("--version", "--debug", "--help"):
        assert "<" not in _row(out, flag)
    text = " ".join(out.split())
    exit_codes = ("0 done", "1 a bug", "2 a user error", "130/143", "SIGINT", "SIGTERM")
    for needle in (*exit_codes, "--resume"):
        assert needle in text, needle


def test_root_help_imports_no_command() -> None:
    code = (
        "import sys\n"
        "from albertzh.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('IMPORTED', sorted(m for m in sys.modules if m.startswith('albertzh.cli.')), "
        "'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last == "IMPORTED ['albertzh.cli._stage'] False", last
