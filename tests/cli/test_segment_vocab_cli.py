"""`albertzh segment` and `albertzh build-vocab` through the CLI: runs, flags, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from albertzh.data import dataset as ds
from albertzh.pipeline.segment import iter_words, words_of
from albertzh.tokenizer import load_tokenizer
from tests.cli.conftest import assert_help_lists, one_error_line, root, runner


def _invoke(*args: str):
    return runner.invoke(root, [str(a) for a in args], env={"COLUMNS": "200"})


def _docs(d: Path, texts: list[str]) -> Path:
    out = ds.prepare_output(d)
    ds.write_part(
        out,
        0,
        pa.table(
            {
                "doc_id": [f"d{i}" for i in range(len(texts))],
                "text": texts,
                "source": ["t"] * len(texts),
            }
        ),
    )
    ds.finish_output(out, "clean", {}, ["x.txt"])
    return out


TEXTS = [
    "我爱北京天安门。\n天安门上太阳升。",
    "陶哲轩在UCLA读博是什么感受？\n很好奇。",
    "Hello world, 这是一个English和中文混合的句子。",
]


def test_help_lists_the_flags() -> None:
    assert_help_lists(
        "segment", ("--engine", "--user-dict", "--hmm", "--no-hmm", "--workers", "--resume", "-o")
    )
    assert_help_lists(
        "build-vocab",
        (
            "--kind",
            "--from-vocab",
            "--min-freq",
            "--max-size",
            "--wordpiece-size",
            "--vocab-size",
            "--model-type",
            "--character-coverage",
            "--user-symbols",
            "--word-boundaries",
        ),
    )


def test_segment_then_build_vocab(tmp_path: Path) -> None:
    docs = _docs(tmp_path / "docs", TEXTS)
    ud = tmp_path / "user.dict"
    ud.write_text("天安门上 1000000\n", encoding="utf-8")
    r = _invoke(
        "segment", docs, "-o", tmp_path / "words", "--user-dict", ud, "--workers", "2", "--json"
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["stage"] == "segment" and s["docs"] == 3 and s["sentences"] == 5
    rows = list(iter_words(tmp_path / "words"))
    assert words_of(rows[0][1][1], rows[0][2][1])[0] == "天安门上"

    r = _invoke("build-vocab", tmp_path / "words", "-o", tmp_path / "vocab", "--json")
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)
    assert v["kind"] == "char" and v["special_ids"]["mask"] == 103
    t = load_tokenizer(tmp_path / "vocab")
    assert t.unk_id not in t.encode("我爱北京 hello").ids

    r = _invoke(
        "build-vocab",
        tmp_path / "words",
        "-o",
        tmp_path / "sp",
        "--kind",
        "sentencepiece",
        "--vocab-size",
        "80",
        "--character-coverage",
        "1.0",
        "--model-type",
        "bpe",
        "--user-symbols",
        "[URL]",
        "--user-symbols",
        "[EMAIL]",
        "--json",
    )
    assert r.exit_code == 0, r.output
    t = load_tokenizer(tmp_path / "sp")
    assert t.kind == "sentencepiece" and t.vocab_size == 80
    assert t.convert_ids_to_tokens([5, 6]) == ["[URL]", "[EMAIL]"]
    info = json.loads((tmp_path / "sp" / "vocab.json").read_text())
    assert info["config"]["model_type"] == "bpe" and info["config"]["vocab_size"] == 80


def test_build_vocab_from_config_file_and_from_vocab(tmp_path: Path, bert_vocab: Path) -> None:
    cfg = tmp_path / "vocab.yaml"
    cfg.write_text(f"from-vocab: {bert_vocab}\noutput: {tmp_path / 'v'}\n")
    r = _invoke("build-vocab", "--config", cfg, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["size"] == 21128
    r = _invoke("build-vocab", "--config", cfg, "--print-config")
    assert json.loads(r.stdout)["from_vocab"] == str(bert_vocab)


def test_segment_bad_inputs_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    r = _invoke("segment", tmp_path / "half", "-o", tmp_path / "o")
    one_error_line(r, "half", "no manifest.json")
    words_like = _docs(tmp_path / "w", TEXTS)
    (words_like / "manifest.json").write_text(
        (words_like / "manifest.json").read_text().replace('"clean"', '"segment"')
    )
    r = _invoke("segment", words_like, "-o", tmp_path / "o")
    one_error_line(r, "is a 'segment' dataset; expected clean")
    docs = _docs(tmp_path / "docs", TEXTS)
    r = _invoke("segment", docs, "-o", tmp_path / "o", "--user-dict", tmp_path / "none.dict")
    one_error_line(r, "none.dict: user dict not found")
    bad = tmp_path / "bad.dict"
    bad.write_text("好词 3 n\n坏 词 3 n x\n", encoding="utf-8")
    r = _invoke("segment", docs, "-o", tmp_path / "o", "--user-dict", bad)
    one_error_line(r, "bad.dict:2: malformed user-dict line")
    r = _invoke("segment", docs, "-o", tmp_path / "o", "--workers", "0")
    one_error_line(r, "--workers")
    assert not (tmp_path / "o").exists()


def test_build_vocab_bad_inputs_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "vocab.txt"
    bad.write_text("[PAD]\n[UNK]\n中\n", encoding="utf-8")
    r = _invoke("build-vocab", "-o", tmp_path / "v", "--from-vocab", bad)
    one_error_line(r, f"{bad}: missing special token(s) [CLS], [SEP], [MASK]")
    r = _invoke("build-vocab", "-o", tmp_path / "v")
    one_error_line(r, "INPUT")
    docs = _docs(tmp_path / "docs", TEXTS)
    r = _invoke("build-vocab", docs, "-o", tmp_path / "v")
    one_error_line(r, "is a 'clean' dataset; expected segment")
    r = _invoke("build-vocab", docs, "-o", tmp_path / "v", "--min-freq", "0")
    one_error_line(r, "--min-freq")
    assert not (tmp_path / "v").exists()


@pytest.mark.slow
def test_cli_chain_on_news_sample(news_corpus: Path, tmp_path: Path) -> None:
    r = _invoke("clean", news_corpus, "-o", tmp_path / "docs", "--json")
    assert r.exit_code == 0, r.output
    r = _invoke("segment", tmp_path / "docs", "-o", tmp_path / "words", "--json")
    assert r.exit_code == 0, r.output
    r = _invoke("build-vocab", tmp_path / "words", "-o", tmp_path / "vocab", "--json")
    assert r.exit_code == 0, r.output
    cov = json.loads((tmp_path / "vocab" / "vocab.json").read_text())["coverage"]
    assert cov["sentences"] > 100 and cov["unk_char_pct"] < 0.5
