"""Shared by the CLI tests: the click command behind ``albertzh``, --help and one-error-line checks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer
from click.testing import CliRunner, Result

import albertzh.cli

root = typer.main.get_command(albertzh.cli.app)
runner = CliRunner()

# Short real sentences for synthetic corpora (documents = random runs of 2-5 of them).
SENTENCES = [
    "今天天气很好，我们一起去公园散步。",
    "北京是中国的首都，有着悠久的历史和灿烂的文化。",
    "这家餐厅的菜很好吃，服务也很周到。",
    "他每天早上六点起床，然后去跑步锻炼身体。",
    "上海的夜景非常漂亮，吸引了很多游客。",
    "我喜欢在周末看书和听音乐。",
    "人工智能正在改变我们的生活方式。",
    "这部电影的故事情节很感人，演员的表演也很出色。",
    "学校图书馆里有很多有趣的书。",
    "春天来了，花园里的花都开了。",
    "我们应该保护环境，减少塑料的使用。",
    "小明的数学成绩一直很好，老师经常表扬他。",
]


def write_corpus(path: Path, n_docs: int, seed: int, sentences: Sequence[str] = SENTENCES) -> Path:
    """A one-document-per-line corpus of ``n_docs`` seeded runs of 2-5 ``sentences``."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        k = int(rng.integers(2, 6))
        docs.append("".join(sentences[int(i)] for i in rng.choice(len(sentences), k)))
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return path


def invoke(*args: object) -> Result:
    """``albertzh ARGS...`` (200 columns wide, so help and errors are not wrapped)."""
    return runner.invoke(root, [str(a) for a in args], env={"COLUMNS": "200"})


def invoke_json(*args: object) -> dict[str, Any]:
    """``albertzh ARGS... --json``: must exit 0; returns the summary object."""
    r = invoke(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def assert_help_lists(command: str, flags: Iterable[str]) -> None:
    """``albertzh COMMAND --help`` (200 columns wide) exits 0 and names every flag."""
    r = runner.invoke(root, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for flag in flags:
        assert flag in r.stdout, flag


def one_error_line(r: Result, *needles: str) -> str:
    """Exit 2, no traceback, exactly one line on stderr holding every needle; returns that line."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
