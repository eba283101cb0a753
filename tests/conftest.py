"""Shared fixtures: paths to ../shared/data (tests skip cleanly when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(rel: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"shared data not found: {p} (tests read ../shared/data beside the checkout)")
    return p


@pytest.fixture
def clue_corpus() -> Path:
    return shared_path("corpus/clue_corpus_small_sample.txt")


@pytest.fixture
def news_corpus() -> Path:
    return shared_path("corpus/news_zh_sample.txt")


@pytest.fixture
def bert_vocab() -> Path:
    return shared_path("vocab/bert_chinese_vocab.txt")


@pytest.fixture
def msra_ner() -> Path:
    """The MSRA NER task directory (train.tsv, dev.tsv, label2id.json)."""
    return shared_path("tasks/msra_ner")


@pytest.fixture
def c3_dir() -> Path:
    """The C3 task directory (train.json, dev.json in the C3 layout)."""
    return shared_path("tasks/c3")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
