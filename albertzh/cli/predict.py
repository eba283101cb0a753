"""``albertzh predict``: flags map onto :class:`albertzh.pipeline.predict.PredictConfig`.

The predictions are JSON lines, on stdout by default, so the summary is one line on stderr (``-q``
drops it) and ``--json`` (the summary as JSON on stdout) needs ``-o FILE``.
"""

from __future__ import annotations

from albertzh.cli._stage import stage_command
from albertzh.console import Summary, err_console
from albertzh.pipeline.predict import PredictConfig, run


def _report(summary: Summary, cfg: PredictConfig) -> None:
    if not cfg.quiet:
        f = summary.figures
        err_console.print(
            f"predict: {f['rows']:,} rows -> {f['output']} in {f['seconds']} s"
            + (" (int8: dynamic quantization, CPU)" if f.get("int8") else ""),
            highlight=False,
            markup=False,
        )


command = stage_command(
    "predict",
    PredictConfig,
    run,
    help="Classify sentences or a<TAB>b pairs (one per line, from INPUT or stdin) with a "
    'finetuned model; writes one JSON line per input line, in order: {"label": ..., '
    '"probabilities": {...}}; with a NER model {"entities": [{"type", "text", "start", "end"}]} '
    "(character offsets into the line, end exclusive).",
    epilog="Example: printf '房间很干净\\n太吵了\\n' | albertzh predict --model runs/senti",
    data_on_stdout=lambda cfg: cfg.output == "-",
    report=_report,
)
