"""Import a script of ``benchmarks/`` by path (the directory is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str, module_name: str | None = None) -> ModuleType:
    """``benchmarks/<script>.py`` as a module (named ``module_name``, default ``script``)."""
    spec = importlib.util.spec_from_file_location(
        module_name or script, BENCHMARKS / f"{script}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
