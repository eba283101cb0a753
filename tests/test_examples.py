"""Every shipped example config loads into its stage config (the CLI's own resolution), and
every example script parses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import typer
from click.testing import CliRunner

from albertzh.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = EXAMPLES / "configs"
SCRIPTS = sorted(EXAMPLES.glob("*.sh"))
COMMAND = {
    "clean": "clean",
    "segment": "segment",
    "build-vocab": "build-vocab",
    "build-vocab-spm": "build-vocab",
    "make-shards": "make-shards",
    "pretrain-tiny": "pretrain",
    "finetune-chnsenticorp": "finetune",
}


def test_every_config_is_covered() -> None:
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(COMMAND)


@pytest.mark.parametrize("name", sorted(COMMAND))
def test_example_config_resolves(name: str) -> None:
    import json

    import yaml

    root = typer.main.get_command(app)
    path = CONFIGS / f"{name}.yaml"
    r = CliRunner().invoke(root, [COMMAND[name], "--config", str(path), "--print-config"])
    assert r.exit_code == 0, r.output
    resolved = json.loads(r.stdout)
    for key, value in yaml.safe_load(path.read_text()).items():
        got = resolved[key.replace("-", "_")]
        assert got == value or str(got) == str(value), (key, got, value)


def test_the_example_scripts_are_found() -> None:
    assert {p.name for p in SCRIPTS} >= {"pipeline.sh", "chnsenticorp.sh"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_script_parses(script: Path) -> None:
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
