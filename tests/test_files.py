"""albertzh.files: atomic writes and sha256 digests of local files."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from albertzh import files


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_write_bytes_creates_and_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "a.bin"
    files.atomic_write_bytes(dest, b"one")
    assert dest.read_bytes() == b"one"
    files.atomic_write_bytes(str(dest), b"\x00two")  # str paths too
    assert dest.read_bytes() == b"\x00two"
    assert _names(tmp_path) == ["a.bin"]


def test_atomic_write_text_keeps_text_exactly(tmp_path: Path) -> None:
    dest = tmp_path / "t.txt"
    text = "中文 ALBERT\r\nline two\n"
    files.atomic_write_text(dest, text)
    assert dest.read_bytes() == text.encode("utf-8")
    files.atomic_write_text(dest, "gbk 中文", encoding="gbk")
    assert dest.read_bytes() == "gbk 中文".encode("gbk")


def test_atomic_write_json_format(tmp_path: Path) -> None:
    dest = tmp_path / "x.json"
    obj = {"b": [1, 2], "a": "汉字"}
    files.atomic_write_json(dest, obj)
    raw = dest.read_text(encoding="utf-8")
    assert raw == json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    assert "汉字" in raw and raw.endswith("}\n")
    assert json.loads(raw) == obj
    assert files.json_text(obj) == raw


def test_atomic_writer_text_and_binary(tmp_path: Path) -> None:
    with files.atomic_writer(tmp_path / "t.jsonl") as f:
        f.write("一\n")
        f.write("二\n")
        # Not visible under the final name until the block ends.
        assert not (tmp_path / "t.jsonl").exists()
        (tmp_name,) = _names(tmp_path)
        assert tmp_name.startswith(".t.jsonl.tmp-")
    assert (tmp_path / "t.jsonl").read_text(encoding="utf-8") == "一\n二\n"
    with files.atomic_writer(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x01\x02")
    assert (tmp_path / "b.bin").read_bytes() == b"\x01\x02"
    assert _names(tmp_path) == ["b.bin", "t.jsonl"]


def test_atomic_writer_error_leaves_no_temp_and_keeps_destination(tmp_path: Path) -> None:
    dest = tmp_path / "keep.txt"
    dest.write_text("old", encoding="utf-8")
    before = dest.stat()
    with pytest.raises(RuntimeError, match="boom"), files.atomic_writer(dest) as f:
        f.write("new, half written")
        raise RuntimeError("boom")
    assert dest.read_text(encoding="utf-8") == "old"
    assert dest.stat().st_ino == before.st_ino  # the same file, not a replacement
    assert _names(tmp_path) == ["keep.txt"]


def test_atomic_writer_error_without_destination(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), files.atomic_writer(tmp_path / "new.bin", "wb") as f:
        f.write(b"x")
        raise KeyboardInterrupt  # BaseException too
    assert _names(tmp_path) == []


def test_atomic_writer_does_not_create_parents_or_accept_other_modes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), files.atomic_writer(tmp_path / "no" / "x.txt"):
        pass
    for mode in ("a", "r", "w+", "ab"):
        with pytest.raises(ValueError, match="mode"), files.atomic_writer(tmp_path / "x", mode):
            pass
    assert _names(tmp_path) == []


def test_atomic_writes_fsync_before_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    files.atomic_write_bytes(tmp_path / "f", b"data")
    assert events == ["fsync", "replace"]


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        files.atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 7)
    want = hashlib.sha256(data).hexdigest()
    assert files.sha256_bytes(data) == want
    (tmp_path / "d").write_bytes(data)
    assert files.sha256_file(tmp_path / "d") == want
    assert files.sha256_file(str(tmp_path / "d"), chunk=1000) == want
    assert files.sha256_bytes(b"") == hashlib.sha256(b"").hexdigest()


def test_old_import_paths_still_work() -> None:
    from albertzh.data import dataset as ds
    from albertzh.tokenizer import sha256_bytes

    assert sha256_bytes is files.sha256_bytes
    assert callable(ds.atomic_write_bytes) and callable(ds.atomic_write_json)
    assert callable(ds.sha256_file)


def test_dataset_helpers_on_local_paths(tmp_path: Path) -> None:
    from albertzh.data import dataset as ds

    ds.atomic_write_json(tmp_path / "m.json", {"k": "值"})
    assert (tmp_path / "m.json").read_bytes() == files.json_text({"k": "值"}).encode("utf-8")
    assert ds.sha256_file(tmp_path / "m.json") == files.sha256_file(tmp_path / "m.json")
    assert _names(tmp_path) == ["m.json"]
