"""``albertzh make-shards`` on the command line: flags, summary, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from albertzh.config import StageConfig
from albertzh.data import dataset as ds
from tests.cli.conftest import assert_help_lists, one_error_line, root, runner

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("sentences", pa.list_(pa.string())),
        ("word_lens", pa.list_(pa.list_(pa.int32()))),
    ]
)


class _Cfg(StageConfig):
    pass


def _setup(tmp: Path) -> tuple[Path, Path]:
    vocab = tmp / "vocab"
    vocab.mkdir()
    chars = "我们今天去公园看书天气很好他喜欢玩游戏北京上海中国人。，"
    (vocab / "vocab.txt").write_text("\n".join(SPECIALS + list(chars)) + "\n", encoding="utf-8")
    docs = [
        [
            ["我们", "今天", "去", "公园", "。"],
            ["天气", "很好", "。"],
            ["他", "喜欢", "看书", "。"],
        ],
        [["北京", "上海", "，", "中国人", "。"], ["他", "喜欢", "玩", "游戏", "。"]],
    ] * 20
    words = ds.prepare_output(tmp / "words")
    for i in range(2):
        chunk = docs[i::2]
        rows = {
            "doc_id": [f"d{i}-{k}" for k in range(len(chunk))],
            "sentences": [["".join(s) for s in doc] for doc in chunk],
            "word_lens": [[[len(w) for w in s] for s in doc] for doc in chunk],
        }
        ds.write_part(words, i, pa.table(rows, schema=SCHEMA))
    ds.finish_output(words, "segment", _Cfg(), [])
    return words, vocab


def test_help_lists_flags() -> None:
    assert_help_lists(
        "make-shards",
        [
            "--vocab",
            "--max-seq-len",
            "--short-seq-prob",
            "--masking",
            "--dupe-factor",
            "--masked-lm-prob",
            "--max-predictions",
            "--ngram",
            "--no-whole-word",
            "--seed",
            "--workers",
            "--resume",
            "--shard-index",
        ],
    )


def test_static_run_json_summary(tmp_path: Path) -> None:
    words, vocab = _setup(tmp_path)
    out = tmp_path / "shards"
    args = ["make-shards", str(words), "--vocab", str(vocab), "-o", str(out), "--json"]
    args += ["--masking", "static", "--dupe-factor", "2", "--max-seq-len", "32"]
    args += ["--max-predictions", "5", "--ngram", "2", "--no-whole-word", "--seed", "3"]
    r = runner.invoke(root, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["stage"] == "make-shards" and summary["copies"] == 2
    assert summary["instances"] > 0 and summary["documents"] == 40
    m = json.loads((out / "manifest.json").read_text())
    assert m["masking_options"] == {
        "masked_lm_prob": 0.15,
        "max_predictions": 5,
        "ngram": 2,
        "whole_word": False,
        "mask_prob": 0.8,
        "random_prob": 0.1,
    }
    assert m["config"]["seed"] == 3 and m["max_seq_len"] == 32
    t = pq.read_table(out / "part-00000.parquet")
    assert max(len(x) for x in t.column("input_ids").to_pylist()) <= 32
    assert max(len(x) for x in t.column("masked_positions").to_pylist()) <= 5
    # Re-running into the same directory is refused; --overwrite replaces it.
    r = runner.invoke(root, args[:7])
    assert "not empty" in one_error_line(r)
    r = runner.invoke(root, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path) -> None:
    words, vocab = _setup(tmp_path)
    out = str(tmp_path / "o")
    line = one_error_line(
        runner.invoke(
            root, ["make-shards", str(tmp_path / "missing"), "--vocab", str(vocab), "-o", out]
        )
    )
    assert "missing" in line
    line = one_error_line(
        runner.invoke(root, ["make-shards", str(words), "--vocab", str(tmp_path / "nv"), "-o", out])
    )
    assert "nv" in line and "--vocab" in line
    (words / "manifest.json").unlink()
    line = one_error_line(
        runner.invoke(root, ["make-shards", str(words), "--vocab", str(vocab), "-o", out])
    )
    assert "words" in line and "manifest.json" in line
    line = one_error_line(
        runner.invoke(
            root,
            ["make-shards", str(words), "--vocab", str(vocab), "-o", out, "--max-seq-len", "3"],
        )
    )
    assert "--max-seq-len" in line
    line = one_error_line(
        runner.invoke(
            root,
            [
                "make-shards",
                str(words),
                "--vocab",
                str(vocab),
                "-o",
                out,
                "--max-predictions",
                "500",
            ],
        )
    )
    assert "--max-predictions" in line


def test_print_config_and_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "ms.yaml"
    cfg.write_text("input: words\nvocab: vocab\noutput: shards\nmasking: static\nngram: 1\n")
    r = runner.invoke(root, ["make-shards", "--config", str(cfg), "--ngram", "2", "--print-config"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["masking"] == "static" and got["ngram"] == 2 and got["max_seq_len"] == 128
