"""``albertzh clean``: flags map 1:1 onto :class:`albertzh.pipeline.clean.CleanConfig`."""

from __future__ import annotations

from albertzh.cli._stage import stage_command
from albertzh.pipeline.clean import CleanConfig, run

command = stage_command(
    "clean",
    CleanConfig,
    run,
    help=(
        "Normalize, filter and de-duplicate raw text (txt, JSON lines, Parquet, gzip, dirs, "
        "stdin) into a docs dataset: one row per document, sentences joined by newlines."
    ),
    epilog=(
        "Drop reasons: empty, too_short, too_long, low_chinese_ratio, repeated_lines, "
        "char_run, char_spam, url, duplicate, near_duplicate."
    ),
)
