"""``albertzh build-vocab``: words dataset -> vocab directory."""

from albertzh.cli._stage import stage_command
from albertzh.pipeline.vocab import VocabConfig, run

command = stage_command(
    "build-vocab",
    VocabConfig,
    run,
    help="Build a BERT-style char/WordPiece vocab or a SentencePiece model from a words dataset, or adopt one with --from-vocab.",
)
