"""Streaming instance batches: schema checks, padding, masking, determinism, rank split, resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from albertzh.config import StageConfig
from albertzh.data import dataset as ds
from albertzh.data.masking import MaskingOptions
from albertzh.errors import ConfigError, DatasetError
from albertzh.train import instances as idata

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)


class _ShardsCfg(StageConfig):
    seed: int = 0
    vocab: str | None = None


def make_vocab(path: Path, n_chars: int = 40) -> Path:
    """A char vocab dir (vocab.txt only): the 5 specials then ``n_chars`` CJK characters."""
    path.mkdir(parents=True, exist_ok=True)
    tokens = SPECIALS + [chr(0x4E00 + i) for i in range(n_chars)]
    (path / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


# A tiny ALBERT config for these instances: vocab_size = make_vocab()'s 5 specials + 40 chars.
TINY_MODEL = {
    "vocab_size": 45,
    "embedding_size": 16,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def vocab_info(vocab_dir: Path) -> dict:
    data = (vocab_dir / "vocab.txt").read_bytes()
    size = len(data.decode("utf-8").splitlines())
    return {
        "kind": "char",
        "size": size,
        "hash": hashlib.sha256(data).hexdigest(),
        "special_ids": dict(zip(("pad", "unk", "cls", "sep", "mask"), range(5), strict=True)),
    }


def write_instances(
    out: Path,
    n_rows: int,
    *,
    vocab: dict,
    vocab_dir: Path | None = None,
    seed: int = 0,
    parts: int = 2,
    row_group_rows: int = 16,
    static: bool = False,
    min_len: int = 6,
    max_len: int = 24,
    extra: dict | None = None,
) -> Path:
    """A tiny instances dataset as make-shards writes it; tokens follow a learnable pattern
    (each next token is the previous + 1 or + 2) so a tiny model can learn something.
    ``vocab_dir`` is recorded as make-shards records it (``config.vocab``)."""
    rng = np.random.default_rng(seed)
    V = vocab["size"]
    first = len(SPECIALS)
    out = ds.prepare_output(out)
    per_part = -(-n_rows // parts)
    done = 0
    for p in range(parts):
        cols: dict[str, list] = {k: [] for k in ("input_ids", "token_type_ids", "word_starts")}
        cols["sop_label"] = []
        cols["masked_positions"], cols["masked_ids"] = [], []
        for _ in range(min(per_part, n_rows - done)):
            la = int(rng.integers(min_len // 2, max_len // 2))
            lb = int(rng.integers(min_len // 2, max_len // 2))
            start = int(rng.integers(first, V))
            toks = [start]
            for _ in range(la + lb - 1):
                toks.append(first + (toks[-1] - first + int(rng.integers(1, 3))) % (V - first))
            a, b = toks[:la], toks[la:]
            swap = int(rng.integers(0, 2))
            if swap:
                a, b = b, a
            ids = [CLS, *a, SEP, *b, SEP]
            cols["input_ids"].append(ids)
            cols["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            cols["word_starts"].append([True] + [bool(rng.random() < 0.6) for _ in ids[1:]])
            cols["sop_label"].append(swap)
            pos = sorted(rng.choice(np.arange(1, len(a) + 1), size=2, replace=False).tolist())
            cols["masked_positions"].append(pos)
            cols["masked_ids"].append([ids[i] for i in pos])
            if static:
                for i in pos:
                    ids[i] = MASK
        done += len(cols["sop_label"])
        fields = {
            "input_ids": pa.array(cols["input_ids"], pa.list_(pa.int32())),
            "token_type_ids": pa.array(cols["token_type_ids"], pa.list_(pa.int8())),
            "word_starts": pa.array(cols["word_starts"], pa.list_(pa.bool_())),
            "sop_label": pa.array(cols["sop_label"], pa.int8()),
        }
        if static:
            fields["masked_positions"] = pa.array(cols["masked_positions"], pa.list_(pa.int32()))
            fields["masked_ids"] = pa.array(cols["masked_ids"], pa.list_(pa.int32()))
        ds.write_part(out, p, pa.table(fields), {"instances": done}, row_group_rows=row_group_rows)
    ds.finish_output(
        out,
        "make-shards",
        _ShardsCfg(seed=seed, vocab=str(vocab_dir) if vocab_dir else None),
        ["words"],
        {
            "vocab": vocab,
            "max_seq_len": max_len + 3,
            "masking": "static" if static else "dynamic",
            **(extra or {}),
        },
    )
    return out


def _spec(vocab_size: int = 45, static: bool = False) -> idata.MaskSpec:
    return idata.MaskSpec(
        vocab_size=vocab_size,
        mask_id=MASK,
        pad_id=PAD,
        special_ids=(PAD, UNK, CLS, SEP, MASK),
        opts=MaskingOptions(max_predictions=5),
        static=static,
    )


@pytest.fixture
def data(tmp_path: Path) -> idata.InstanceData:
    vocab = vocab_info(make_vocab(tmp_path / "vocab"))
    write_instances(tmp_path / "shards", 100, vocab=vocab)
    return idata.InstanceData(tmp_path / "shards", chunk_rows=10)


def _all(loader) -> list[dict]:
    return list(loader)


def _rows_of(batches: list[dict]) -> list[tuple]:
    """The (unmasked-independent) identity of each row: its token types and length."""
    out = []
    for b in batches:
        for i in range(b["input_ids"].shape[0]):
            n = int(b["attention_mask"][i].sum())
            out.append((tuple(b["token_type_ids"][i, :n].tolist()), int(b["sop_labels"][i])))
    return out


# --------------------------------------------------------------------------- opening


def test_open_checks_manifest_schema_and_rows(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such directory"):
        idata.InstanceData(tmp_path / "nope")
    vocab = vocab_info(make_vocab(tmp_path / "v"))
    out = ds.prepare_output(tmp_path / "half")
    ds.write_part(out, 0, pa.table({"input_ids": pa.array([[1]], pa.list_(pa.int32()))}))
    with pytest.raises(DatasetError, match="no manifest.json"):
        idata.InstanceData(out)
    ds.finish_output(out, "make-shards", _ShardsCfg(), [], {"vocab": vocab})
    with pytest.raises(DatasetError, match="part-00000.parquet: missing column 'token_type_ids'"):
        idata.InstanceData(out)
    empty = ds.prepare_output(tmp_path / "empty")
    ds.finish_output(empty, "make-shards", _ShardsCfg(), [], {"vocab": vocab})
    with pytest.raises(DatasetError, match="has no rows"):
        idata.InstanceData(empty)
    clean = ds.prepare_output(tmp_path / "docs")
    ds.write_part(clean, 0, pa.table({"doc_id": ["a"], "text": ["x"], "source": ["s"]}))
    ds.finish_output(clean, "clean", _ShardsCfg(), [])
    with pytest.raises(DatasetError, match="expected make-shards"):
        idata.InstanceData(clean)


def test_units_cover_all_rows(data: idata.InstanceData) -> None:
    assert data.rows == 100 and data.vocab["size"] == 45 and not data.static
    # 2 parts x 50 rows, row groups of 16 -> 16,16,16,2 per part, chunks of <= 10 rows.
    assert all(u.rows <= 10 for u in data.units)
    assert len(data.units) == 2 * (2 + 2 + 2 + 1)


def test_split_units_holds_out_the_tail(data: idata.InstanceData) -> None:
    train, held = idata.split_units(data.units, 0.13)
    assert sum(u.rows for u in held) == 13 and sum(u.rows for u in train) == 87
    last = data.units[-1]
    assert held[-1] == last and train[-1].path == last.path
    assert idata.split_units(data.units, 0.0) == (data.units, [])
    with pytest.raises(ConfigError, match="--eval-fraction"):
        idata.split_units(data.units, 0.999)


# --------------------------------------------------------------------------- batches


def test_batches_are_padded_and_masked(data: idata.InstanceData) -> None:
    batches = _all(idata.make_loader(data.units, _spec(), batch_size=8, seed=1))
    assert sum(b["input_ids"].shape[0] for b in batches) == 100
    assert [int(b["batch_index"]) for b in batches] == list(range(13))
    predicting = []
    for b in batches:
        lens = b["attention_mask"].sum(1)
        assert b["input_ids"].shape[1] == int(lens.max())  # padded to the longest only
        assert int(b["num_tokens"]) == int(lens.sum())
        pads = b["attention_mask"] == 0
        assert bool((b["input_ids"][pads] == PAD).all())
        labels, pos = b["masked_labels"], b["masked_positions"]
        real = labels != -100
        predicting.append(real.any(1))
        assert int(real.sum(1).max()) == labels.shape[1] <= 5
        rows = torch.arange(pos.shape[0])[:, None].expand_as(pos)
        assert bool((b["attention_mask"][rows[real], pos[real]] == 1).all())
        assert not bool(torch.isin(labels[real], torch.tensor([PAD, CLS, SEP, MASK])).any())
    # Nearly every row predicts something (a row whose words all exceed its budget may not).
    assert torch.cat(predicting).float().mean() > 0.9
    # Most chosen tokens now read [MASK] (80/10/10).
    masked = torch.cat(
        [
            b["input_ids"].gather(1, b["masked_positions"])[b["masked_labels"] != -100]
            for b in batches
        ]
    )
    assert (masked == MASK).float().mean() > 0.6


def test_pad_multiple_pads_lengths_and_predictions_and_changes_nothing_else(
    data: idata.InstanceData,
) -> None:
    kw = {"batch_size": 8, "seed": 1}
    plain = _all(idata.make_loader(data.units, _spec(), **kw))
    spec = dataclasses.replace(_spec(), pad_multiple=16)
    padded = _all(idata.make_loader(data.units, spec, **kw))
    assert len(padded) == len(plain)
    shapes = set()
    for a, b in zip(plain, padded, strict=True):
        T, P = a["input_ids"].shape[1], a["masked_positions"].shape[1]
        assert b["input_ids"].shape[1] == -(-T // 16) * 16  # the next multiple of 16
        assert b["masked_positions"].shape[1] == -(-P // 16) * 16
        shapes.add(tuple(b["input_ids"].shape))
        for key in ("input_ids", "attention_mask", "token_type_ids"):  # same rows, then padding
            assert torch.equal(b[key][:, :T], a[key]), key
        assert bool((b["input_ids"][:, T:] == PAD).all())
        assert not bool(b["attention_mask"][:, T:].any() or b["token_type_ids"][:, T:].any())
        # same masks (the RNG draws do not change); the extra slots predict nothing
        assert torch.equal(b["masked_positions"][:, :P], a["masked_positions"])
        assert torch.equal(b["masked_labels"][:, :P], a["masked_labels"])
        assert bool((b["masked_labels"][:, P:] == -100).all())
        for key in ("sop_labels", "num_tokens"):
            assert torch.equal(b[key], a[key]), key
    assert len(shapes) < len({tuple(a["input_ids"].shape) for a in plain})
    # never past pad_limit (the model's positions), unless the longest row already is
    capped = dataclasses.replace(spec, pad_multiple=64, pad_limit=20)
    for a, b in zip(plain, _all(idata.make_loader(data.units, capped, **kw)), strict=True):
        T = a["input_ids"].shape[1]
        assert b["input_ids"].shape[1] == max(T, 20)  # rows of 18-24 tokens


def test_same_seed_same_batches_and_workers_do_not_matter(data: idata.InstanceData) -> None:
    kw = {"batch_size": 8, "seed": 3, "epoch": 1, "shuffle_buffer": 20}
    a = _all(idata.make_loader(data.units, _spec(), **kw))
    b = _all(idata.make_loader(data.units, _spec(), num_workers=2, **kw))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    other = _all(idata.make_loader(data.units, _spec(), **{**kw, "epoch": 2}))
    assert _rows_of(a) != _rows_of(other)
    assert sorted(_rows_of(a)) == sorted(_rows_of(other))  # same rows, other order


def test_skip_batches_resumes_the_same_stream(data: idata.InstanceData) -> None:
    kw = {"batch_size": 8, "seed": 4}
    full = _all(idata.make_loader(data.units, _spec(), **kw))
    rest = _all(idata.make_loader(data.units, _spec(), skip_batches=5, **kw))
    assert len(rest) == len(full) - 5
    for x, y in zip(full[5:], rest, strict=True):
        assert torch.equal(x["input_ids"], y["input_ids"])
        assert torch.equal(x["masked_labels"], y["masked_labels"])


def test_ranks_read_disjoint_units(data: idata.InstanceData) -> None:
    seen = []
    for rank in range(2):
        mine = idata.units_for_rank(
            data.units, seed=5, epoch=0, rank=rank, world_size=2, shuffle=True
        )
        seen.append(set(mine))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(data.units)
    rows = [
        _rows_of(
            _all(idata.make_loader(data.units, _spec(), batch_size=8, seed=5, rank=r, world_size=2))
        )
        for r in range(2)
    ]
    assert len(rows[0]) + len(rows[1]) == 100
    n = idata.batches_per_epoch(data.units, 8, seed=5, world_size=2, shuffle=True)
    assert n == min(-(-len(r) // 8) for r in rows)


def test_no_shuffle_is_file_order(data: idata.InstanceData) -> None:
    a = _all(idata.make_loader(data.units, _spec(), batch_size=10, seed=1, shuffle=False))
    b = _all(idata.make_loader(data.units, _spec(), batch_size=10, seed=2, shuffle=False))
    assert _rows_of(a) == _rows_of(b)
    table = ds.iter_batches(data.parts[0], ["sop_label"]).__next__()
    first = [int(x) for x in table.column("sop_label").to_pylist()[:10]]
    assert [r[1] for r in _rows_of(a)[:10]] == first


def test_length_buckets_group_similar_lengths(data: idata.InstanceData) -> None:
    plain = _all(idata.make_loader(data.units, _spec(), batch_size=8, seed=6))
    bucketed = _all(idata.make_loader(data.units, _spec(), batch_size=8, seed=6, bucket=4))
    assert sorted(_rows_of(plain)) == sorted(_rows_of(bucketed))

    def padding(batches: list[dict]) -> int:
        return sum(int((b["attention_mask"] == 0).sum()) for b in batches)

    assert padding(bucketed) < padding(plain)


def test_static_masks_come_from_the_shards(tmp_path: Path) -> None:
    vocab = vocab_info(make_vocab(tmp_path / "vocab"))
    write_instances(tmp_path / "s", 20, vocab=vocab, static=True)
    data = idata.InstanceData(tmp_path / "s")
    assert data.static
    batches = _all(idata.make_loader(data.units, _spec(static=True), batch_size=5, seed=0))
    for b in batches:
        assert b["masked_positions"].shape[1] == 2
        assert bool((b["input_ids"].gather(1, b["masked_positions"]) == MASK).all())
        assert bool((b["masked_labels"] >= 5).all())


def test_masking_options_come_from_the_manifest(tmp_path: Path) -> None:
    vocab = vocab_info(make_vocab(tmp_path / "vocab"))
    opts = {"masked_lm_prob": 0.2, "max_predictions": 7, "ngram": 2}
    write_instances(tmp_path / "s", 4, vocab=vocab, extra={"masking_options": opts})
    got = idata.InstanceData(tmp_path / "s").masking_options()
    assert (got.masked_lm_prob, got.max_predictions, got.ngram) == (0.2, 7, 2)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["vocab"]["size"] == 45


# --------------------------------------------------------------------------- next-sentence pairs


def _pair(a: list[int], b: list[int], swapped: int) -> tuple:
    first, second = (b, a) if swapped else (a, b)
    ids = np.array([CLS, *first, SEP, *second, SEP], dtype=np.int32)
    tt = np.array([0] * (len(first) + 2) + [1] * (len(second) + 1), dtype=np.int8)
    return ids, tt, np.ones(len(ids), dtype=bool), swapped


def test_nsp_rows_put_pairs_in_order_and_draw_b_from_other_rows() -> None:
    rows = [
        _pair([10, 11, 12], [13, 14], 0),
        _pair([20, 21], [22, 23, 24, 25], 1),  # stored swapped: NSP sees it in text order
        _pair([30, 31, 32, 33], [34], 0),
        _pair([40], [41, 42], 1),
    ]
    b_of = {10: [13, 14], 20: [22, 23, 24, 25], 30: [34], 40: [41, 42]}
    labels = []
    for seed in range(40):
        out = idata.nsp_rows(rows, np.random.default_rng(seed))
        limit = max(len(r[0]) for r in rows)
        for r in out:
            ids, tt = r[0].tolist(), r[1].tolist()
            assert ids[0] == CLS and ids[-1] == SEP and len(ids) <= limit
            n_a = tt.count(0) - 2
            a, b = ids[1 : n_a + 1], ids[n_a + 2 : -1]
            assert ids[n_a + 1] == SEP and tt == [0] * (n_a + 2) + [1] * (len(b) + 1)
            own = b == b_of[a[0]]
            assert a == [a[0] + k for k in range(len(a))]  # A always the true first segment
            assert r[3] == (0 if own else 1)
            if not own:  # a prefix of another row's B, never its own
                assert any(b == other[: len(b)] for k, other in b_of.items() if k != a[0])
            labels.append(r[3])
    assert 0.35 < sum(labels) / len(labels) < 0.65  # about half the pairs are random


def test_nsp_leaves_single_segment_rows_and_refuses_static_masks(tmp_path: Path) -> None:
    single = (
        np.array([CLS, 50, 51, SEP], dtype=np.int32),
        np.zeros(4, np.int8),
        np.ones(4, bool),
        0,
    )
    out = idata.nsp_rows([single, _pair([10, 11], [12], 0)], np.random.default_rng(0))
    assert out[0][0].tolist() == [CLS, 50, 51, SEP] and out[0][3] == 0
    from albertzh.errors import ConfigError
    from albertzh.train.pretraining import mask_spec

    vocab = make_vocab(tmp_path / "v")
    write_instances(tmp_path / "s", 20, vocab=vocab_info(vocab), static=True)
    data = idata.InstanceData(tmp_path / "s")
    roles = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    with pytest.raises(ConfigError, match="--sentence-task nsp"):
        mask_spec(data, roles, None, None, "auto", "nsp")
