"""``albertzh make-shards``: flags map onto :class:`albertzh.pipeline.shards.ShardsConfig`."""

from albertzh.cli._stage import stage_command
from albertzh.pipeline.shards import ShardsConfig, run

command = stage_command(
    "make-shards",
    ShardsConfig,
    run,
    help="Turn a words dataset (segment) and a vocab (build-vocab) into ALBERT pretraining "
    "instances: [CLS] A [SEP] B [SEP] with sentence-order labels and jieba word starts for "
    "whole-word masking; --masking static also stores the masks.",
    epilog="Example: albertzh make-shards words --vocab vocab -o shards --workers 2",
)
