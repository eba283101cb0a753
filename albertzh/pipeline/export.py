"""``albertzh export``: a model directory to ONNX (fp32, or int8 by dynamic quantization).

The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, ``[batch,
sequence]``, both axes dynamic) and returns ``logits`` for a sequence classifier, or
``last_hidden_state`` and ``pooler_output`` with ``--head none``. The tokenizer files and
``config.json`` (labels) are copied beside the ``.onnx`` file, so the folder is all a runtime
needs. torch.onnx's exporter writes the shared ALBERT weights once; before quantizing, weight
transposes and the fused QKV concatenation are folded into constants (deduplicated, so a layer
shared by all L applications is still stored once) -- onnxruntime quantizes only MatMuls whose
weight is a constant.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from albertzh.config import StageConfig
from albertzh.console import Summary
from albertzh.errors import InputError, ModelDirError
from albertzh.files import atomic_writer
from albertzh.model.onnx import (
    export_onnx,
    max_abs_diff,
    ort_session,
    quantize_int8,
    sample_inputs,
    torch_outputs,
)

TOKENIZER_FILES = ("vocab.txt", "spiece.model", "tokenizer_config.json", "vocab.json")


class ExportConfig(StageConfig):
    """Options of ``albertzh export``."""

    model: Path = Field(..., description="Model directory (a finetuned classifier, or any model).")
    format: Literal["onnx"] = Field("onnx", description="Export format.")
    output: Path = Field(
        ..., description="The .onnx file to write.", json_schema_extra={"short": "-o"}
    )
    head: Literal["auto", "classifier", "none"] = Field(
        "auto",
        description="classifier: logits; none: the encoder's last_hidden_state and "
        "pooler_output; auto: classifier when the model dir is one.",
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
    overwrite: bool = Field(False, description="Replace an existing output file.")

    @model_validator(mode="after")
    def _check(self) -> ExportConfig:
        if self.output.suffix != ".onnx":
            raise ValueError(f"--output {self.output}: must end in .onnx")
        return self


def load_for_export(model_dir: Path, head: str) -> tuple[Any, str]:
    """The model to export and the resolved head ("classifier" or "none")."""
    from albertzh.model import AlbertForSequenceClassification, AlbertModel

    model_dir = Path(model_dir)
    cfg_file = model_dir / "config.json"
    if not cfg_file.is_file():
        raise ModelDirError(f"{model_dir}: no config.json (not a model directory)")
    try:
        archs = json.loads(cfg_file.read_text(encoding="utf-8")).get("architectures") or []
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{cfg_file}: not valid JSON: {exc}") from exc
    is_classifier = "AlbertForSequenceClassification" in archs
    if head == "auto":
        head = "classifier" if is_classifier else "none"
    if head == "classifier":
        if not is_classifier:
            raise ModelDirError(
                f"{model_dir}: not a finetuned classifier (architectures {archs}); "
                "use --head none to export the encoder"
            )
        model = AlbertForSequenceClassification.from_pretrained(model_dir)
    else:
        model = AlbertModel.from_pretrained(model_dir)
    model.eval()
    return model, head


def run(cfg: ExportConfig) -> Summary:
    """Export the model directory to ONNX and (optionally) check it in onnxruntime."""
    out = Path(cfg.output)
    if out.exists() and not cfg.overwrite:
        raise InputError(f"{out}: exists (use --overwrite)")
    if out.exists() and out.is_dir():
        raise InputError(f"{out}: is a directory")
    model, head = load_for_export(Path(cfg.model), cfg.head)
    if not any((Path(cfg.model) / n).is_file() for n in ("vocab.txt", "spiece.model")):
        raise ModelDirError(f"{cfg.model}: no vocab.txt or spiece.model (tokenizer) to ship")
    out.parent.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"model": str(cfg.model), "head": head, "opset": cfg.opset}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-", dir=out.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        outputs = export_onnx(model, head, fp32, cfg.opset)
        final = fp32
        if cfg.quantize == "int8":
            final = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, final)
        figures["export_seconds"] = round(time.perf_counter() - t0, 2)
        if cfg.verify:
            feeds = sample_inputs(model.config.vocab_size, batch=3, seq=24, seed=1)
            want = torch_outputs(model, head, feeds)
            got = ort_session(final).run(None, feeds)
            diff = max_abs_diff(want, got, feeds["attention_mask"])
            figures["onnxruntime_max_abs_diff"] = diff
            if cfg.quantize == "none" and not diff <= 1e-4:
                raise ModelDirError(
                    f"{out}: onnxruntime output differs from PyTorch by {diff:.3g} (> 1e-4)"
                )
        os.replace(final, out)
    copied = copy_tokenizer_files(Path(cfg.model), out.parent)
    figures.update(
        {
            "outputs": outputs,
            "quantize": cfg.quantize,
            "output": str(out),
            "bytes": out.stat().st_size,
            "copied": copied,
        }
    )
    return Summary("export", figures)


def copy_tokenizer_files(model_dir: Path, dest: Path) -> list[str]:
    """Copy the tokenizer files and config.json beside the exported graph."""
    copied = []
    for name in (*TOKENIZER_FILES, "config.json"):
        src = model_dir / name
        if src.is_file() and src.resolve() != (dest / name).resolve():
            with open(src, "rb") as fin, atomic_writer(dest / name, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            copied.append(name)
    return copied
