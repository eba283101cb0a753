"""``predict``: run a finetuned model over lines of text, one JSON line out per line in.

What a line is and what comes out depends on the model's kind (:data:`PREDICTORS`, by the
architecture in its config.json):

- a classifier: a sentence or an ``a<TAB>b`` pair -> ``{"label", "probabilities"}`` (or
  ``{"score"}`` for regression);
- a token classifier (NER): the whole line is the text -> ``{"entities": [{"type", "text",
  "start", "end"}]}``, character offsets into the line, ``end`` exclusive;
- a multiple-choice model: a JSON line ``{"context", "question", "choices": [...]}`` ->
  ``{"label": index, "answer": text, "probabilities": [...], "scores": [...]}`` (one per option);
- a span extractor (question answering): a JSON line ``{"question", "context"}`` ->
  ``{"text", "start", "score"}``, ``start`` a character offset into the context.

The batched inference itself is :mod:`albertzh.train.inference` (classifiers) and
:mod:`albertzh.train.tagging` (token classifiers), shared with ``eval`` and ``finetune``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import Field

from albertzh import outputs
from albertzh.config import StageConfig
from albertzh.console import Summary
from albertzh.data import tasks as T
from albertzh.errors import ConfigError, InputError
from albertzh.files import atomic_writer
from albertzh.train.inference import (
    Classifier,
    check_int8,
    load_classifier,
    quantize_int8,
)

# --------------------------------------------------------------------------- the predict stage


class PredictConfig(StageConfig):
    """Options of ``albertzh predict``."""

    input: str = Field(
        "-",
        description="Text file with one sentence (or a<TAB>b pair; NER: one text; question "
        'answering: a JSON object {"question", "context"}; multiple choice: a JSON object '
        '{"context", "question", "choices"}) per line; \'-\' = stdin.',
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
        None,
        ge=3,
        description="Truncate inputs to this many tokens (NER: the window size; default: the "
        "finetune value).",
    )
    doc_stride: int | None = Field(
        None,
        ge=1,
        description="NER: tokens between window starts for lines longer than --max-seq-len "
        "(default: the finetune value, or half a window with --max-seq-len).",
    )
    max_query_len: int | None = Field(
        None,
        ge=1,
        description="Span extraction: question tokens kept (default: the finetune value).",
    )
    max_answer_len: int | None = Field(
        None,
        ge=1,
        description="Span extraction: the longest answer in tokens (default: the finetune value).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run the model.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision; auto = fp32 on CPU, bf16/fp16 on GPU."
    )
    int8: bool = Field(
        False,
        description="CPU only: dynamic int8 quantization of the model's Linear layers (faster, "
        "slightly different scores); check its agreement with fp32 on a dev split with "
        "benchmarks/int8_agreement.py first.",
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


def predict_entities(
    tagger: Any, lines: Iterable[str], out: TextIO, batch_size: int, with_text: bool = False
) -> int:
    """NER: one JSON line of entities per input line (in order), flushing after each batch."""
    from albertzh.data import ner

    rows = 0
    for chunk in _chunks(lines, batch_size):
        examples = [ner.TaggedExample(tuple(line), None, 0) for line in chunk]
        for line, e, tags in zip(
            chunk, examples, tagger.tags([e.units for e in examples], batch_size), strict=True
        ):
            rec = {"text": line} if with_text else {}
            rec["entities"] = ner.entities(e, tags)
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        out.flush()
        rows += len(chunk)
    return rows


# A predictor: the model loaded, as (write the JSON lines of these lines to ``out`` -> rows,
# what the summary says of its labels).
Predictor = tuple[Callable[[Iterable[str], TextIO], int], Any]


def _int8(cfg: PredictConfig, loaded: Any) -> None:
    """With ``--int8``: quantize a loaded predictor's model (already on the CPU, see run)."""
    if cfg.int8:
        loaded.model = quantize_int8(loaded.model)


def _classifier(cfg: PredictConfig) -> Predictor:
    if cfg.doc_stride is not None:
        raise ConfigError("--doc-stride only applies to token classification (NER) models")
    clf = load_classifier(
        cfg.model,
        device=cfg.device,
        precision=cfg.precision,
        max_seq_len=cfg.max_seq_len,
        int8=cfg.int8,
    )
    stream = partial(predict_stream, clf, batch_size=cfg.batch_size, with_text=cfg.with_text)
    return stream, clf.labels or "regression"


def _tagger(cfg: PredictConfig) -> Predictor:
    from albertzh.train.tagging import load_tagger

    tagger = load_tagger(
        cfg.model,
        device=cfg.device,
        precision=cfg.precision,
        max_seq_len=cfg.max_seq_len,
        doc_stride=cfg.doc_stride,
    )
    _int8(cfg, tagger)
    stream = partial(predict_entities, tagger, batch_size=cfg.batch_size, with_text=cfg.with_text)
    return stream, tagger.labels


def predict_choices(
    chooser: Any,
    lines: Iterable[str],
    out: TextIO,
    batch_size: int,
    with_text: bool = False,
    source: str = "<stdin>",
) -> int:
    """Multiple choice: one JSON line in (``{"context", "question", "choices"}``), the pick and
    every option's score out, in order, flushing after each batch."""
    from albertzh.data.choice import parse_question
    from albertzh.train.choice import record

    rows = 0
    for chunk in _chunks(lines, batch_size):
        examples = [
            parse_question(line, f"{source}: line {rows + k + 1}") for k, line in enumerate(chunk)
        ]
        for e, scores in zip(examples, chooser.logits(examples, batch_size), strict=True):
            rec = {"id": e.id} if e.id else {}
            if with_text:
                rec.update(context=e.context, question=e.question, choices=list(e.choices))
            out.write(json.dumps({**rec, **record(e, scores)}, ensure_ascii=False) + "\n")
        out.flush()
        rows += len(chunk)
    return rows


def _chooser(cfg: PredictConfig) -> Predictor:
    from albertzh.train.choice import load_chooser

    if cfg.doc_stride is not None:
        raise ConfigError("--doc-stride only applies to token classification (NER) models")
    chooser = load_chooser(
        cfg.model, device=cfg.device, precision=cfg.precision, max_seq_len=cfg.max_seq_len
    )
    _int8(cfg, chooser)
    source = "<stdin>" if cfg.input == "-" else cfg.input
    stream = partial(
        predict_choices,
        chooser,
        batch_size=cfg.batch_size,
        with_text=cfg.with_text,
        source=source,
    )
    return stream, "options"


def predict_answers(
    reader: Any,
    lines: Iterable[str],
    out: TextIO,
    batch_size: int,
    with_text: bool = False,
    source: str = "<stdin>",
) -> int:
    """Span extraction: one JSON line in (``{"question", "context"}``), the best answer out as
    ``{"text", "start", "score"}`` (``start`` a character offset into the context; no answer:
    text "", start -1), in order, flushing after each batch."""
    from albertzh.data.squad import parse_question

    rows = 0
    for chunk in _chunks(lines, batch_size):
        examples = [
            parse_question(line, f"{source}: line {rows + k + 1}") for k, line in enumerate(chunk)
        ]
        for e, p in zip(examples, reader.answers(examples, batch_size), strict=True):
            rec: dict[str, Any] = {"id": e.qid} if e.qid else {}
            if with_text:
                rec.update(question=e.question, context=e.context)
            if p is None:
                rec.update(text="", start=-1, score=None)
            else:
                rec.update(text=p.text, start=p.start, score=round(p.score, 6))
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        out.flush()
        rows += len(chunk)
    return rows


def _reader(cfg: PredictConfig) -> Predictor:
    from albertzh.train.spans import load_reader

    reader = load_reader(
        cfg.model,
        device=cfg.device,
        precision=cfg.precision,
        max_seq_len=cfg.max_seq_len,
        doc_stride=cfg.doc_stride,
        max_query_len=cfg.max_query_len,
        max_answer_len=cfg.max_answer_len,
    )
    _int8(cfg, reader)
    source = "<stdin>" if cfg.input == "-" else cfg.input
    stream = partial(
        predict_answers, reader, batch_size=cfg.batch_size, with_text=cfg.with_text, source=source
    )
    return stream, "spans"


# How each kind of finetuned model predicts (a dir of no known kind goes to the classifier,
# which says what it is not).
PREDICTORS: dict[str, Callable[[PredictConfig], Predictor]] = {
    T.CLASSIFICATION: _classifier,
    T.TOKEN_CLASSIFICATION: _tagger,
    T.MULTIPLE_CHOICE: _chooser,
    T.SPAN_EXTRACTION: _reader,
}


def run(cfg: PredictConfig) -> Summary:
    """Predict every line of ``cfg.input``; JSON lines go to ``cfg.output``."""
    import time

    from albertzh.train.kinds import kind_of_model

    t0 = time.perf_counter()
    if cfg.output != "-":
        outputs.check_apart(cfg.output, {"INPUT": cfg.input, "--model": cfg.model})
        outputs.check_file_output(Path(cfg.output), overwrite=cfg.overwrite, flag="-o")
    kind = kind_of_model(cfg.model)
    if cfg.int8:  # CPU only: refuse --device cuda before loading, run "auto" on the CPU
        cfg = cfg.model_copy(update={"device": check_int8(cfg.device, cfg.precision)})
    stream, labels = PREDICTORS[kind.name if kind else T.CLASSIFICATION](cfg)
    lines = _input_lines(cfg.input)
    if cfg.output == "-":
        rows = stream(lines, sys.stdout)
    else:
        with atomic_writer(Path(cfg.output)) as f:
            rows = stream(lines, f)
    secs = time.perf_counter() - t0
    return Summary(
        "predict",
        {
            "rows": rows,
            "output": cfg.output,
            "labels": labels,
            "int8": cfg.int8,
            "seconds": round(secs, 2),
        },
    )
