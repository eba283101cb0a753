"""``albertzh convert``: flags map onto :class:`albertzh.pipeline.convert.ConvertConfig`.

albert_zh's own words are the flags users expect (``--from tf``, ``--to hf``); albert_zh's model
config is ``--albert-config``, so ``--config`` is a run config here as in every other command.
"""

from __future__ import annotations

from albertzh.cli._stage import stage_command
from albertzh.pipeline.convert import ConvertConfig, run

command = stage_command(
    "convert",
    ConvertConfig,
    run,
    help="Convert albert_zh TF checkpoints and HF directories (both ways).",
    epilog="Example: albertzh convert --from tf albert_tiny_zh/albert_model.ckpt "
    "--albert-config albert_tiny_zh/albert_config_tiny.json --vocab albert_tiny_zh/vocab.txt "
    "-o models/albert_tiny_zh",
)
