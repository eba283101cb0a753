"""ONNX export of albertzh models: the graph, weight folding, int8 quantization, onnxruntime checks."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.errors import ConfigError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"--format onnx: needs the '{module}' package (pip install 'albertzh[export]')"
        ) from exc


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
                if head == "classifier" and names != ("logits",):
                    return tuple(getattr(out, n) for n in names)  # e.g. start/end logits
                if head == "classifier":
                    return out.logits  # [B, num_labels]
                return out.last_hidden_state, out.pooler_output  # [B, T, H], [B, H]

        # A head names its outputs when they are not one "logits" (question answering).
        names = tuple(getattr(model, "onnx_outputs", ("logits",)))
        self.module = Wrapper().eval()
        self.outputs = (
            list(names) if head == "classifier" else ["last_hidden_state", "pooler_output"]
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


def _has_choices(model: Any) -> bool:
    """A head whose inputs are ``[batch, choice, sequence]`` says so (multiple choice)."""
    return tuple(getattr(model, "input_axes", ())) == ("batch", "choice", "sequence")


def model_inputs(model: Any, batch: int = 2, seq: int = 16, seed: int = 0) -> dict:
    """:func:`sample_inputs` shaped for ``model``: ``[batch, 3 choices, seq]`` for a
    multiple-choice head (the last choice of the last question is padding), else as is."""
    if not _has_choices(model):
        return sample_inputs(model.config.vocab_size, batch=batch, seq=seq, seed=seed)
    flat = sample_inputs(model.config.vocab_size, batch=batch * 3, seq=seq, seed=seed)
    out = {n: a.reshape(batch, 3, seq) for n, a in flat.items()}  # [B*3, T] -> [B, 3, T]
    out["attention_mask"][:, :, :] = 1
    out["attention_mask"][-1, -1, :] = 0
    return out


def export_onnx(model: Any, head: str, path: Path, opset: int = 18) -> list[str]:
    """Export ``model`` to a single .onnx file with dynamic batch and sequence axes."""
    import torch

    _require("onnx")
    _require("onnxscript")
    graph = _Graph(model, head)
    ex = model_inputs(model, batch=2, seq=8)
    args = tuple(torch.from_numpy(ex[n]) for n in INPUTS)
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    shapes = {n: {0: batch, 1: seq} for n in INPUTS}
    if _has_choices(model):  # [batch, choice, sequence]
        shapes = {n: {0: batch, 1: torch.export.Dim("choice"), 2: seq} for n in INPUTS}
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
        elif d.ndim == 2 and mask.ndim == 3:  # [B, C] scores: nor do padding options
            d = d[mask[:, :, 0].astype(bool)]
        diffs.append(float(d.max()))
    return max(diffs)
