"""Streaming pretraining batches from make-shards instance datasets.

The data is cut into *units*: row ranges (at most ``chunk_rows`` rows) of the Parquet row
groups, in file order. Each epoch the units are shuffled with ``(seed, epoch)`` and dealt out
round-robin, so every DDP rank reads a disjoint set. A rank's units stream through a bounded
shuffle buffer into row batches (optionally sorted by length inside windows of ``bucket``
batches), and batch *k* is masked with its own generator seeded by ``(seed, epoch, rank, k)``.
So the batch sequence is a pure function of ``(seed, epoch, rank)``: it does not depend on the
number of DataLoader workers (worker *w* materialises only batches ``k % workers == w``, which
the DataLoader's in-order round-robin returns as 0, 1, 2, ...), and resuming at batch *n* just
skips the first *n* row batches without masking them.

Each batch is a dict of tensors padded to its longest sequence: ``input_ids``,
``attention_mask``, ``token_type_ids`` ``[B, T]``; ``masked_positions``, ``masked_labels``
``[B, P]`` (P = the most predictions of any row; label ``-100`` in padding slots); ``sop_labels``
``[B]``; and ``num_tokens`` (non-padding tokens, a 0-d tensor).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from albertzh.data import dataset as ds
from albertzh.data import fs
from albertzh.data.masking import IGNORE_INDEX, MaskingOptions, mask_batch
from albertzh.errors import ConfigError, DatasetError

STAGE = "make-shards"
REQUIRED_COLUMNS: dict[str, pa.DataType] = {
    "input_ids": pa.list_(pa.int32()),
    "token_type_ids": pa.list_(pa.int8()),
    "word_starts": pa.list_(pa.bool_()),
    "sop_label": pa.int8(),
}
STATIC_COLUMNS: dict[str, pa.DataType] = {
    "masked_positions": pa.list_(pa.int32()),
    "masked_ids": pa.list_(pa.int32()),
}


@dataclass(frozen=True)
class Unit:
    """Rows ``[start, stop)`` of one row group of one part file."""

    path: str
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class MaskSpec:
    """How batches get their masks: dynamically (``opts``) or from the stored static masks."""

    vocab_size: int
    mask_id: int
    pad_id: int
    special_ids: tuple[int, ...]
    opts: MaskingOptions = field(default_factory=MaskingOptions)
    static: bool = False
    # The sentence-pair task of the [CLS] head: "sop" (are A and B in order or swapped; the
    # shards' sop_label) or "nsp" (is B the continuation of A, or from another document).
    sentence_task: str = "sop"
    # Pad each batch's length, and its number of masked positions, up to a multiple of this
    # (1 = to the longest row): fewer distinct shapes, so GPU kernels planned per shape (cuDNN
    # attention, torch.compile graphs) are reused instead of built again for most batches.
    pad_multiple: int = 1
    # ... but never longer than this (the model's max_position_embeddings) unless a row is
    pad_limit: int | None = None


NSP_RANDOM_RATE = 0.5  # share of pairs whose B comes from another document under "nsp"


def _segments(row: _Row) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(A ids, A word starts, B ids, B word starts) of ``[CLS] A [SEP] B [SEP]`` in text
    order (a swapped SOP instance is swapped back); None for a row without a B segment."""
    ids, tt, ws, sop = row[0], row[1], row[2], row[3]
    n_a = int((tt == 0).sum()) - 2  # [CLS] and the first [SEP] have type 0
    if n_a < 1 or n_a + 3 >= len(ids):
        return None
    a, wa = ids[1 : n_a + 1], ws[1 : n_a + 1]
    b, wb = ids[n_a + 2 : -1], ws[n_a + 2 : -1]
    return (b, wb, a, wa) if sop else (a, wa, b, wb)


def nsp_rows(rows: Sequence[_Row], rng: np.random.Generator) -> list[_Row]:
    """Rebuild a batch's rows for next-sentence prediction: every pair in text order, and for
    :data:`NSP_RANDOM_RATE` of them B replaced by the B of another row of the batch (another
    document, given the shuffle), label 1. Lengths stay within the batch's longest row."""
    limit = max(len(r[0]) for r in rows)
    segs = [_segments(r) for r in rows]
    with_b = [i for i, s in enumerate(segs) if s is not None]
    out: list[_Row] = []
    for i, row in enumerate(rows):
        seg = segs[i]
        if seg is None:
            out.append((row[0], row[1], row[2], 0))
            continue
        a, wa, b, wb = seg
        label = 0
        if len(with_b) > 1 and rng.random() < NSP_RANDOM_RATE:
            j = with_b[int(rng.integers(len(with_b) - 1))]
            j = with_b[-1] if j == i else j  # any row with a B but this one
            _, _, b, wb = segs[j]  # type: ignore[misc]
            b, wb = b[: max(1, limit - len(a) - 3)], wb[: max(1, limit - len(a) - 3)]
            label = 1
        cls, sep = row[0][0], row[0][-1]
        ids = np.concatenate([[cls], a, [sep], b, [sep]]).astype(row[0].dtype)
        tt = np.concatenate([np.zeros(len(a) + 2), np.ones(len(b) + 1)]).astype(row[1].dtype)
        ws = np.concatenate([[True], wa, [True], wb, [True]]).astype(bool)
        out.append((ids, tt, ws, label))
    return out


class InstanceData:
    """An opened, checked instances dataset (make-shards output) and its units.

    ``path`` is a local directory or a URL (see :mod:`albertzh.data.fs`); units name their
    part files as strings, so DataLoader workers open them (and resolve a URL) themselves.
    Every part's size, rows and schema are checked against the manifest, and with ``verify``
    its sha256 (:func:`albertzh.data.dataset.check_parts`).
    """

    def __init__(self, path: fs.Location, *, chunk_rows: int = 2048, verify: bool = False) -> None:
        self.path = fs.location(path)
        self.manifest = ds.read_manifest(self.path, STAGE)
        self.static = self.manifest.get("masking", "dynamic") == "static"
        wanted = {**REQUIRED_COLUMNS, **(STATIC_COLUMNS if self.static else {})}
        self.parts = ds.check_parts(self.path, self.manifest, wanted, verify=verify)
        if not self.parts or int(self.manifest.get("rows", 0)) == 0:
            raise DatasetError(f"{self.path}: the instances dataset has no rows")
        vocab = self.manifest.get("vocab")
        if not isinstance(vocab, dict) or "size" not in vocab:
            raise DatasetError(
                f"{fs.join(self.path, ds.MANIFEST)}: no 'vocab' with a 'size' (re-run make-shards)"
            )
        self.vocab: dict[str, Any] = vocab
        self.max_seq_len = int(self.manifest.get("max_seq_len", 0) or 0)
        self.units = list_units(self.parts, chunk_rows)
        self.rows = sum(u.rows for u in self.units)

    def masking_options(self) -> MaskingOptions:
        """The masking parameters recorded by make-shards (defaults for missing ones)."""
        m = self.manifest.get("masking_options") or self.manifest.get("masking_params") or {}
        known = {k: v for k, v in m.items() if k in MaskingOptions.model_fields}
        return MaskingOptions(**known)


def list_units(parts: Sequence[fs.Location], chunk_rows: int = 2048) -> list[Unit]:
    """All row ranges of all row groups, in file order."""
    units = []
    for p in parts:
        meta = ds.read_metadata(p)
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            for s in range(0, n, chunk_rows):
                units.append(Unit(str(p), rg, s, min(n, s + chunk_rows)))
    return units


def split_units(units: Sequence[Unit], fraction: float) -> tuple[list[Unit], list[Unit]]:
    """Hold out the last ``fraction`` of the rows (cutting a unit if needed): (train, eval)."""
    total = sum(u.rows for u in units)
    n_eval = math.ceil(total * fraction)
    if fraction <= 0 or n_eval == 0:
        return list(units), []
    if n_eval >= total:
        raise ConfigError(
            f"--eval-fraction {fraction}: leaves no training rows (the data has {total} rows)"
        )
    train, held = list(units), []
    while n_eval > 0:
        u = train.pop()
        if u.rows <= n_eval:
            held.insert(0, u)
            n_eval -= u.rows
        else:
            cut = u.stop - n_eval
            train.append(Unit(u.path, u.row_group, u.start, cut))
            held.insert(0, Unit(u.path, u.row_group, cut, u.stop))
            n_eval = 0
    return train, held


def units_for_rank(
    units: Sequence[Unit], *, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool
) -> list[Unit]:
    """This rank's units for ``epoch``: a seeded shuffle of all units, every world_size-th."""
    order = np.arange(len(units))
    if shuffle:
        order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(units))
    return [units[i] for i in order[rank::world_size]]


def batches_per_epoch(
    units: Sequence[Unit], batch_size: int, *, seed: int, world_size: int, shuffle: bool
) -> int:
    """Batches the *smallest* rank gets in epoch 0 (the last partial batch counts)."""
    counts = [
        sum(
            u.rows
            for u in units_for_rank(
                units, seed=seed, epoch=0, rank=r, world_size=world_size, shuffle=shuffle
            )
        )
        for r in range(world_size)
    ]
    return min(math.ceil(c / batch_size) for c in counts)


# --------------------------------------------------------------------------- reading rows


_Row = tuple  # (input_ids, token_type_ids, word_starts, sop_label[, masked_positions, masked_ids])


def _list_column(col: pa.ChunkedArray | pa.Array, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets from 0) of a list column, without Python objects per row."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.slice(offsets[0], offsets[-1] - offsets[0])
    return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False), offsets - offsets[0]


def _read_unit(unit: Unit, files: dict[str, pq.ParquetFile], static: bool) -> list[_Row]:
    pf = files.get(unit.path)
    if pf is None:
        pf = files[unit.path] = ds.open_parquet(fs.location(unit.path))
    cols = list(REQUIRED_COLUMNS) + (list(STATIC_COLUMNS) if static else [])
    try:
        table = pf.read_row_group(unit.row_group, columns=cols).slice(unit.start, unit.rows)
    except (OSError, pa.ArrowException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatasetError(
            f"{unit.path}: damaged Parquet data ({first}); check the dataset with --verify"
        ) from None
    ids, off = _list_column(table.column("input_ids"), np.int32)
    tt, _ = _list_column(table.column("token_type_ids"), np.int8)
    ws, _ = _list_column(table.column("word_starts"), bool)
    sop = table.column("sop_label").to_numpy()
    if static:
        mp, moff = _list_column(table.column("masked_positions"), np.int32)
        mi, _ = _list_column(table.column("masked_ids"), np.int32)
    rows = []
    for i in range(table.num_rows):
        a, b = off[i], off[i + 1]
        row: tuple = (ids[a:b], tt[a:b], ws[a:b], int(sop[i]))
        if static:
            row += (mp[moff[i] : moff[i + 1]], mi[moff[i] : moff[i + 1]])
        rows.append(row)
    return rows


def _shuffled_rows(
    units: Sequence[Unit], rng: np.random.Generator | None, buffer_size: int, static: bool
) -> Iterator[_Row]:
    """Rows of ``units`` in order, or through a bounded random-replacement shuffle buffer."""
    files: dict[str, pq.ParquetFile] = {}
    buf: list[_Row] = []
    for u in units:
        for row in _read_unit(u, files, static):
            if rng is None:
                yield row
            elif len(buf) < buffer_size:
                buf.append(row)
            else:
                j = int(rng.integers(buffer_size))
                yield buf[j]
                buf[j] = row
    if rng is not None:
        for j in rng.permutation(len(buf)):
            yield buf[j]


def row_batches(
    units: Sequence[Unit],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int,
    shuffle: bool = True,
    shuffle_buffer: int = 10000,
    bucket: int = 1,
    static: bool = False,
) -> Iterator[list[_Row]]:
    """Batches of rows of this rank's ``units``; with ``bucket`` > 1, windows of that many
    batches are sorted by length and cut into batches (issued in a random order)."""
    rng = np.random.default_rng([seed, epoch, rank, 0xB0F]) if shuffle else None
    rows = _shuffled_rows(units, rng, max(1, shuffle_buffer), static)
    window = batch_size * max(1, bucket)
    order_rng = np.random.default_rng([seed, epoch, rank, 0xB0C])
    while True:
        chunk = list(itertools.islice(rows, window))
        if not chunk:
            return
        if bucket > 1:
            chunk.sort(key=lambda r: len(r[0]))
            groups = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            for g in order_rng.permutation(len(groups)) if shuffle else range(len(groups)):
                yield groups[g]
        else:
            yield chunk


def collate(rows: Sequence[_Row], spec: MaskSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Pad rows to the longest, mask them (dynamic) or use their stored masks (static)."""
    if spec.sentence_task == "nsp":
        rows = nsp_rows(rows, np.random.default_rng(rng.integers(2**63)))
    B = len(rows)
    lens = np.fromiter((len(r[0]) for r in rows), dtype=np.int64, count=B)
    T = int(lens.max())
    ids = np.full((B, T), spec.pad_id, dtype=np.int64)
    tt = np.zeros((B, T), dtype=np.int64)
    ws = np.zeros((B, T), dtype=bool)
    for i, r in enumerate(rows):
        n = lens[i]
        ids[i, :n], tt[i, :n], ws[i, :n] = r[0], r[1], r[2]
    attn = np.arange(T)[None, :] < lens[:, None]
    if spec.static:
        counts = [len(r[4]) for r in rows]
        P = max(1, max(counts))
        positions = np.zeros((B, P), dtype=np.int64)
        labels = np.full((B, P), IGNORE_INDEX, dtype=np.int64)
        for i, r in enumerate(rows):
            positions[i, : counts[i]] = r[4]
            labels[i, : counts[i]] = r[5]
    else:
        mb = mask_batch(
            ids,
            ws,
            rng,
            spec.opts,
            vocab_size=spec.vocab_size,
            mask_id=spec.mask_id,
            special_ids=spec.special_ids,
        )
        P = max(1, int(mb.num_predictions.max()))
        ids = mb.input_ids.astype(np.int64)
        positions = mb.positions[:, :P].astype(np.int64)
        labels = mb.labels[:, :P].astype(np.int64)
    if spec.pad_multiple > 1:  # after masking: the masks (and the RNG draws) do not change
        width, slots = _round_up(T, spec.pad_multiple), _round_up(P, spec.pad_multiple)
        if spec.pad_limit is not None:
            width = max(T, min(width, spec.pad_limit))
        ids, attn, tt = (
            _pad_to(a, width, fill) for a, fill in ((ids, spec.pad_id), (attn, False), (tt, 0))
        )
        positions, labels = _pad_to(positions, slots, 0), _pad_to(labels, slots, IGNORE_INDEX)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(attn.astype(np.int64)),
        "token_type_ids": torch.from_numpy(tt),
        "masked_positions": torch.from_numpy(positions),
        "masked_labels": torch.from_numpy(labels),
        "sop_labels": torch.tensor([r[3] for r in rows], dtype=torch.int64),
        "num_tokens": torch.tensor(int(lens.sum())),
    }


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad_to(a: np.ndarray, width: int, fill: Any) -> np.ndarray:
    """``a`` (B, n) widened to (B, width) with ``fill`` on the right."""
    if a.shape[1] >= width:
        return a
    out = np.full((a.shape[0], width), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


class InstanceStream(IterableDataset):
    """One rank's batches for one epoch, starting after ``skip_batches`` (see module doc)."""

    def __init__(
        self,
        units: Sequence[Unit],
        spec: MaskSpec,
        *,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 10000,
        bucket: int = 1,
        skip_batches: int = 0,
    ) -> None:
        self.units = units_for_rank(
            units, seed=seed, epoch=epoch, rank=rank, world_size=world_size, shuffle=shuffle
        )
        self.spec = spec
        self.batch_size = batch_size
        self.seed, self.epoch, self.rank = seed, epoch, rank
        self.shuffle, self.shuffle_buffer, self.bucket = shuffle, shuffle_buffer, bucket
        self.skip_batches = skip_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = row_batches(
            self.units,
            self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            shuffle=self.shuffle,
            shuffle_buffer=self.shuffle_buffer,
            bucket=self.bucket,
            static=self.spec.static,
        )
        for k, rows in enumerate(batches):
            if k < self.skip_batches or k % nw != wid:
                continue
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, k, 0x3A5C])
            batch = collate(rows, self.spec, rng)
            batch["batch_index"] = torch.tensor(k)
            yield batch


def make_loader(
    units: Sequence[Unit],
    spec: MaskSpec,
    *,
    batch_size: int,
    seed: int,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    shuffle_buffer: int = 10000,
    bucket: int = 1,
    skip_batches: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over :class:`InstanceStream` (batches are made by the dataset)."""
    stream = InstanceStream(
        units,
        spec,
        batch_size=batch_size,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        shuffle=shuffle,
        shuffle_buffer=shuffle_buffer,
        bucket=bucket,
        skip_batches=skip_batches,
    )
    # A private generator: creating the iterator must not draw from the global torch RNG,
    # or a resumed run's dropout masks would drift from an uninterrupted run's.
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + rank)
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator,
    )
