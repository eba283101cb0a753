"""``_stage.user_errors``: the one error path shared by the stage commands, convert and predict."""

from __future__ import annotations

import pytest
import typer

from albertzh.cli import _stage
from albertzh.errors import InputError


def test_albertzh_error_becomes_one_red_line_and_exit_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(typer.Exit) as exc, _stage.user_errors():
        raise InputError("corpus.txt: line 3: bad")
    assert exc.value.exit_code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: corpus.txt: line 3: bad"]


def test_debug_reraises_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_stage.DEBUG, "on", True)
    with pytest.raises(InputError, match="corpus.txt: bad"), _stage.user_errors():
        raise InputError("corpus.txt: bad")


def test_interrupt_exits_130_and_other_errors_pass(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(typer.Exit) as exc, _stage.user_errors():
        raise KeyboardInterrupt
    assert exc.value.exit_code == 130
    assert "interrupted" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not ours"), _stage.user_errors():
        raise ValueError("not ours")
    with _stage.user_errors():
        pass  # nothing raised: nothing printed
    assert capsys.readouterr().err == ""
