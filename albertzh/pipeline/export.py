"""``albertzh export``: a model directory to an ONNX directory (fp32, or int8 by dynamic
quantization).

The output directory holds ``model.onnx``, ``config.json`` (labels) and the tokenizer files: the
layout onnxruntime users and HF Optimum's ``ORTModel*.from_pretrained`` expect, all a runtime
needs. The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, ``[batch,
sequence]``, both axes dynamic) and returns ``logits`` for a finetuned head (``[batch,
num_labels]`` for a sequence classifier, ``[batch, sequence, num_labels]`` for a token classifier),
or ``last_hidden_state`` and ``pooler_output`` with ``--head none``; with ``--quantize int8``
``model.onnx`` is the quantized graph. A multiple-choice head takes ``[batch, choice,
sequence]`` inputs and returns ``logits`` ``[batch, choice]``. torch.onnx's exporter writes the shared ALBERT weights
once; before quantizing, weight transposes and the fused QKV concatenation are folded into
constants (deduplicated, so a layer shared by all L applications is still stored once) --
onnxruntime quantizes only MatMuls whose weight is a constant.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from albertzh import outputs
from albertzh.config import BreakLock, StageConfig
from albertzh.console import Summary
from albertzh.errors import InputError, ModelDirError
from albertzh.model.onnx import (
    export_onnx,
    max_abs_diff,
    model_inputs,
    ort_session,
    quantize_int8,
    torch_outputs,
)

GRAPH = "model.onnx"
TOKENIZER_FILES = ("vocab.txt", "spiece.model", "tokenizer_config.json", "vocab.json")
# Every file export may write: --overwrite replaces these and never touches anything else.
EXPORT_FILES = (GRAPH, "config.json", *TOKENIZER_FILES)
# What model, run and dataset directories hold and an export output never does: export never
# writes beside these (its config.json and vocab.txt would replace the model's own).
NOT_EXPORTED = (
    *("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "albertzh.json"),
    *("checkpoints", "metrics.jsonl", "metrics.json", "manifest.json", "part-*.parquet"),
)


class ExportConfig(StageConfig):
    """Options of ``albertzh export``."""

    model: Path = Field(
        ..., description="Model directory (a finetuned classifier or NER model, or any model)."
    )
    format: Literal["onnx"] = Field("onnx", description="Export format.")
    output: Path = Field(
        ...,
        description=f"Output directory: {GRAPH}, config.json and the tokenizer files.",
        json_schema_extra={"short": "-o"},
    )
    head: Literal["auto", "classifier", "none"] = Field(
        "auto",
        description="classifier: the finetuned head's logits (per sentence, or per token for "
        "NER); none: the encoder's last_hidden_state and pooler_output; auto: classifier when "
        "the model dir is a finetuned one.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none", description="int8: dynamic quantization of the weights (onnxruntime)."
    )
    opset: int = Field(18, ge=17, le=23, description="ONNX opset version.")
    verify: bool = Field(
        True,
        description="Run the exported graph in onnxruntime and compare with PyTorch "
        "(max |diff| in the summary; fp32 must be within 1e-4).",
    )
    overwrite: bool = Field(
        False,
        description="Write into a non-empty output directory, replacing the files export writes "
        "(and only those); never into a model, run or dataset directory.",
    )
    break_lock: BreakLock = False

    @model_validator(mode="after")
    def _check(self) -> ExportConfig:
        if self.output.suffix == ".onnx":
            raise ValueError(
                f"{self.output}: -o is the directory to write {GRAPH}, config.json and the "
                f"tokenizer files into (e.g. -o {self.output.parent / self.output.stem})"
            )
        return self


def load_for_export(model_dir: Path, head: str) -> tuple[Any, str]:
    """The model to export and the resolved head ("classifier" or "none")."""
    from albertzh.model import HEAD_MODELS, AlbertModel
    from albertzh.model.io import require_trained_heads

    model_dir = Path(model_dir)
    cfg_file = model_dir / "config.json"
    if not cfg_file.is_file():
        raise ModelDirError(f"{model_dir}: no config.json (not a model directory)")
    try:
        archs = json.loads(cfg_file.read_text(encoding="utf-8")).get("architectures") or []
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{cfg_file}: not valid JSON: {exc}") from exc
    head_class = next((HEAD_MODELS[a] for a in archs if a in HEAD_MODELS), None)
    if head == "auto":
        head = "classifier" if head_class is not None else "none"
    if head == "classifier":
        if head_class is None:
            raise ModelDirError(
                f"{model_dir}: not a finetuned classifier (architectures {archs}); "
                "use --head none to export the encoder"
            )
        model = head_class.from_pretrained(model_dir)
        require_trained_heads(model, model_dir)
    else:
        model = AlbertModel.from_pretrained(model_dir)
    model.eval()
    return model, head


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(
            f"{out}: is a file; -o is the directory to write {GRAPH} and its files into"
        )
    names = outputs.entries(out)
    other = next((n for n in names if any(fnmatch.fnmatchcase(n, p) for p in NOT_EXPORTED)), None)
    if other is not None:
        raise InputError(
            f"{out}: holds {other}: a model, run or dataset directory, not an export output; "
            "export never writes into one (choose another -o)"
        )
    if names and GRAPH not in names:
        mine = next((n for n in names if n in EXPORT_FILES), None)
        if mine is not None:
            raise InputError(
                f"{out}: holds {mine} but no {GRAPH}: not an export output, and export would "
                "replace that file (choose another -o)"
            )
    if names and not overwrite:
        raise InputError(
            f"{out}: not empty (use --overwrite to replace the files export writes there)"
        )


def run(cfg: ExportConfig) -> Summary:
    """Export the model directory to ``OUTPUT/model.onnx`` (+ config and tokenizer files) and
    (optionally) check the graph in onnxruntime."""
    out = Path(cfg.output)
    outputs.check_apart(out, {"--model": cfg.model})
    created = not out.exists()
    with outputs.locked(out, break_lock=cfg.break_lock):
        return _export(cfg, out, created)


def _export(cfg: ExportConfig, out: Path, created: bool) -> Summary:
    _check_output(out, cfg.overwrite)
    model, head = load_for_export(Path(cfg.model), cfg.head)
    if not any((Path(cfg.model) / n).is_file() for n in ("vocab.txt", "spiece.model")):
        raise ModelDirError(f"{cfg.model}: no vocab.txt or spiece.model (tokenizer) to ship")
    figures: dict[str, Any] = {"model": str(cfg.model), "head": head, "opset": cfg.opset}
    t0 = time.perf_counter()
    try:
        # Everything is staged in a hidden directory inside OUTPUT, then moved in: a failed or
        # interrupted export leaves OUTPUT as it was.
        with tempfile.TemporaryDirectory(prefix=".export.tmp-", dir=out) as tmp:
            stage = Path(tmp)
            fp32 = stage / "fp32.onnx"
            outputs = export_onnx(model, head, fp32, cfg.opset)
            final = fp32
            if cfg.quantize == "int8":
                final = stage / "int8.onnx"
                quantize_int8(fp32, final)
            figures["export_seconds"] = round(time.perf_counter() - t0, 2)
            if cfg.verify:
                feeds = model_inputs(model, batch=3, seq=24, seed=1)
                want = torch_outputs(model, head, feeds)
                got = ort_session(final).run(None, feeds)
                diff = max_abs_diff(want, got, feeds["attention_mask"])
                figures["onnxruntime_max_abs_diff"] = diff
                if cfg.quantize == "none" and not diff <= 1e-4:
                    raise ModelDirError(
                        f"{out}: onnxruntime output differs from PyTorch by {diff:.3g} (> 1e-4)"
                    )
            os.replace(final, stage / GRAPH)
            files = [GRAPH, *copy_tokenizer_files(Path(cfg.model), stage)]
            for name in EXPORT_FILES:  # a previous export's files (e.g. another tokenizer's)
                (out / name).unlink(missing_ok=True)
            for name in files:
                os.replace(stage / name, out / name)
    except BaseException:
        if created:  # the directory goes too (outputs.locked removes it once empty)
            for name in EXPORT_FILES:
                (out / name).unlink(missing_ok=True)
        raise
    kind = "int8 (dynamic quantization)" if cfg.quantize == "int8" else "fp32"
    figures.update(
        {
            "outputs": outputs,
            "quantize": cfg.quantize,
            "output": str(out),
            "graph": f"{GRAPH}: {kind}",
            "bytes": (out / GRAPH).stat().st_size,
            "files": files,
        }
    )
    return Summary("export", figures)


def copy_tokenizer_files(model_dir: Path, dest: Path) -> list[str]:
    """Copy the tokenizer files and config.json of ``model_dir`` into ``dest``; returns the names."""
    copied = []
    for name in (*TOKENIZER_FILES, "config.json"):
        src = model_dir / name
        if src.is_file():
            shutil.copyfile(src, dest / name)
            copied.append(name)
    return copied
