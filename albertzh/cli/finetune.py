"""``albertzh finetune``: flags map onto :class:`albertzh.pipeline.finetune.FinetuneConfig`."""

from albertzh.cli._stage import stage_command
from albertzh.pipeline.finetune import FinetuneConfig, run

command = stage_command(
    "finetune",
    FinetuneConfig,
    run,
    help="Finetune a pretrained ALBERT dir on a classification task; the output dir is the best "
    "dev model (loadable by transformers.AlbertForSequenceClassification) plus metrics.json.",
    epilog="Runs unchanged under torchrun (DDP). Example: albertzh finetune --task chnsenticorp "
    "--model runs/pretrain --data-dir data/chnsenticorp -o runs/senti",
)
