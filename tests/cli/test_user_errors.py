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


# --------------------------------------------------------------------------- OSErrors (issue 11)


def _line(capsys: pytest.CaptureFixture, exc: BaseException, where: object = None) -> list[str]:
    """What user_errors prints for ``exc`` raised in a stage whose output is ``where``."""
    with pytest.raises(typer.Exit) as caught, _stage.user_errors() as scope:
        scope.where = where
        raise exc
    assert caught.value.exit_code == 2
    return capsys.readouterr().err.strip().splitlines()


def test_os_errors_of_the_users_files_are_one_line_naming_the_path(
    capsys: pytest.CaptureFixture,
) -> None:
    import errno

    assert _line(capsys, PermissionError(errno.EACCES, "Permission denied", "out/x")) == [
        "error: out/x: permission denied"
    ]
    # An atomic write's hidden temp file is named by its directory, the place to fix.
    tmp = PermissionError(errno.EACCES, "Permission denied", "out/.x.jsonl.tmp-1-ab")
    assert _line(capsys, tmp) == ["error: out: permission denied"]
    assert _line(capsys, OSError(errno.EROFS, "Read-only file system", "/ro/x")) == [
        "error: /ro/x: read-only file system"
    ]
    # A full disk seen by a write() carries no path: the stage's output is named.
    assert _line(capsys, OSError(errno.ENOSPC, "No space left on device"), "run") == [
        "error: run: no space left on device"
    ]
    # ... and behind the libraries' own errors: torch.save's RuntimeError, safetensors' message.
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("unexpected pos 576 vs 534") from None
    except RuntimeError as exc:
        torch_like = exc
    assert torch_like.__context__ is not None
    assert _line(capsys, torch_like, "run") == ["error: run: no space left on device"]
    rust = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    assert _line(capsys, rust, "m") == ["error: m: no space left on device"]


def test_other_os_errors_stay_bugs_and_a_broken_pipe_passes() -> None:
    import errno

    with pytest.raises(OSError, match="Bad file descriptor"), _stage.user_errors():
        raise OSError(errno.EBADF, "Bad file descriptor")
    with pytest.raises(BrokenPipeError), _stage.user_errors():
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")
    with pytest.raises(RuntimeError, match="plain bug"), _stage.user_errors():
        raise RuntimeError("plain bug")


def test_a_binary_config_file_is_one_line(tmp_path) -> None:
    from tests.cli.conftest import invoke, one_error_line

    for name in ("run.yaml", "run.json"):
        path = tmp_path / name
        path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
        r = invoke("clean", tmp_path / "c.txt", "-o", tmp_path / "o", "--config", path)
        one_error_line(r, f"{path}: not a YAML or JSON text file", "not UTF-8")
