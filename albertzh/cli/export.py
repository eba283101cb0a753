"""``albertzh export``: a model directory to an ONNX directory (optionally int8)."""

from albertzh.cli._stage import stage_command
from albertzh.pipeline.export import ExportConfig, run

command = stage_command(
    "export",
    ExportConfig,
    run,
    help="Export a model to ONNX (dynamic batch/sequence axes; --quantize int8 for dynamic "
    "int8): OUTPUT gets model.onnx, config.json and the tokenizer files, the layout "
    "onnxruntime and HF Optimum load.",
    epilog="Example: albertzh export --model runs/chnsenticorp -o deploy/chnsenticorp",
)
