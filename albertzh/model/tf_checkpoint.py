"""Read and write TensorFlow 1 checkpoints (TensorBundle V2) without TensorFlow.

A checkpoint ``PREFIX`` is two kinds of file:

- ``PREFIX.index``: a LevelDB-style sorted table. Key ``""`` holds a ``BundleHeaderProto``
  (number of shards, endianness), every other key is a tensor name whose value is a
  ``BundleEntryProto`` (dtype, shape, shard id, offset, size, masked crc32c).
- ``PREFIX.data-0000i-of-0000N``: the raw little-endian tensor bytes, one after another.

The table format: data blocks (prefix-compressed entries + restart points), a meta-index
block, an index block (one entry per data block: a separator key and a block handle), then a
48-byte footer (two block handles and a magic number). Each block is followed by a 5-byte
trailer: compression type (0 none, 1 snappy) and the masked crc32c of block + type byte.

Only the handful of protobuf fields needed are decoded, by hand. :func:`write_checkpoint`
produces the same format, so tests can build albert_zh-style checkpoints with no TensorFlow.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from albertzh.errors import InputError
from albertzh.files import atomic_write_bytes

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_LEN = 48  # two block handles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER_LEN = 5

# TensorFlow DataType enum -> numpy dtype (little-endian). DT_STRING (7) is handled apart.
DT_STRING = 7
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
DT_BFLOAT16 = 14  # stored as uint16 high halves of float32; widened on read
_DTYPE_ENUM = {v: k for k, v in DTYPES.items()}

# --------------------------------------------------------------------------- crc32c (Castagnoli)

_POLY = 0x82F63B78  # reflected polynomial


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(x) for x in _TABLE]


def _raw_crc_small(data: bytes, reg: int) -> int:
    t = _TABLE_LIST
    for b in data:
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


# The CRC register update is linear over GF(2), so a long buffer is cut into C chunks whose
# registers are computed side by side (one numpy op per byte position), then combined with the
# "feed n zero bytes" operator, itself a 32x32 bit matrix applied through four 256-entry tables.


def _apply_cols(cols: list[int], x: int) -> int:
    out, i = 0, 0
    while x:
        if x & 1:
            out ^= cols[i]
        x >>= 1
        i += 1
    return out


def _zero_byte_cols() -> list[int]:
    return [int(_TABLE[(1 << i) & 0xFF]) ^ ((1 << i) >> 8) for i in range(32)]


def _compose(a: list[int], b: list[int]) -> list[int]:
    """Columns of the operator a∘b (apply b, then a)."""
    return [_apply_cols(a, c) for c in b]


def _shift_cols(nbytes: int) -> list[int]:
    """Columns of the operator 'feed nbytes zero bytes' (by repeated squaring)."""
    result = [1 << i for i in range(32)]
    power = _zero_byte_cols()
    while nbytes:
        if nbytes & 1:
            result = _compose(power, result)
        power = _compose(power, power)
        nbytes >>= 1
    return result


def _cols_tables(cols: list[int]) -> np.ndarray:
    """[4, 256] lookup tables so that op(x) = T0[x&255] ^ T1[x>>8&255] ^ T2[..] ^ T3[..]."""
    tables = np.zeros((4, 256), dtype=np.uint32)
    b = np.arange(256, dtype=np.uint32)
    for k in range(4):
        for bit in range(8):
            on = (b >> bit) & 1 == 1
            tables[k, on] ^= np.uint32(cols[8 * k + bit])
    return tables


def _apply_tables(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (
        tables[0][x & 0xFF]
        ^ tables[1][(x >> 8) & 0xFF]
        ^ tables[2][(x >> 16) & 0xFF]
        ^ tables[3][(x >> 24) & 0xFF]
    )


def _raw_crc_zero_init(buf: np.ndarray) -> int:
    """CRC register after feeding ``buf`` (uint8 array) into a zero register."""
    n = buf.size
    chunk = 4096
    if n < 4 * chunk:
        return _raw_crc_small(buf.tobytes(), 0)
    count = n // chunk
    head = buf[: count * chunk].reshape(count, chunk).T.copy()  # [chunk, count]
    regs = np.zeros(count, dtype=np.uint32)
    for j in range(chunk):
        regs = _TABLE[(regs ^ head[j]) & 0xFF] ^ (regs >> 8)
    # Tree-combine: reg(A||B) = shift_len(B)(reg(A)) ^ reg(B).
    length = chunk
    while regs.size > 1:
        if regs.size % 2:
            regs = np.concatenate([np.zeros(1, dtype=np.uint32), regs])  # a zero-length prefix
            # prepending a zero register is harmless: shifting 0 gives 0
        tables = _cols_tables(_shift_cols(length))
        regs = _apply_tables(tables, regs[0::2]) ^ regs[1::2]
        length *= 2
    reg = int(regs[0])
    tail = buf[count * chunk :].tobytes()
    if tail:
        reg = _apply_cols(_shift_cols(len(tail)), reg) ^ _raw_crc_small(tail, 0)
    return reg


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The CRC-32C (Castagnoli) of ``data``, as TensorFlow and LevelDB compute it."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    # crc(M) = reg after M from init 0xFFFFFFFF, xor 0xFFFFFFFF; the init part is shift_n(~0).
    if n < 4 * 4096:
        return _raw_crc_small(buf.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    init = _apply_cols(_shift_cols(n), 0xFFFFFFFF)
    return init ^ _raw_crc_zero_init(buf) ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TF's masked crc (stored crcs are masked so crcs of crcs stay well spread)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --------------------------------------------------------------------------- varints, protobuf


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # protobuf encodes negative int32/int64 as 10-byte varints
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value = bytes(buf[pos : pos + n])
            if len(value) != n:
                raise ValueError("truncated field")
            pos += n
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _field_bytes(field: int, wire: int, value: int | bytes) -> bytes:
    key = _varint((field << 3) | wire)
    if wire == 0:
        return key + _varint(int(value))  # type: ignore[arg-type]
    if wire == 2:
        assert isinstance(value, bytes)
        return key + _varint(len(value)) + value
    if wire == 5:
        return key + struct.pack("<I", int(value))  # type: ignore[arg-type]
    raise ValueError(wire)


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: a decoded ``BundleEntryProto``."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    sliced: bool

    @property
    def numpy_dtype(self) -> np.dtype | None:
        if self.dtype == DT_BFLOAT16:
            return np.dtype("<f4")
        return DTYPES.get(self.dtype)


def _decode_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, _, value in _proto_fields(buf):
        if field == 2:  # Dim
            size = 0
            for f2, _, v2 in _proto_fields(value):  # type: ignore[arg-type]
                if f2 == 1:
                    size = _signed64(v2)  # type: ignore[arg-type]
            dims.append(size)
        elif field == 3 and value:
            raise ValueError("tensor of unknown rank")
    return tuple(dims)


def _decode_entry(name: str, buf: bytes) -> TensorEntry:
    dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, None, False
    for field, _, value in _proto_fields(buf):
        if field == 1:
            dtype = int(value)  # type: ignore[arg-type]
        elif field == 2:
            shape = _decode_shape(value)  # type: ignore[arg-type]
        elif field == 3:
            shard = int(value)  # type: ignore[arg-type]
        elif field == 4:
            offset = _signed64(value)  # type: ignore[arg-type]
        elif field == 5:
            size = _signed64(value)  # type: ignore[arg-type]
        elif field == 6:
            crc = int(value)  # type: ignore[arg-type]
        elif field == 7:
            sliced = True
    return TensorEntry(name, dtype, shape, shard, offset, size, crc, sliced)


def _encode_entry(dtype: int, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(_field_bytes(2, 2, _field_bytes(1, 0, d)) for d in shape)
    out = _field_bytes(1, 0, dtype) + _field_bytes(2, 2, dims)
    # shard_id 0 is the proto default and is omitted, as TF does.
    if offset:
        out += _field_bytes(4, 0, offset)
    out += _field_bytes(5, 0, size) + _field_bytes(6, 5, crc)
    return out


def _encode_header(num_shards: int) -> bytes:
    version = _field_bytes(1, 0, 1)  # VersionDef.producer = 1, as TF writes
    return _field_bytes(1, 0, num_shards) + _field_bytes(3, 2, version)


# --------------------------------------------------------------------------- snappy (decode)


def snappy_decompress(data: bytes) -> bytes:
    """Decode a raw snappy block (TF may compress index blocks with snappy)."""
    n, pos = _read_varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                nb = length - 59
                length = int.from_bytes(data[pos : pos + nb], "little")
                pos += nb
            length += 1
            out += data[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise ValueError("bad snappy copy offset")
        start = len(out) - offset
        for i in range(length):  # copies may overlap their own output
            out.append(out[start + i])
    if len(out) != n:
        raise ValueError("snappy length mismatch")
    return bytes(out)


# --------------------------------------------------------------------------- table reading


def _read_block(raw: bytes, offset: int, size: int, path: Path) -> bytes:
    end = offset + size
    if end + BLOCK_TRAILER_LEN > len(raw):
        raise InputError(f"{path}: truncated table block at offset {offset}")
    contents = raw[offset:end]
    kind = raw[end]
    stored = struct.unpack_from("<I", raw, end + 1)[0]
    if unmask_crc(stored) != crc32c(raw[offset : end + 1]):
        raise InputError(f"{path}: checksum mismatch in table block at offset {offset}")
    if kind == 0:
        return contents
    if kind == 1:
        try:
            return snappy_decompress(contents)
        except (ValueError, IndexError) as exc:
            raise InputError(f"{path}: bad snappy block at offset {offset}: {exc}") from exc
    raise InputError(f"{path}: unknown block compression type {kind}")


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ValueError("block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise ValueError("bad restart count")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _read_varint(block, pos)
        non_shared, pos = _read_varint(block, pos)
        vlen, pos = _read_varint(block, pos)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise ValueError("corrupt block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + vlen]
        pos += vlen


def read_table(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-style table file, in key order."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < FOOTER_LEN:
        raise InputError(f"{path}: too short for a checkpoint index")
    footer = raw[-FOOTER_LEN:]
    magic = struct.unpack_from("<Q", footer, 40)[0]
    if magic != TABLE_MAGIC:
        raise InputError(f"{path}: not a TensorFlow checkpoint index (bad magic number)")
    try:
        _, pos = _read_varint(footer, 0)  # meta-index handle: unused
        _, pos = _read_varint(footer, pos)
        index_off, pos = _read_varint(footer, pos)
        index_size, pos = _read_varint(footer, pos)
        index = _read_block(raw, index_off, index_size, path)
        for _, handle in _block_entries(index):
            off, p = _read_varint(handle, 0)
            size, _ = _read_varint(handle, p)
            yield from _block_entries(_read_block(raw, off, size, path))
    except ValueError as exc:
        raise InputError(f"{path}: corrupt checkpoint index: {exc}") from exc


def _block_bytes(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        if i % restart_interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        out += key[shared:] + value
        prev = key
    if not restarts:
        restarts = [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _snappy_literal(data: bytes) -> bytes:
    """A valid snappy encoding made only of literals (enough to exercise the reader)."""
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 1 << 16):
        piece = data[i : i + (1 << 16)]
        n = len(piece) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + n.to_bytes(2, "little")
        out += piece
    return bytes(out)


def write_table(
    path: Path,
    entries: list[tuple[bytes, bytes]],
    *,
    block_size: int = 4096,
    restart_interval: int = 16,
    snappy: bool = False,
) -> None:
    """Write sorted (key, value) pairs as a LevelDB-style table (atomically)."""
    keys = [k for k, _ in entries]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise ValueError("table keys must be unique and sorted")
    out = bytearray()

    def emit(block: bytes) -> bytes:
        kind = 0
        if snappy:
            block, kind = _snappy_literal(block), 1
        handle = _varint(len(out)) + _varint(len(block))
        out.extend(block)
        trailer = bytes([kind])
        out.extend(trailer + struct.pack("<I", mask_crc(crc32c(block + trailer))))
        return handle

    index: list[tuple[bytes, bytes]] = []
    pending: list[tuple[bytes, bytes]] = []
    pending_bytes = 0
    for key, value in entries:
        pending.append((key, value))
        pending_bytes += len(key) + len(value) + 8
        if pending_bytes >= block_size:
            index.append((key, emit(_block_bytes(pending, restart_interval))))
            pending, pending_bytes = [], 0
    if pending or not index:
        index.append(
            (pending[-1][0] if pending else b"", emit(_block_bytes(pending, restart_interval)))
        )
    meta = emit(_block_bytes([], restart_interval))
    idx = emit(_block_bytes(index, 1))
    handles = meta + idx
    footer = handles + b"\0" * (40 - len(handles)) + struct.pack("<Q", TABLE_MAGIC)
    out.extend(footer)
    atomic_write_bytes(Path(path), bytes(out))


# --------------------------------------------------------------------------- checkpoints


def resolve_prefix(path: Path) -> Path:
    """Turn what a user passes (prefix, ``.index`` file, data file, or directory) into a prefix.

    A directory is resolved through its ``checkpoint`` file, else its only ``*.index``.
    """
    path = Path(path)
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[: -len(".index")])
    if ".data-" in name:
        return path.with_name(name.split(".data-")[0])
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            for line in state.read_text(encoding="utf-8").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    value = line.split(":", 1)[1].strip().strip('"')
                    prefix = Path(value)
                    return prefix if prefix.is_absolute() else path / prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
        if not indexes:
            raise InputError(f"{path}: no TensorFlow checkpoint (*.index) in this directory")
        raise InputError(
            f"{path}: several checkpoints here ({', '.join(p.name for p in indexes)}); "
            "pass the prefix of one"
        )
    return path


class TFCheckpoint(Mapping[str, np.ndarray]):
    """A TF1 checkpoint opened by prefix: a read-only mapping name -> numpy array.

    Tensors are read on access (``ckpt[name]``), so listing names and shapes is cheap.
    """

    def __init__(self, prefix: Path, verify: bool = True) -> None:
        self.prefix = resolve_prefix(Path(prefix))
        self.verify = verify
        index = self.prefix.with_name(self.prefix.name + ".index")
        if not index.is_file():
            raise InputError(f"{index}: checkpoint index not found")
        self.index_path = index
        self.num_shards = 1
        self.entries: dict[str, TensorEntry] = {}
        for key, value in read_table(index):
            try:
                if key == b"":
                    for field, _, v in _proto_fields(value):
                        if field == 1:
                            self.num_shards = int(v)  # type: ignore[arg-type]
                        elif field == 2 and v:
                            raise InputError(f"{index}: big-endian checkpoints are not supported")
                    continue
                name = key.decode("utf-8")
                self.entries[name] = _decode_entry(name, value)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InputError(f"{index}: corrupt entry {key[:80]!r}: {exc}") from exc
        self._data: dict[int, np.memmap | np.ndarray] = {}

    def data_path(self, shard: int) -> Path:
        return self.prefix.with_name(
            f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}"
        )

    def _shard(self, shard: int) -> np.ndarray:
        if shard not in self._data:
            path = self.data_path(shard)
            if not path.is_file():
                raise InputError(f"{path}: checkpoint data file not found")
            if path.stat().st_size == 0:
                self._data[shard] = np.zeros(0, dtype=np.uint8)
            else:
                self._data[shard] = np.memmap(path, dtype=np.uint8, mode="r")
        return self._data[shard]

    def __getitem__(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        path = self.data_path(entry.shard_id)
        if entry.sliced:
            raise InputError(f"{self.index_path}: {name}: partitioned variables are not supported")
        data = self._shard(entry.shard_id)
        if entry.offset + entry.size > data.size:
            raise InputError(f"{path}: {name}: data file is shorter than the index says")
        buf = np.asarray(data[entry.offset : entry.offset + entry.size])
        if self.verify and entry.crc32c is not None and unmask_crc(entry.crc32c) != crc32c(buf):
            raise InputError(f"{path}: {name}: checksum mismatch (corrupt checkpoint data)")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.dtype == DT_STRING:
            return _decode_strings(buf.tobytes(), count).reshape(entry.shape)
        if entry.dtype == DT_BFLOAT16:
            halves = np.frombuffer(buf.tobytes(), dtype="<u2").astype(np.uint32) << 16
            return halves.view(np.float32).reshape(entry.shape)
        dtype = DTYPES.get(entry.dtype)
        if dtype is None:
            raise InputError(f"{self.index_path}: {name}: unsupported dtype enum {entry.dtype}")
        if count * dtype.itemsize != entry.size:
            raise InputError(f"{self.index_path}: {name}: size does not match dtype and shape")
        return np.frombuffer(buf.tobytes(), dtype=dtype).reshape(entry.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: e.shape for n, e in self.entries.items()}


def _decode_strings(raw: bytes, count: int) -> np.ndarray:
    # Layout: varint64 length per element, a 4-byte masked crc of the lengths, then the bytes.
    lengths, pos = [], 0
    for _ in range(count):
        n, pos = _read_varint(raw, pos)
        lengths.append(n)
    pos += 4
    out = np.empty(count, dtype=object)
    for i, n in enumerate(lengths):
        out[i] = raw[pos : pos + n]
        pos += n
    return out


def load_checkpoint(prefix: Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Read every tensor of a TF1 checkpoint: name -> numpy array."""
    ckpt = TFCheckpoint(prefix, verify=verify)
    return {name: ckpt[name] for name in ckpt}


def write_checkpoint(
    prefix: Path,
    tensors: Mapping[str, np.ndarray],
    *,
    snappy_index: bool = False,
    block_size: int = 4096,
    state_file: bool = True,
) -> Path:
    """Write numeric tensors as a single-shard TF1 checkpoint (``.index`` + ``.data``).

    Also writes the ``checkpoint`` state file beside it (``state_file``), as tf.train.Saver
    does, so the directory itself can be passed as the checkpoint.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[bytes, bytes]] = [(b"", _encode_header(1))]
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors, key=lambda s: s.encode("utf-8")):
        arr = np.asarray(tensors[name])
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        enum = _DTYPE_ENUM.get(np.dtype(dtype))
        if enum is None:
            raise ValueError(f"{name}: dtype {arr.dtype} cannot be written")
        data = np.ascontiguousarray(arr, dtype=dtype).tobytes()
        crc = mask_crc(crc32c(data))
        entries.append(
            (name.encode("utf-8"), _encode_entry(enum, arr.shape, offset, len(data), crc))
        )
        chunks.append(data)
        offset += len(data)
    data_path = prefix.with_name(prefix.name + ".data-00000-of-00001")
    atomic_write_bytes(data_path, b"".join(chunks))
    write_table(
        prefix.with_name(prefix.name + ".index"),
        entries,
        block_size=block_size,
        snappy=snappy_index,
    )
    if state_file:
        text = (
            f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n'
        )
        atomic_write_bytes(prefix.parent / "checkpoint", text.encode("utf-8"))
    return prefix
