"""The TensorBundle reader/writer: format details, errors, and (optionally) real TensorFlow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from albertzh.errors import InputError
from albertzh.model import tf_checkpoint as tfc


def _slow_crc(data: bytes) -> int:
    return tfc._raw_crc_small(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


def test_crc32c_known_value_and_chunked_path() -> None:
    assert tfc.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert tfc.crc32c(b"") == 0
    rng = np.random.default_rng(1)
    # sizes below, at and above the vectorised threshold, with odd chunk counts and tails
    for n in (10, 16383, 16384, 16385, 3 * 4096 * 5 + 7, 123_457):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert tfc.crc32c(data) == _slow_crc(data), n


def test_mask_roundtrip() -> None:
    for crc in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert tfc.unmask_crc(tfc.mask_crc(crc)) == crc
    assert tfc.mask_crc(0) == 0xA282EAD8


def test_snappy_decoder_literals_and_overlapping_copy() -> None:
    # "abc" literal, then a 1-byte-offset copy of length 6 at offset 3 (overlaps its output)
    block = bytes([9, 2 << 2]) + b"abc" + bytes([((6 - 4) << 2) | 1, 3])
    assert tfc.snappy_decompress(block) == b"abcabcabc"
    # 2-byte-offset copy: length 5, offset 9
    block2 = bytes([14, 8 << 2]) + b"012345678" + bytes([((5 - 1) << 2) | 2, 9, 0])
    assert tfc.snappy_decompress(block2) == b"01234567801234"
    long = bytes(range(256)) * 3
    assert tfc.snappy_decompress(tfc._snappy_literal(long)) == long


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = {
        "bert/embeddings/word_embeddings": rng.standard_normal((300, 16)).astype(np.float32),
        "bert/embeddings/LayerNorm/gamma": np.ones(16, np.float32),
        "global_step": np.array(77, dtype=np.int64),
        "half": rng.standard_normal((3, 2)).astype(np.float16),
        "ints": np.arange(-5, 5, dtype=np.int32),
        "flags": np.array([True, False]),
        "doubles": np.linspace(0, 1, 4),
    }
    for i in range(120):  # enough keys for several data blocks and shared key prefixes
        t[f"bert/encoder/layer_{i:03d}/kernel"] = np.full((2, 3), i, np.float32)
    return t


@pytest.mark.parametrize("snappy", [False, True])
def test_write_then_read_roundtrip(tmp_path: Path, snappy: bool) -> None:
    tensors = _tensors()
    tfc.write_checkpoint(tmp_path / "model.ckpt", tensors, snappy_index=snappy, block_size=512)
    ckpt = tfc.TFCheckpoint(tmp_path / "model.ckpt")
    assert set(ckpt) == set(tensors)
    assert ckpt.shapes()["bert/embeddings/word_embeddings"] == (300, 16)
    for name, want in tensors.items():
        got = ckpt[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.array_equal(got, want), name


def test_prefix_resolution(tmp_path: Path) -> None:
    prefix = tfc.write_checkpoint(tmp_path / "albert_model.ckpt", {"a": np.zeros(2, np.float32)})
    assert tfc.resolve_prefix(tmp_path) == prefix  # via the `checkpoint` state file
    assert tfc.resolve_prefix(tmp_path / "albert_model.ckpt.index") == prefix
    assert tfc.resolve_prefix(tmp_path / "albert_model.ckpt.data-00000-of-00001") == prefix
    (tmp_path / "checkpoint").unlink()
    assert tfc.resolve_prefix(tmp_path) == prefix  # the only *.index in the directory
    assert list(tfc.load_checkpoint(tmp_path)) == ["a"]


def test_corrupt_data_is_a_checksum_error(tmp_path: Path) -> None:
    prefix = tfc.write_checkpoint(tmp_path / "m", {"w": np.arange(8, dtype=np.float32)})
    data = tmp_path / "m.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="w: checksum mismatch"):
        tfc.load_checkpoint(prefix)
    assert tfc.load_checkpoint(prefix, verify=False)["w"].shape == (8,)


def test_bad_index_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="checkpoint index not found"):
        tfc.TFCheckpoint(tmp_path / "nothing")
    (tmp_path / "bad.index").write_bytes(b"x" * 100)
    with pytest.raises(InputError, match="bad.index: not a TensorFlow checkpoint"):
        tfc.TFCheckpoint(tmp_path / "bad")
    prefix = tfc.write_checkpoint(tmp_path / "m", {"w": np.zeros(4, np.float32)})
    index = tmp_path / "m.index"
    raw = bytearray(index.read_bytes())
    raw[3] ^= 0x40  # inside the first data block: its block checksum no longer matches
    index.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="m.index: checksum mismatch"):
        tfc.TFCheckpoint(prefix)
    tfc.write_checkpoint(tmp_path / "m2", {"w": np.zeros(4, np.float32)})
    (tmp_path / "m2.data-00000-of-00001").unlink()
    with pytest.raises(InputError, match="data file not found"):
        tfc.load_checkpoint(tmp_path / "m2")


# --------------------------------------------------------------------------- real TensorFlow

_TF_SAVE = textwrap.dedent(
    """
    import sys, numpy as np, tensorflow as tf
    out = sys.argv[1]
    tf.compat.v1.disable_eager_execution()
    vals = dict(np.load(out + "/want.npz"))
    g = tf.Graph()
    with g.as_default():
        for k, v in vals.items():
            tf.compat.v1.Variable(v, name=k.replace("|", "/"))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as s:
            s.run(tf.compat.v1.global_variables_initializer())
            saver.save(s, out + "/tf/model.ckpt")
    """
)

_TF_READ = textwrap.dedent(
    """
    import sys, numpy as np, tensorflow as tf
    prefix, npz = sys.argv[1], sys.argv[2]
    r = tf.train.load_checkpoint(prefix)
    want = {k.replace("|", "/"): v for k, v in np.load(npz).items()}
    assert set(r.get_variable_to_shape_map()) == set(want)
    for k, v in want.items():
        got = r.get_tensor(k)
        assert got.dtype == v.dtype and np.array_equal(got, v), k
    print("ok", len(want))
    """
)


def _tf_python() -> str:
    """An interpreter with tensorflow: this one, or $ALBERTZH_TF_PYTHON (a separate venv)."""
    exe = os.environ.get("ALBERTZH_TF_PYTHON")
    if exe and shutil.which(exe):
        return exe
    try:
        import tensorflow  # noqa: F401
    except Exception:
        pytest.skip("tensorflow not installed (set ALBERTZH_TF_PYTHON to a python that has it)")
    return sys.executable


@pytest.mark.tf
def test_real_tensorflow_both_directions(tmp_path: Path) -> None:
    exe = _tf_python()
    rng = np.random.default_rng(3)
    want = {
        "bert/embeddings/word_embeddings": rng.standard_normal((800, 32)).astype(np.float32),
        "cls/predictions/output_bias": rng.standard_normal(800).astype(np.float32),
        "half": rng.standard_normal(5).astype(np.float16),
        "global_step": np.array(9, dtype=np.int64),
        "ints": np.arange(6, dtype=np.int32),
    }
    np.savez(tmp_path / "want.npz", **{k.replace("/", "|"): v for k, v in want.items()})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # TensorFlow writes, we read (block checksums and tensor crc32c verified).
    subprocess.run([exe, "-c", _TF_SAVE, str(tmp_path)], check=True, env=env)
    got = tfc.load_checkpoint(tmp_path / "tf")
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
    # We write (plain and snappy index), TensorFlow reads.
    for snappy in (False, True):
        prefix = tfc.write_checkpoint(tmp_path / f"ours{snappy}" / "m", want, snappy_index=snappy)
        r = subprocess.run(
            [exe, "-c", _TF_READ, str(prefix), str(tmp_path / "want.npz")],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.stdout.strip() == f"ok {len(want)}"
