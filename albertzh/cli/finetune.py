"""``albertzh finetune``: flags map onto :class:`albertzh.pipeline.finetune.FinetuneConfig`."""

from albertzh.cli._stage import stage_command
from albertzh.pipeline.finetune import FinetuneConfig, run

command = stage_command(
    "finetune",
    FinetuneConfig,
    run,
    help="Finetune a pretrained ALBERT dir on a sentence classification, NER, span extraction "
    "or multiple-choice task; the output dir is the best dev model (loadable by transformers' "
    "AlbertForSequenceClassification, AlbertForTokenClassification, AlbertForQuestionAnswering "
    "or AlbertForMultipleChoice) plus metrics.json.",
    epilog="Runs unchanged under torchrun (DDP). Example: albertzh finetune --task chnsenticorp "
    "--model runs/pretrain --data-dir data/chnsenticorp -o runs/senti; NER: --task msra_ner "
    "(entity-level F1 picks the best model); reading comprehension: --task cmrc2018 (F1); "
    "multiple choice: --task c3 (accuracy).",
)
