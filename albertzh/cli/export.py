"""``albertzh export``: a model directory to ONNX (optionally int8)."""

from albertzh.cli._stage import stage_command
from albertzh.pipeline.export import ExportConfig, run

command = stage_command(
    "export",
    ExportConfig,
    run,
    help="Export a model to ONNX (dynamic batch/sequence axes; --quantize int8 for dynamic "
    "int8), with its tokenizer files beside it.",
    epilog="Example: albertzh export --model runs/chnsenticorp --format onnx -o deploy/model.onnx",
)
