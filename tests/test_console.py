"""Progress off a terminal: plain lines a log file or a scheduler can show."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from albertzh import console


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(console, "err_console", Console(file=buf, width=200))
    return buf


def test_training_progress_prints_one_line_per_log_call(captured: io.StringIO) -> None:
    with console.progress("pretrain", total=100) as bar:
        bar.skip(40)  # resumed at step 40
        for step in range(41, 61):
            bar.advance(1)
            bar.update(loss=1.0)  # per-step figures never print on their own
            if step % 10 == 0:
                bar.log(step=step, loss=2.5, lr=1e-3, tok_s=1234)
    lines = captured.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("pretrain  50/100 (50%)  step 50  loss 2.5  lr 0.001  tok_s 1,234")
    assert "elapsed" in lines[1] and "eta" in lines[1] and "60/100 (60%)" in lines[1]


def test_other_work_prints_a_line_every_interval(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "LOG_EVERY_SECONDS", 0.0)
    with console.progress("clean", total=4, unit="units") as bar:
        for _ in range(4):
            bar.update(docs=123_456)
            bar.advance(1)
    lines = captured.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("clean  4/4 units (100%)  docs 123,456  ")
    assert "units/s" in lines[-1]


def test_quiet_before_the_interval_and_on_other_ranks(captured: io.StringIO) -> None:
    with console.progress("segment", unit="bytes") as bar:
        bar.advance(10)  # well under 30 s: no line yet
    with console.progress("pretrain", total=10, enabled=False) as bar:
        bar.advance(1)
        bar.log(step=1, loss=1.0)
    assert captured.getvalue() == ""
