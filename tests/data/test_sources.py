"""Input discovery, work units and reading of every input format."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from albertzh.data.sources import InputFile, discover, plan_units, read_unit
from albertzh.errors import InputError

DOCS = [f"第{i}篇文档，内容是{'很长的' * (i % 7)}中文句子。" for i in range(60)]


def _read_all(units, **kw) -> list[str]:
    return [doc for u in units for doc in read_unit(u, **kw)]


def test_discover_dirs_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b" / "c.jsonl.gz").write_bytes(gzip.compress(b"{}"))
    (tmp_path / "b" / "a.parquet").write_bytes(b"")
    (tmp_path / ".hidden.txt").write_text("x")
    (tmp_path / "README.md").write_text("x")
    files = discover([tmp_path])
    names = [Path(f.path).relative_to(tmp_path).as_posix() for f in files]
    assert names == ["a.txt", "b/a.parquet", "b/c.jsonl.gz"]
    assert [(f.fmt, f.gz) for f in files] == [("txt", False), ("parquet", False), ("jsonl", True)]


def test_discover_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.txt: no such file"):
        discover([tmp_path / "missing.txt"])
    bad = tmp_path / "notes.docx"
    bad.write_text("x")
    with pytest.raises(InputError, match=r"notes\.docx: unknown input type '\.docx'"):
        discover([bad])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty: no input files"):
        discover([empty])
    with pytest.raises(InputError, match="stdin given more than once"):
        discover(["-", "-"])


@pytest.mark.parametrize("chunk", [1, 7, 50, 333, 10_000])
def test_line_units_cover_every_line_once(tmp_path: Path, chunk: int) -> None:
    p = tmp_path / "a.txt"
    p.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    units = plan_units(discover([p]), chunk)
    assert _read_all(units) == DOCS
    size = p.stat().st_size
    assert units[0].start == 0 and units[-1].end == size
    if chunk < size:
        assert len(units) > 1
    for u in units[1:]:  # every edge is a line start
        assert p.read_bytes()[u.start - 1 : u.start] == b"\n"


@pytest.mark.parametrize("chunk", [1, 40, 200, 10_000])
def test_blank_units_cover_every_document_once(tmp_path: Path, chunk: int) -> None:
    docs = ["\n".join(DOCS[i : i + 3]) for i in range(0, 60, 3)]
    p = tmp_path / "a.txt"
    # Extra blank lines (some with spaces) and no trailing newline are all fine.
    p.write_text("\n\n".join(docs[:5]) + "\n  \n\n" + "\n\n".join(docs[5:]), encoding="utf-8")
    units = plan_units(discover([p]), chunk, doc_sep="blank")
    assert _read_all(units, doc_sep="blank") == docs
    if chunk < 1000:
        assert len(units) > 1


def test_gzip_and_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl.gz"
    lines = [json.dumps({"meta": {"body": d}, "text": "x"}, ensure_ascii=False) for d in DOCS[:5]]
    p.write_bytes(gzip.compress(("\n".join(lines) + "\n\n").encode()))
    units = plan_units(discover([p]), 10)
    assert len(units) == 1  # gzip cannot be split
    assert _read_all(units, text_field="meta.body") == DOCS[:5]
    assert _read_all(units) == ["x"] * 5


def test_json_lines_errors_name_file_and_offset(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text('{"text": "好"}\n{"body": "坏"}\n', encoding="utf-8")
    units = plan_units(discover([p]), 1 << 20)
    first_len = len('{"text": "好"}\n'.encode())
    with pytest.raises(InputError, match=rf"a\.json: byte {first_len}: no field 'text'"):
        _read_all(units)
    p.write_text('{"text": "好"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(InputError, match="field 'text' is int"):
        _read_all(plan_units(discover([p]), 1 << 20))
    p.write_text('[{"text": "好"}]\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"a\.json: byte 0: expected one JSON object.*got list"):
        _read_all(plan_units(discover([p]), 1 << 20))
    p.write_text('{"text": "好"}\n{"text": "坏\n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"a\.json: byte {first_len}: invalid JSON"):
        _read_all(plan_units(discover([p]), 1 << 20))
    p.write_text('{"text": null}\n', encoding="utf-8")
    assert _read_all(plan_units(discover([p]), 1 << 20)) == [""]


def test_parquet_row_groups_are_units(tmp_path: Path) -> None:
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": list(range(60)), "body": DOCS}), p, row_group_size=25)
    units = plan_units(discover([p]), 1, text_column="body")
    assert [u.row_group for u in units] == [0, 1, 2]
    assert _read_all(units, text_column="body") == DOCS
    with pytest.raises(InputError, match=r"a\.parquet: no column 'text' \(columns: id, body"):
        plan_units(discover([p]), 1)
    with pytest.raises(InputError, match="column 'id' has type int64"):
        plan_units(discover([p]), 1, text_column="id")


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = ("\n".join(DOCS[:4]) + "\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    units = plan_units(discover(["-"]), 10)
    assert len(units) == 1 and units[0].source == "-"
    counters: dict[str, int] = {}
    assert list(read_unit(units[0], counters=counters)) == DOCS[:4]
    assert counters["bytes_in"] == len(data)


def _bad_utf8(tmp_path: Path) -> tuple[Path, int]:
    good = "第一行很好。\n".encode()
    p = tmp_path / "bad.txt"
    p.write_bytes(good + b"\xff\xfe\xe4\xbd\n" + "第三行。\n".encode())
    return p, len(good)


def test_encoding_error_strict_names_file_and_byte(tmp_path: Path) -> None:
    p, offset = _bad_utf8(tmp_path)
    with pytest.raises(InputError, match=rf"bad\.txt: byte {offset}: not valid UTF-8"):
        _read_all(plan_units(discover([p]), 1 << 20))


def test_encoding_error_replace_and_skip_line(tmp_path: Path) -> None:
    p, _ = _bad_utf8(tmp_path)
    units = plan_units(discover([p]), 1 << 20)
    counters: dict[str, int] = {}
    docs = _read_all(units, encoding_errors="replace", counters=counters)
    assert len(docs) == 3 and "\ufffd" in docs[1] and counters["replaced_lines"] == 1
    counters = {}
    docs = _read_all(units, encoding_errors="skip-line", counters=counters)
    assert docs == ["第一行很好。", "第三行。"] and counters["skipped_lines"] == 1


def test_gzip_encoding_error_names_decompressed_offset(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt.gz"
    p.write_bytes(gzip.compress(b"ok\n\xff\n"))
    with pytest.raises(InputError, match=r"bad\.txt\.gz: decompressed byte 3: not valid UTF-8"):
        _read_all(plan_units([InputFile(str(p), "txt", True)], 1))


def test_pyarrow_filesystem_uris(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("\n".join(DOCS[:30]) + "\n", encoding="utf-8")
    (d / "b.txt.gz").write_bytes(gzip.compress("\n".join(DOCS[30:40]).encode()))
    pq.write_table(pa.table({"text": DOCS[40:]}), d / "c.parquet", row_group_size=7)
    local = plan_units(discover([d]), 200)
    uri = plan_units(discover([d.as_uri()]), 200)
    assert [u.source for u in uri][0] == (d / "a.txt").as_uri()
    assert [(u.start, u.end, u.row_group) for u in uri] == [
        (u.start, u.end, u.row_group) for u in local
    ]
    assert _read_all(uri) == _read_all(local) == DOCS
    assert len(discover([(d / "a.txt").as_uri()])) == 1
    with pytest.raises(InputError, match="no such file or directory"):
        discover([(d / "missing.txt").as_uri()])
    with pytest.raises(InputError, match="nosuchscheme://x/y.txt: cannot open this URL"):
        discover(["nosuchscheme://x/y.txt"])
