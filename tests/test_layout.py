"""The package layout's dependency rules (docs/internals.md, "Package layout").

Every module under albertzh/ is parsed with ``ast``; every import counts, also the ones inside
functions, under ``if TYPE_CHECKING:`` and ``importlib.import_module("...")`` /
``__import__("...")`` calls with a literal name. Dependencies point one way:

    cli -> pipeline -> {train, data, model} -> base

- cli (and ``albertzh/__main__.py``, the ``python -m albertzh`` entry point) may import anything;
- a pipeline module imports train, data, model and base, never another pipeline module
  (``pipeline/quickstart.py``, the orchestrator, excepted);
- train imports data, model and base;
- data imports base only, and never ``torch`` (not even lazily);
- model imports base only (never pipeline, train, data or cli);
- base (``tokenizer``, ``config``, ``console``, ``errors``, ``files``, ``outputs``,
  ``__init__``) imports only base; ``files`` and ``outputs`` import neither pyarrow nor torch.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "albertzh"
ROOT = Path(__file__).resolve().parents[1]

BASE_MODULES = {"tokenizer", "config", "console", "errors", "files", "outputs"}
ENTRY_POINTS = {"__main__"}  # top-level modules that belong with cli
SUBPACKAGES = ("cli", "pipeline", "train", "data", "model")
ORCHESTRATORS = {f"{PACKAGE}.pipeline.quickstart"}

# Which layers each layer may import (its own included).
ALLOWED: dict[str, set[str]] = {
    "cli": {"cli", "pipeline", "train", "data", "model", "base"},
    "pipeline": {"pipeline", "train", "data", "model", "base"},
    "train": {"train", "data", "model", "base"},
    "data": {"data", "base"},
    "model": {"model", "base"},
    "base": {"base"},
}
# Third-party packages a module must never import, by layer or by module.
FORBIDDEN_BY_LAYER: dict[str, set[str]] = {"data": {"torch"}}
FORBIDDEN_BY_MODULE: dict[str, set[str]] = {
    f"{PACKAGE}.files": {"torch", "pyarrow"},
    f"{PACKAGE}.outputs": {"torch", "pyarrow"},
}


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # absolute dotted name


def module_name(path: Path, root: Path) -> str:
    """``albertzh.pipeline.vocab`` for ``root/albertzh/pipeline/vocab.py``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> str | None:
    """The layer of an albertzh module (None for a module outside the layout)."""
    parts = name.split(".")
    if parts == [PACKAGE]:
        return "base"
    top = parts[1]
    if top in SUBPACKAGES:
        return top
    if len(parts) == 2 and top in BASE_MODULES:
        return "base"
    if len(parts) == 2 and top in ENTRY_POINTS:
        return "cli"
    return None


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(path: Path, root: Path, known: set[str]) -> list[Import]:
    """Every import in ``path``, as absolute dotted names (``from M import x`` names ``M.x`` when
    that is a module, else ``M``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = module_name(path, root)
    package = me if _is_package(path) else me.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.append(Import(node.lineno, sub if sub in known else mod))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if (
                fname in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
            ):
                found.append(Import(node.lineno, arg.value))
    return list(dict.fromkeys(found))  # ``from M import a, b`` names M once


def layout_violations(root: Path) -> list[str]:
    """One line per broken rule: ``albertzh/x.py:LINE: imports NAME: why``."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    known = {module_name(p, root) for p in files}
    problems: list[str] = []
    for path in files:
        me = module_name(path, root)
        where = path.relative_to(root).as_posix()
        layer = layer_of(me)
        if layer is None:
            problems.append(
                f"{where}: module {me} is in no layer (cli, pipeline, train, data, model or the "
                "base modules); place it, or add it to the layout in docs/internals.md and here"
            )
            continue
        forbidden = FORBIDDEN_BY_LAYER.get(layer, set()) | FORBIDDEN_BY_MODULE.get(me, set())
        for imp in imports_of(path, root, known):
            top = imp.target.split(".")[0]
            at = f"{where}:{imp.line}: imports {imp.target}"
            if top in forbidden:
                problems.append(f"{at}: {layer} module {me} must never import {top}")
                continue
            if top != PACKAGE:
                continue
            target_layer = layer_of(imp.target)
            if target_layer is None:
                problems.append(f"{at}: {imp.target} is in no layer")
            elif target_layer not in ALLOWED[layer]:
                allowed = ", ".join(sorted(ALLOWED[layer]))
                problems.append(
                    f"{at}: a {layer} module may import only {{{allowed}}}, not {target_layer}"
                )
            elif (
                layer == "pipeline"
                and target_layer == "pipeline"
                and imp.target != me
                and me not in ORCHESTRATORS
            ):
                problems.append(
                    f"{at}: a pipeline module must not import another pipeline module "
                    f"(only {', '.join(sorted(ORCHESTRATORS))} may); move the shared code to "
                    "data/, train/, model/ or a base module"
                )
    return problems


def test_package_follows_layout() -> None:
    problems = layout_violations(ROOT)
    assert not problems, "dependency rules broken:\n  " + "\n  ".join(problems)


def test_every_layer_has_modules() -> None:
    files = {module_name(p, ROOT) for p in (ROOT / PACKAGE).rglob("*.py")}
    for sub in SUBPACKAGES:
        assert f"{PACKAGE}.{sub}" in files, f"albertzh/{sub}/__init__.py is missing"
    for base in BASE_MODULES:
        assert f"{PACKAGE}.{base}" in files, f"albertzh/{base}.py is missing"


# --------------------------------------------------------------------------- the checker itself


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel in [
        "__init__.py",
        "errors.py",
        "files.py",
        *(f"{s}/__init__.py" for s in SUBPACKAGES),
        *files,
    ]:
        p = tmp_path / PACKAGE / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(files.get(rel, "")), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("rel", "source", "message"),
    [
        (
            "data/x.py",
            "def f():\n    import torch\n",
            "albertzh/data/x.py:2: imports torch: data module albertzh.data.x must never import torch",
        ),
        (
            "data/x.py",
            "import torch.nn as nn\n",
            "albertzh/data/x.py:1: imports torch.nn: data module",
        ),
        (
            "data/x.py",
            "import importlib\nm = importlib.import_module('torch')\n",
            "albertzh/data/x.py:2: imports torch",
        ),
        (
            "model/m.py",
            "def f():\n    from albertzh.data import fs\n",
            "albertzh/model/m.py:2: imports albertzh.data.fs: a model module may import only "
            "{base, model}, not data",
        ),
        (
            "model/m.py",
            "from ..pipeline import p\n",
            "albertzh/model/m.py:1: imports albertzh.pipeline.p: a model module",
        ),
        (
            "pipeline/p.py",
            "from albertzh.pipeline.q import X\n",
            "albertzh/pipeline/p.py:1: imports albertzh.pipeline.q: a pipeline module must not "
            "import another pipeline module",
        ),
        (
            "pipeline/p.py",
            "from . import q\n",
            "albertzh/pipeline/p.py:1: imports albertzh.pipeline.q: a pipeline module must not",
        ),
        (
            "pipeline/p.py",
            "import albertzh.cli\n",
            "albertzh/pipeline/p.py:1: imports albertzh.cli: a pipeline module may import only",
        ),
        (
            "train/t.py",
            "from albertzh.pipeline.p import X\n",
            "albertzh/train/t.py:1: imports albertzh.pipeline.p: a train module may import only",
        ),
        (
            "errors.py",
            "from albertzh.data.fs import Location\n",
            "albertzh/errors.py:1: imports albertzh.data.fs: a base module may import only {base}",
        ),
        (
            "files.py",
            "import pyarrow as pa\n",
            "albertzh/files.py:1: imports pyarrow: base module albertzh.files must never import",
        ),
        ("extra.py", "", "albertzh/extra.py: module albertzh.extra is in no layer"),
    ],
)
def test_checker_reports_violation(tmp_path: Path, rel: str, source: str, message: str) -> None:
    extra = {"pipeline/q.py": "", "pipeline/p.py": "", "data/fs.py": ""}
    root = _fake_package(tmp_path, {**extra, rel: source})
    problems = layout_violations(root)
    assert any(p.startswith(message) for p in problems), problems


def test_checker_accepts_allowed_imports(tmp_path: Path) -> None:
    root = _fake_package(
        tmp_path,
        {
            "__main__.py": "from albertzh.cli import main\n",
            "cli/c.py": "from albertzh.pipeline import p, quickstart\n",
            "pipeline/p.py": (
                "import torch\nfrom albertzh.train import t\nfrom albertzh.data import fs\n"
                "from albertzh.model import m\nfrom albertzh import __version__, files\n"
                "from . import p\n"
            ),
            "pipeline/quickstart.py": "from albertzh.pipeline import p\n",
            "train/t.py": "import torch\nfrom albertzh.data import fs\nfrom albertzh.model import m\n",
            "data/fs.py": "import pyarrow\nfrom albertzh.errors import X\nfrom .. import files\n",
            "model/m.py": "import torch\nfrom albertzh.files import atomic_write_bytes\n",
            "files.py": "import hashlib\nfrom albertzh.errors import X\n",
        },
    )
    assert layout_violations(root) == []
