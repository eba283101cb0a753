"""``predict``: classify sentences or ``a<TAB>b`` pairs with a finetuned model, as JSON lines.

The batched inference itself (encode examples, batch them by length, run the model under
autocast, logits in input order) is :mod:`albertzh.train.inference`, shared with ``eval`` and
``finetune``'s dev evaluation.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, TextIO

from pydantic import Field

from albertzh import outputs
from albertzh.config import StageConfig
from albertzh.console import Summary
from albertzh.errors import InputError
from albertzh.files import atomic_writer
from albertzh.train.inference import (
    Classifier,
    load_classifier,
)

# --------------------------------------------------------------------------- the predict stage


class PredictConfig(StageConfig):
    """Options of ``albertzh predict``."""

    input: str = Field(
        "-",
        description="Text file with one sentence (or a<TAB>b pair) per line; '-' = stdin.",
        json_schema_extra={"argument": True},
    )
    model: Path = Field(..., description="Finetuned model directory (output of finetune).")
    output: str = Field(
        "-",
        description="Where to write the JSON lines; '-' = stdout.",
        json_schema_extra={"short": "-o"},
    )
    overwrite: bool = Field(False, description="Replace an existing -o file.")
    batch_size: int = Field(64, ge=1, description="Lines per forward pass.")
    max_seq_len: int | None = Field(
        None, ge=3, description="Truncate inputs to this many tokens (default: the finetune value)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run the model.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision; auto = fp32 on CPU, bf16/fp16 on GPU."
    )
    with_text: bool = Field(False, description="Echo the input text(s) in each JSON line.")
    quiet: bool = Field(
        False, description="No summary line on stderr.", json_schema_extra={"short": "-q"}
    )


def _split_line(line: str) -> tuple[str, str | None]:
    a, sep, b = line.partition("\t")
    return (a, b) if sep else (a, None)


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _input_lines(source: str) -> Iterator[str]:
    if source == "-":
        raw = getattr(sys.stdin, "buffer", None)
        if raw is None:  # a text stream put in place of stdin (already decoded)
            yield from sys.stdin
        else:
            yield from _decoded(raw, "<stdin>")
        return
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    with open(path, "rb") as f:
        yield from _decoded(f, str(path))


def _decoded(lines: Iterable[bytes], name: str) -> Iterator[str]:
    """Binary lines as text; a line that is not UTF-8 is an error naming ``name`` and the line."""
    for n, raw in enumerate(lines, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{name}: line {n}: not valid UTF-8 ({exc.reason})") from exc


def predict_stream(
    clf: Classifier, lines: Iterable[str], out: TextIO, batch_size: int, with_text: bool = False
) -> int:
    """Write one JSON line per input line (in order), flushing after each batch; returns rows."""
    rows = 0
    for chunk in _chunks(lines, batch_size):
        pairs = [_split_line(line) for line in chunk]
        for (a, b), rec in zip(pairs, clf.records(clf.logits(pairs, batch_size)), strict=True):
            if with_text:
                rec = {"text_a": a, **({"text_b": b} if b is not None else {}), **rec}
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        out.flush()
        rows += len(chunk)
    return rows


def run(cfg: PredictConfig) -> Summary:
    """Predict every line of ``cfg.input``; JSON lines go to ``cfg.output``."""
    import time

    t0 = time.perf_counter()
    if cfg.output != "-":
        outputs.check_apart(cfg.output, {"INPUT": cfg.input, "--model": cfg.model})
        outputs.check_file_output(Path(cfg.output), overwrite=cfg.overwrite, flag="-o")
    clf = load_classifier(
        cfg.model, device=cfg.device, precision=cfg.precision, max_seq_len=cfg.max_seq_len
    )
    lines = _input_lines(cfg.input)
    if cfg.output == "-":
        rows = predict_stream(clf, lines, sys.stdout, cfg.batch_size, cfg.with_text)
    else:
        with atomic_writer(Path(cfg.output)) as f:
            rows = predict_stream(clf, lines, f, cfg.batch_size, cfg.with_text)
    secs = time.perf_counter() - t0
    return Summary(
        "predict",
        {
            "rows": rows,
            "output": cfg.output,
            "labels": clf.labels or "regression",
            "seconds": round(secs, 2),
        },
    )
