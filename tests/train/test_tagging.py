"""Token classification plumbing: labels on first sub-tokens only, padded batches, and every
character's prediction recovered through overlapping windows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from albertzh.data import ner
from albertzh.errors import ConfigError
from albertzh.tokenizer import load_tokenizer
from albertzh.train import tagging

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture
def tok(tmp_path: Path):
    pieces = [*"我在北京上海年买了", *"0123456789", "iphone", "ip", "##h", "##one"]
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIALS + pieces) + "\n", encoding="utf-8")
    return load_tokenizer(tmp_path)


class Echo(torch.nn.Module):
    """Logits that name the input token: a prediction tells which token it was read from."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(num_labels))
        self.num_labels = num_labels

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # noqa: ANN001, ANN201
        return SimpleNamespace(logits=F.one_hot(input_ids, self.num_labels).float() + self.bias)


def test_labels_sit_on_each_units_first_token(tok) -> None:
    units = [["iph", "在", "北"], ["我"]]
    tags = [["B-X", "O", "B-LOC"], ["O"]]
    labels = ["O", "B-X", "B-LOC"]
    rows = tagging.encode_rows(tok, units, max_len=16, stride=7, tags=tags, labels=labels)
    assert len(rows) == 2
    ids0 = rows.encoded[0][0]
    assert tok.convert_ids_to_tokens(ids0) == ["[CLS]", "ip", "##h", "在", "北", "[SEP]"]
    assert rows.labels[0].tolist() == [-100, 1, -100, 0, 2, -100]
    batch = tagging.collate_rows(rows, [0, 1], tok.pad_id)
    assert batch["labels"].tolist() == [[-100, 1, -100, 0, 2, -100], [-100, 0, -100] + [-100] * 3]
    assert batch["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0, 0]


def test_every_character_is_recovered_through_windows(tok) -> None:
    rng = np.random.default_rng(0)
    alphabet = [*"我在北京上海年买了0123456789", "Z", " "]  # Z and the space become [UNK]
    sentences = [
        [alphabet[i] for i in rng.integers(0, len(alphabet), n)] for n in (1, 5, 13, 40, 97)
    ]
    model = Echo(tok.vocab_size)
    for max_len, stride in ((8, 3), (8, 6), (12, 1), (128, 10)):
        tagger = tagging.Tagger(
            model, tok, [str(i) for i in range(tok.vocab_size)], max_len, stride, {}, "cpu", "fp32"
        )
        rows = tagger.rows(sentences)
        assert all(len(e[0]) <= max_len for e in rows.encoded)
        got = tagger.tags(sentences, batch_size=3)
        for units, tags, a in zip(sentences, got, rows.aligned, strict=True):
            assert len(tags) == len(units)
            assert [int(t) for t in tags] == [a.ids[f] for f in a.first]
            assert [int(t) for t in tags] == [
                tok.unk_id if u in "Z " else tok.convert_tokens_to_ids([u])[0] for u in units
            ]


def test_kind_loss_ignores_unlabelled_positions() -> None:
    from albertzh.model import AlbertConfig, AlbertForTokenClassification

    torch.manual_seed(0)
    cfg = AlbertConfig(
        vocab_size=30, embedding_size=8, hidden_size=16, num_attention_heads=2,
        intermediate_size=32, num_hidden_layers=1, max_position_embeddings=16, num_labels=3,
    )  # fmt: skip
    model = AlbertForTokenClassification(cfg).eval()
    ids = torch.randint(5, 30, (2, 6))
    labels = torch.tensor([[-100, 1, 2, -100, 0, -100], [-100, 0, -100, -100, -100, -100]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": None}
    loss, metrics = tagging.TokenClassificationKind().loss(model, {**batch, "labels": labels})
    logits = model(ids).logits
    seen = labels != -100
    assert torch.allclose(loss, F.cross_entropy(logits[seen], labels[seen]), atol=1e-6)
    right = (logits.argmax(-1)[seen] == labels[seen]).float().mean()
    assert torch.allclose(metrics["token_accuracy"], right)


def test_stride_is_checked() -> None:
    assert tagging.resolve_stride(10, None) == 4 == ner.default_stride(10)
    assert tagging.resolve_stride(10, 8) == 8
    for bad in (0, 9):
        with pytest.raises(ConfigError, match=f"--doc-stride {bad}: must be 1..8"):
            tagging.resolve_stride(10, bad)
