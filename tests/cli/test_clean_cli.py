"""``albertzh clean`` through the command line: real corpus, stdin, formats, bad inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from albertzh.data import dataset as ds
from tests.cli.conftest import assert_help_lists, one_error_line, root, runner

DOCS = [
    "今天天气很好，我们一起去公园散步。公园里有很多人在锻炼身体！",
    "这家餐厅的菜很好吃，服务也很周到。下次还会再来。",
    "北京是中国的首都，有着悠久的历史和灿烂的文化。",
]


def _clean(*args: str, input: bytes | None = None):  # noqa: A002
    return runner.invoke(root, ["clean", *args], input=input)


def test_help_lists_the_flags() -> None:
    assert_help_lists(
        "clean",
        [
            "--doc-sep",
            "--text-field",
            "--text-column",
            "--encoding-errors",
            "--urls",
            "--t2s",
            "--min-chinese-ratio",
            "--near-dup",
            "--chunk-mb",
            "--workers",
            "--resume",
        ],
    )


def test_clue_sample_through_cli(clue_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs"
    r = _clean(str(clue_corpus), "-o", str(out), "--json", "--chunk-mb", "0.5", "--workers", "2")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["rows_in"] == 2500 and s["bytes_in"] == clue_corpus.stat().st_size
    assert s["units"] == 4
    # Mostly clean web text: a few percent dropped, mainly short reviews.
    assert 2200 <= s["rows_out"] <= 2490
    dropped = s["dropped"]
    assert dropped["too_short"] == max(dropped.values())
    assert sum(dropped.values()) == s["rows_in"] - s["rows_out"]
    assert s["rules"]["urls_masked"] > 0 and s["sentences"] > 10_000
    m = ds.read_manifest(out, "clean")
    assert m["rows"] == s["rows_out"] and m["stats"]["dropped"] == dropped
    rows = pq.read_table(out / "part-00000.parquet").slice(0, 50).to_pylist()
    assert all(r["text"] and "\n\n" not in r["text"] for r in rows)
    assert any("，" in r["text"] for r in rows)  # Chinese punctuation survives NFKC


def test_stdin_input(tmp_path: Path) -> None:
    data = ("\n".join(DOCS + [DOCS[0]]) + "\n").encode()
    r = _clean("-", "-o", str(tmp_path / "docs"), "--json", input=data)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["rows_in"] == 4 and s["rows_out"] == 3 and s["dropped"] == {"duplicate": 1}
    rows = pq.read_table(tmp_path / "docs" / "part-00000.parquet").to_pylist()
    assert rows[0]["source"] == "-"


def test_dir_of_gz_and_blank_docs(tmp_path: Path) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "b.txt.gz").write_bytes(gzip.compress("\n\n".join(DOCS).encode()))
    (d / "a.txt").write_text(DOCS[0] + "\n" + DOCS[1] + "\n", encoding="utf-8")
    r = _clean(str(d), "-o", str(tmp_path / "docs"), "--doc-sep", "blank", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    # a.txt is one two-line document; b.txt.gz holds three documents.
    assert s["input_files"] == 2 and s["rows_in"] == 4 and s["rows_out"] == 4


def test_encoding_error_default_and_alternatives(tmp_path: Path) -> None:
    src = tmp_path / "bad.txt"
    first = (DOCS[0] + "\n").encode()
    src.write_bytes(first + b"\xc3\x28 broken\n" + (DOCS[1] + "\n").encode())
    r = _clean(str(src), "-o", str(tmp_path / "o1"))
    one_error_line(r, str(src), f"byte {len(first)}", "UTF-8")
    r = _clean(str(src), "-o", str(tmp_path / "o2"), "--encoding-errors", "skip-line", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped_lines"] == 1
    r = _clean(str(src), "-o", str(tmp_path / "o3"), "--encoding-errors", "replace", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["replaced_lines"] == 1


def test_bad_inputs_exit_2_naming_the_file(tmp_path: Path) -> None:
    out = str(tmp_path / "docs")
    missing = tmp_path / "nope.txt"
    one_error_line(_clean(str(missing), "-o", out), str(missing), "no such file")

    odd = tmp_path / "data.csv"
    odd.write_text("a,b\n")
    one_error_line(_clean(str(odd), "-o", out), str(odd), "unknown input type")

    js = tmp_path / "a.jsonl"
    js.write_text(json.dumps({"body": DOCS[0]}, ensure_ascii=False) + "\n", encoding="utf-8")
    one_error_line(_clean(str(js), "-o", out), str(js), "no field 'text'")
    r = _clean(str(js), "-o", out, "--text-field", "body", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows_out"] == 1

    pqf = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": DOCS}), pqf)
    one_error_line(_clean(str(pqf), "-o", str(tmp_path / "p")), str(pqf), "no column 'text'")
    r = _clean(str(pqf), "-o", str(tmp_path / "p"), "--text-column", "body", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows_out"] == 3


def test_bad_flag_values_name_the_flag(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text(DOCS[0] + "\n", encoding="utf-8")
    r = _clean(str(src), "-o", str(tmp_path / "d"), "--min-chars", "50", "--max-chars", "10")
    one_error_line(r, "--max-chars")
    r = _clean(str(src), "-o", str(tmp_path / "d"), "--min-chinese-ratio", "1.5")
    one_error_line(r, "--min-chinese-ratio")


@pytest.mark.parametrize("flag", ["--no-dedup", "--no-split-sentences", "--urls=drop"])
def test_flags_reach_the_stage(tmp_path: Path, flag: str) -> None:
    src = tmp_path / "a.txt"
    src.write_text("\n".join([DOCS[0], DOCS[0], DOCS[1] + "见http://a.cn"]) + "\n", "utf-8")
    r = _clean(str(src), "-o", str(tmp_path / "d"), flag, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    expected = {
        "--no-dedup": (3, 3 + 2 + 2),
        "--no-split-sentences": (2, 2),
        "--urls=drop": (1, 2),
    }[flag]
    assert (s["rows_out"], s["sentences"]) == expected


def test_stdin_with_files_and_workers(tmp_path: Path) -> None:
    # Pool workers get /dev/null as stdin, so the stdin unit must be read in the main process.
    a = tmp_path / "a.txt"
    a.write_text(DOCS[0] + "\n", encoding="utf-8")
    b = tmp_path / "b.txt"
    b.write_text(DOCS[2] + "\n", encoding="utf-8")
    data = (DOCS[1] + "\n" + DOCS[0] + "\n").encode()
    out = tmp_path / "docs"
    r = _clean(str(a), "-", str(b), "-o", str(out), "--workers", "2", "--json", input=data)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["rows_in"], s["rows_out"], s["dropped"]) == (4, 3, {"duplicate": 1})
    sources = [pq.read_table(p).column("source").to_pylist() for p in ds.part_paths(out)]
    assert sources == [[str(a)], ["-"], [str(b)]]


def test_config_file_and_flag_override(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    cfg = tmp_path / "clean.yaml"
    cfg.write_text(f"inputs: [{src}]\nmin-chars: 100\nurls: drop\ndoc_sep: blank\n")
    r = _clean("--config", str(cfg), "-o", str(tmp_path / "d"), "--print-config")
    assert r.exit_code == 0, r.output
    resolved = json.loads(r.stdout)
    assert (resolved["min_chars"], resolved["urls"], resolved["doc_sep"]) == (100, "drop", "blank")
    r = _clean("--config", str(cfg), "-o", str(tmp_path / "d"), "--min-chars", "10", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["rows_in"] == 1 and s["rows_out"] == 1  # one blank-separated doc, long enough
