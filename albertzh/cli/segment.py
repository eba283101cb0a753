"""``albertzh segment``: docs dataset -> words dataset."""

from albertzh.cli._stage import stage_command
from albertzh.pipeline.segment import SegmentConfig, run

command = stage_command(
    "segment",
    SegmentConfig,
    run,
    help="Split documents into sentences of jieba words (rjieba or jieba, optional user dict).",
)
