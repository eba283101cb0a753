"""The shared plumbing: config resolution, the CLI builder, and stage datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pytest
import typer
from click.testing import CliRunner
from pydantic import ConfigDict, Field

from albertzh.cli import app
from albertzh.cli._stage import stage_command
from albertzh.config import StageConfig, build_config
from albertzh.console import Summary
from albertzh.data import dataset as ds
from albertzh.errors import ConfigError, DatasetError, InputError


class ToyConfig(StageConfig):
    inputs: list[Path] = Field(
        ..., description="Input files.", json_schema_extra={"argument": True}
    )
    output: Path = Field(..., description="Output directory.", json_schema_extra={"short": "-o"})
    min_len: int = Field(5, ge=1, description="Minimum length.")
    mode: Literal["mask", "drop"] = Field("mask", description="What to do with URLs.")
    t2s: bool = Field(False, description="Traditional to simplified.")


def _toy_run(cfg: ToyConfig) -> Summary:
    if cfg.min_len == 99:
        raise InputError("foo.txt: line 3: bad thing")
    return Summary("toy", {"min_len": cfg.min_len, "mode": cfg.mode, "t2s": cfg.t2s})


toy = stage_command("toy", ToyConfig, _toy_run, help="A toy stage.")
runner = CliRunner()


def test_flags_map_onto_config_and_json_summary() -> None:
    r = runner.invoke(
        toy, ["a.txt", "-o", "out", "--min-len", "3", "--mode", "drop", "--t2s", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"stage": "toy", "min_len": 3, "mode": "drop", "t2s": True}


def test_help_comes_from_field_descriptions() -> None:
    r = runner.invoke(toy, ["--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "Minimum length. (default: 5)" in r.stdout
    assert "What to do with URLs." in r.stdout


def test_config_file_then_flags_override(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("min-len: 7\nmode: drop\ninputs: [x.txt]\noutput: o\n")
    r = runner.invoke(toy, ["--config", str(cfg), "--min-len", "9", "--print-config"])
    assert r.exit_code == 0, r.output
    resolved = json.loads(r.stdout)
    assert (
        resolved["min_len"] == 9 and resolved["mode"] == "drop" and resolved["inputs"] == ["x.txt"]
    )


def test_bad_value_is_one_line_exit_2() -> None:
    r = runner.invoke(toy, ["a", "-o", "o", "--min-len", "0"])
    assert r.exit_code == 2
    assert "--min-len" in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_user_error_from_stage_is_exit_2() -> None:
    r = runner.invoke(toy, ["a", "-o", "o", "--min-len", "99"])
    assert r.exit_code == 2
    assert "foo.txt: line 3: bad thing" in r.stderr


def test_config_file_unknown_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"min_lenn": 3}))
    with pytest.raises(ConfigError, match="min_lenn"):
        build_config(ToyConfig, cfg, {"inputs": ["a"], "output": "o"})


def test_root_version_and_help() -> None:
    root = typer.main.get_command(app)
    r = runner.invoke(root, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("albertzh ")
    r = runner.invoke(root, ["--help"])
    assert r.exit_code == 0


def _table(n: int) -> pa.Table:
    return pa.table({"doc_id": [f"d{i}" for i in range(n)], "text": ["你好"] * n})


class _Cfg(StageConfig):
    x: int = 1


def test_dataset_roundtrip_and_manifest(tmp_path: Path) -> None:
    out = ds.prepare_output(tmp_path / "docs")
    ds.write_part(out, 0, _table(3), {"kept": 3, "dropped": {"too_short": 1}})
    ds.write_part(out, 1, _table(2), {"kept": 2, "dropped": {"too_short": 2, "duplicate": 1}})
    (tmp_path / "in.txt").write_text("x")
    m = ds.finish_output(out, "clean", _Cfg(), [str(tmp_path / "in.txt"), "-", "missing.txt"])
    assert m["inputs"] == [str((tmp_path / "in.txt").resolve()), "-", "missing.txt"]
    assert m["rows"] == 5 and [f["name"] for f in m["files"]] == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert m["stats"] == {"kept": 5, "dropped": {"too_short": 3, "duplicate": 1}}
    back = ds.read_manifest(out, "clean")
    assert back["files"][0]["sha256"] == ds.sha256_file(out / "part-00000.parquet")
    rows = sum(b.num_rows for p in ds.part_paths(out) for b in ds.iter_batches(p, ["text"]))
    assert rows == 5


def test_incomplete_or_wrong_stage_refused(tmp_path: Path) -> None:
    out = ds.prepare_output(tmp_path / "docs")
    ds.write_part(out, 0, _table(1))
    with pytest.raises(DatasetError, match="no manifest.json"):
        ds.read_manifest(out)
    ds.finish_output(out, "clean", _Cfg(), [])
    with pytest.raises(DatasetError, match="expected segment"):
        ds.read_manifest(out, "segment")
    with pytest.raises(DatasetError, match="not empty"):
        ds.prepare_output(out)
    ds.prepare_output(out, resume=True)
    assert ds.part_complete(out, 0) and not (out / "manifest.json").exists()


def test_map_units_keeps_order_with_workers() -> None:
    assert list(ds.map_units(abs, [-3, 1, -2, 5], workers=2)) == [3, 1, 2, 5]
    assert ds.select_shard(list("abcde"), 1, 2) == [(1, "b"), (3, "d")]


def test_error_text_in_brackets_is_printed_verbatim() -> None:
    class _Boom(StageConfig):
        pass

    def _run(cfg: _Boom) -> Summary:
        raise InputError("dict.txt:3: expected 'word [freq] [tag]'")

    cmd = stage_command("boom", _Boom, _run, help="x")
    r = runner.invoke(cmd, [])
    assert r.exit_code == 2 and "word [freq] [tag]" in r.stderr


def test_error_names_a_custom_flag() -> None:
    class _Flagged(StageConfig):
        model_config_file: Path = Field(
            Path("x"), description="d", json_schema_extra={"flag": "--model-config"}
        )
        model_config = ConfigDict(extra="forbid", protected_namespaces=())

    with pytest.raises(ConfigError, match=r"^--model-config: "):
        build_config(_Flagged, None, {"model_config_file": 3.5})
