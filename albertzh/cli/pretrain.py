"""``albertzh pretrain``: flags map 1:1 onto :class:`albertzh.pipeline.pretrain.PretrainConfig`."""

from __future__ import annotations

from albertzh.cli._stage import stage_command
from albertzh.pipeline.pretrain import PretrainConfig, run

command = stage_command(
    "pretrain",
    PretrainConfig,
    run,
    help=(
        "Pretrain ALBERT (masked LM + sentence-order prediction) on make-shards instances. "
        "The run directory ends as a HF-compatible model directory, with resumable "
        "checkpoints/ and metrics.jsonl beside it."
    ),
    epilog=(
        "Distributed: torchrun --nproc-per-node N -m albertzh pretrain ... (gloo on CPU, NCCL "
        "on GPU). Ctrl-C saves a checkpoint; --resume continues from the newest one."
    ),
)
