"""Shared by the model tests: one-thread torch and the tiny config they build models from."""

from __future__ import annotations

import pytest
import torch

from albertzh.model import AlbertConfig

TINY = dict(
    vocab_size=60,
    embedding_size=8,
    hidden_size=16,
    num_attention_heads=2,
    intermediate_size=32,
    num_hidden_layers=2,
    max_position_embeddings=32,
)


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP spin-waits on this shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**fields) -> AlbertConfig:
    """A tiny AlbertConfig: ``TINY`` with ``fields`` on top."""
    return AlbertConfig(**{**TINY, **fields})
