"""``albertzh eval``: flags map onto :class:`albertzh.pipeline.evaluate.EvalConfig`."""

from albertzh.cli._stage import stage_command
from albertzh.pipeline.evaluate import EvalConfig, run

command = stage_command(
    "eval",
    EvalConfig,
    run,
    help="Evaluate a finetuned model on a task split (accuracy, macro-F1, loss; per-class "
    "P/R/F1 with --json; NER: entity-level precision, recall, F1, per type with --json), or a "
    "pretrained model on instance shards (--shards: MLM/SOP).",
)
