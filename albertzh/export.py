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
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from albertzh.config import StageConfig
from albertzh.console import Summary
from albertzh.errors import ConfigError, InputError, ModelDirError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
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


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"--format onnx: needs the '{module}' package (pip install 'albertzh[export]')"
        ) from exc


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


class _Graph:
    """Wraps the model so the exported graph has positional inputs and named outputs."""

    def __init__(self, model: Any, head: str) -> None:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                )
                if head == "classifier":
                    return out.logits  # [B, num_labels]
                return out.last_hidden_state, out.pooler_output  # [B, T, H], [B, H]

        self.module = Wrapper().eval()
        self.outputs = (
            ["logits"] if head == "classifier" else ["last_hidden_state", "pooler_output"]
        )


def sample_inputs(vocab_size: int, batch: int = 2, seq: int = 16, seed: int = 0) -> dict:
    """A fixed int64 batch with padding in one row (numpy arrays, by input name)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, max(6, vocab_size), (batch, seq), dtype=np.int64)
    ids[:, 0] = 2
    mask = np.ones((batch, seq), dtype=np.int64)
    if batch > 1:
        mask[-1, seq // 2 :] = 0
    types = np.zeros((batch, seq), dtype=np.int64)
    types[:, seq // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def export_onnx(model: Any, head: str, path: Path, opset: int = 18) -> list[str]:
    """Export ``model`` to a single .onnx file with dynamic batch and sequence axes."""
    import torch

    _require("onnx")
    _require("onnxscript")
    graph = _Graph(model, head)
    ex = sample_inputs(model.config.vocab_size, batch=2, seq=8)
    args = tuple(torch.from_numpy(ex[n]) for n in INPUTS)
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    shapes = {n: {0: batch, 1: seq} for n in INPUTS}
    # The exporter's own chatter (missing torchvision ops, opset notes) is not for our users.
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph.module,
                args,
                str(path),
                input_names=list(INPUTS),
                output_names=graph.outputs,
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=shapes,
                external_data=False,
                verbose=False,
            )
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)
    return graph.outputs


def fold_weight_ops(src: Path, dst: Path) -> int:
    """Fold Transpose/Concat nodes whose inputs are all constants into (deduplicated) constants.

    Returns the number of nodes folded. The graph computes the same values.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    # Constant nodes (the opset converter may emit weights so) become initializers first.
    for node in [n for n in g.node if n.op_type == "Constant"]:
        attr = {a.name: a for a in node.attribute}
        if "value" in attr:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr["value"].t)
            tensor.name = node.output[0]
            g.initializer.append(tensor)
            g.node.remove(node)
    consts = {init.name: init for init in g.initializer}
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        if name not in values:
            values[name] = numpy_helper.to_array(consts[name])
        return values[name]

    cache: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    keep, folded = [], 0
    for node in g.node:
        inputs = [rename.get(i, i) for i in node.input]
        del node.input[:]
        node.input.extend(inputs)
        if node.op_type in ("Transpose", "Concat") and inputs and all(i in consts for i in inputs):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            key = (
                node.op_type,
                tuple(inputs),
                tuple(sorted((k, str(v)) for k, v in attrs.items())),
            )
            if key not in cache:
                if node.op_type == "Transpose":
                    arr = np.transpose(value(inputs[0]), attrs.get("perm"))
                else:
                    arr = np.concatenate([value(i) for i in inputs], axis=int(attrs["axis"]))
                name = node.output[0]
                tensor = numpy_helper.from_array(np.ascontiguousarray(arr), name)
                g.initializer.append(tensor)
                consts[name] = tensor
                values[name] = arr
                cache[key] = name
            else:
                rename[node.output[0]] = cache[key]
            folded += 1
            continue
        keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    for out in g.output:
        if out.name in rename:  # an output produced by a folded duplicate: keep its name
            raise ValueError(f"cannot fold graph output {out.name}")
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    unused = [init for init in g.initializer if init.name not in used]
    for init in unused:
        g.initializer.remove(init)
    onnx.save(model, str(dst))
    return folded


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of MatMul and embedding (Gather) weights; activations at run time."""
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        folded = Path(tmp) / "folded.onnx"
        fold_weight_ops(src, folded)
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # a pre-processing hint we do not need
        try:
            quantize_dynamic(
                str(folded),
                str(dst),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gather"],
            )
        finally:
            logging.getLogger().setLevel(level)


def ort_session(path: Path, threads: int | None = None) -> Any:
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def torch_outputs(model: Any, head: str, feeds: dict) -> list[np.ndarray]:
    import torch

    graph = _Graph(model, head)
    with torch.no_grad():
        out = graph.module(*(torch.from_numpy(feeds[n]) for n in INPUTS))
    outs = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in outs]


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray], mask: np.ndarray) -> float:
    diffs = []
    for x, y in zip(a, b, strict=True):
        d = np.abs(x - y)
        if d.ndim == 3:  # padded positions carry no meaning
            d = d[mask.astype(bool)]
        diffs.append(float(d.max()))
    return max(diffs)


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
            tmp = dest / f".{name}.tmp-{os.getpid()}"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest / name)
            copied.append(name)
    return copied
