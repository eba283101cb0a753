"""build-vocab: BERT special ids, min-freq, max-size, WordPiece, from-vocab, SentencePiece."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest

from albertzh.data import dataset as ds
from albertzh.errors import ConfigError, DatasetError, InputError
from albertzh.pipeline.segment import WORDS_SCHEMA, Segmenter
from albertzh.pipeline.vocab import BERT_HEAD, VocabConfig, run
from albertzh.tokenizer import load_tokenizer


def _words_dataset(root: Path, docs: list[str]) -> Path:
    seg = Segmenter("rjieba")
    rows = [seg.split_doc(d) for d in docs]
    table = pa.table(
        {
            "doc_id": [str(i) for i in range(len(rows))],
            "sentences": [[s for s, _ in r] for r in rows],
            "word_lens": [[w for _, w in r] for r in rows],
        },
        schema=WORDS_SCHEMA,
    )
    out = ds.prepare_output(root)
    ds.write_part(out, 0, table)
    ds.finish_output(out, "segment", {}, [])
    return out


@pytest.fixture(scope="module")
def news_words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import shared_path

    lines = shared_path("corpus/news_zh_sample.txt").read_text(encoding="utf-8").splitlines()
    docs = ["\n".join(lines[i : i + 5]) for i in range(0, len(lines), 5)]
    return _words_dataset(tmp_path_factory.mktemp("news") / "words", docs)


TINY = [
    "常常常见的字。\n稀有字出现一次：罕。",
    "Hello world! Running tests with WordPiece, hello again.",
    "常用的字常用。tokenization tokenizer token",
]


@pytest.fixture
def tiny_words(tmp_path: Path) -> Path:
    return _words_dataset(tmp_path / "words", TINY)


def _vocab(d: Path) -> list[str]:
    return (d / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]


# --------------------------------------------------------------------------- char


def test_char_vocab_layout_and_manifest(tiny_words: Path, tmp_path: Path) -> None:
    s = run(VocabConfig(input=tiny_words, output=tmp_path / "v")).figures
    toks = _vocab(tmp_path / "v")
    assert toks[:104] == BERT_HEAD
    assert (toks[0], toks[1], toks[99], toks[100], toks[103]) == (
        "[PAD]",
        "[unused1]",
        "[unused99]",
        "[UNK]",
        "[MASK]",
    )
    assert len(toks) == len(set(toks)) == s["size"]
    assert {"常", "罕", "。", "!", ",", "："} <= set(toks)
    assert "hello" in toks  # lowercased
    info = json.loads((tmp_path / "v" / "vocab.json").read_text())
    assert info["stage"] == "build-vocab" and info["kind"] == "char" and info["size"] == len(toks)
    assert info["special_ids"] == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    assert info["hash"] == hashlib.sha256((tmp_path / "v" / "vocab.txt").read_bytes()).hexdigest()
    assert info["config"]["min_freq"] == 1 and info["coverage"]["sentences"] == 4
    assert info["coverage"]["unk_char_pct"] == 0.0
    t = load_tokenizer(tmp_path / "v")
    assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id) == (0, 100, 101, 102, 103)
    assert t.hash == info["hash"]
    enc = t.encode("Hello, 常见的罕字 tokenization")
    assert t.unk_id not in enc.ids
    # decode puts spaces only between two Latin/digit tokens
    assert t.decode(enc.ids) == "hello,常见的罕字tokenization"


def test_min_freq_drops_rare_characters(tiny_words: Path, tmp_path: Path) -> None:
    run(VocabConfig(input=tiny_words, output=tmp_path / "v", min_freq=2))
    toks = set(_vocab(tmp_path / "v"))
    assert "常" in toks and "字" in toks  # seen 7 and 4 times
    assert "罕" not in toks and "稀" not in toks  # seen once
    info = json.loads((tmp_path / "v" / "vocab.json").read_text())
    assert info["build"]["cjk_below_min_freq"] > 0 and info["coverage"]["unk_char_pct"] > 0
    t = load_tokenizer(tmp_path / "v")
    assert t.encode("罕").ids == [t.unk_id]


def test_max_size_keeps_the_most_frequent(news_words: Path, tmp_path: Path) -> None:
    run(VocabConfig(input=news_words, output=tmp_path / "full", wordpiece_size=50))
    run(VocabConfig(input=news_words, output=tmp_path / "cap", wordpiece_size=50, max_size=600))
    full, cap = _vocab(tmp_path / "full"), _vocab(tmp_path / "cap")
    assert len(cap) == 600 < len(full)
    assert set(cap) < set(full) and cap[:104] == BERT_HEAD
    assert {"的", "，", "。", "中", "国"} <= set(cap)
    info = json.loads((tmp_path / "cap" / "vocab.json").read_text())
    assert info["build"]["dropped_by_max_size"] == len(full) - 600
    cov_full = json.loads((tmp_path / "full" / "vocab.json").read_text())["coverage"]
    assert info["coverage"]["unk_char_pct"] > cov_full["unk_char_pct"]


def test_wordpiece_pieces_for_latin_runs(tiny_words: Path, tmp_path: Path) -> None:
    run(VocabConfig(input=tiny_words, output=tmp_path / "wp", wordpiece_size=60))
    toks = _vocab(tmp_path / "wp")
    assert any(t.startswith("##") for t in toks)
    t = load_tokenizer(tmp_path / "wp")
    assert t.unk_id not in t.encode("tokens tokenize hello").ids
    run(VocabConfig(input=tiny_words, output=tmp_path / "none", wordpiece_size=0))
    t0 = load_tokenizer(tmp_path / "none")
    assert not any(x.isascii() and x.isalnum() for x in _vocab(tmp_path / "none"))
    assert t0.encode("hello").ids == [t0.unk_id]


def test_char_vocab_is_deterministic_and_loads_in_transformers(
    news_words: Path, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    run(VocabConfig(input=news_words, output=tmp_path / "a"))
    run(VocabConfig(input=news_words, output=tmp_path / "b"))
    assert (tmp_path / "a" / "vocab.txt").read_bytes() == (
        tmp_path / "b" / "vocab.txt"
    ).read_bytes()
    hf = transformers.BertTokenizer.from_pretrained(str(tmp_path / "a"))
    t = load_tokenizer(tmp_path / "a")
    text = "新华社北京电 GPT-4o模型发布，Hello World！"
    assert hf(text)["input_ids"] == t.encode_for_model(text)[0]


def test_from_vocab_adopts_file(bert_vocab: Path, news_words: Path, tmp_path: Path) -> None:
    s = run(VocabConfig(input=news_words, output=tmp_path / "v", from_vocab=bert_vocab)).figures
    assert s["size"] == 21128
    info = json.loads((tmp_path / "v" / "vocab.json").read_text())
    assert info["hash"] == hashlib.sha256(bert_vocab.read_bytes()).hexdigest()
    assert info["special_ids"] == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    assert info["coverage"]["tokens"] > 0
    # Without a corpus: no coverage, same vocab.
    run(VocabConfig(output=tmp_path / "v2", from_vocab=bert_vocab))
    assert (tmp_path / "v2" / "vocab.txt").read_bytes() == bert_vocab.read_bytes()


def test_from_vocab_without_special_tokens_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "my_vocab.txt"
    bad.write_text("[PAD]\n[UNK]\n[CLS]\n中\n", encoding="utf-8")
    with pytest.raises(
        InputError, match=r"my_vocab.txt: missing special token\(s\) \[SEP\], \[MASK\]"
    ):
        run(VocabConfig(output=tmp_path / "v", from_vocab=bad))
    with pytest.raises(InputError, match="nope.txt: --from-vocab file not found"):
        run(VocabConfig(output=tmp_path / "v", from_vocab=tmp_path / "nope.txt"))
    assert not (tmp_path / "v").exists()
    assert not list(tmp_path.glob(".v.tmp-*"))


# --------------------------------------------------------------------------- sentencepiece


def test_sentencepiece_kind(news_words: Path, tmp_path: Path) -> None:
    s = run(
        VocabConfig(
            input=news_words,
            output=tmp_path / "sp",
            kind="sentencepiece",
            vocab_size=1400,
            user_symbols=["[URL]", "<num>"],
        )
    ).figures
    assert s["kind"] == "sentencepiece" and s["size"] == 1400
    d = tmp_path / "sp"
    assert sorted(p.name for p in d.iterdir()) == [
        "spiece.model",
        "tokenizer_config.json",
        "vocab.json",
    ]
    info = json.loads((d / "vocab.json").read_text())
    assert info["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert info["hash"] == hashlib.sha256((d / "spiece.model").read_bytes()).hexdigest()
    t = load_tokenizer(d)
    assert t.convert_ids_to_tokens([0, 1, 2, 3, 4, 5, 6]) == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[URL]",
        "<num>",
    ]
    text = "新华社北京电，见[URL]和<num>。"
    ids = t.encode(text).ids
    assert 5 in ids and 6 in ids
    assert t.decode(ids) == "新华社北京电,见[URL]和<num>。"  # spm's NFKC: "，" -> ","


def test_sentencepiece_loads_in_albert_tokenizer(news_words: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("google.protobuf")
    run(
        VocabConfig(input=news_words, output=tmp_path / "sp", kind="sentencepiece", vocab_size=1400)
    )
    hf = transformers.AlbertTokenizer.from_pretrained(str(tmp_path / "sp"))
    t = load_tokenizer(tmp_path / "sp")
    for text in ["新华社北京电 GPT-4o模型发布，Hello World！", "[MASK]是什么"]:
        assert hf(text)["input_ids"] == t.encode_for_model(text)[0]


def test_sentencepiece_word_boundaries(news_words: Path, tmp_path: Path) -> None:
    """With --word-boundaries every learned piece lies inside some jieba word."""
    import sentencepiece as spm

    from albertzh.pipeline.segment import words_of
    from albertzh.pipeline.vocab import iter_sentences

    words = {
        w for s, lens in iter_sentences(ds.part_paths(news_words), True) for w in words_of(s, lens)
    }

    def outside(d: Path) -> list[str]:
        sp = spm.SentencePieceProcessor(model_file=str(d / "spiece.model"))
        pieces = [sp.id_to_piece(i).lstrip("\u2581") for i in range(5, sp.get_piece_size())]
        return [p for p in pieces if len(p) > 1 and not any(p in w for w in words)]

    for wb in (True, False):
        run(
            VocabConfig(
                input=news_words,
                output=tmp_path / str(wb),
                kind="sentencepiece",
                vocab_size=1400,
                word_boundaries=wb,
            )
        )
    assert outside(tmp_path / "True") == []
    assert len(outside(tmp_path / "False")) >= 1


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_is_deterministic(news_words: Path, tmp_path: Path, model_type: str) -> None:
    for name in ("a", "b"):
        run(
            VocabConfig(
                input=news_words,
                output=tmp_path / name,
                kind="sentencepiece",
                vocab_size=1400,
                model_type=model_type,
                threads=2,
                coverage_sentences=0,
            )
        )
    a = (tmp_path / "a" / "spiece.model").read_bytes()
    assert a == (tmp_path / "b" / "spiece.model").read_bytes()


def test_sentencepiece_vocab_too_large_names_flag(news_words: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--vocab-size 50000: .*Vocabulary size too high"):
        run(
            VocabConfig(
                input=news_words, output=tmp_path / "sp", kind="sentencepiece", vocab_size=50000
            )
        )
    assert not (tmp_path / "sp").exists()


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_and_existing_output(tiny_words: Path, tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(DatasetError, match="half: no manifest.json"):
        run(VocabConfig(input=tmp_path / "half", output=tmp_path / "o"))
    docs = ds.prepare_output(tmp_path / "docs")
    ds.write_part(docs, 0, pa.table({"doc_id": ["a"], "text": ["b"]}))
    ds.finish_output(docs, "clean", {}, [])
    with pytest.raises(DatasetError, match="docs: is a 'clean' dataset; expected segment"):
        run(VocabConfig(input=docs, output=tmp_path / "o"))
    with pytest.raises(ValueError, match="INPUT .* is required unless --from-vocab"):
        VocabConfig(output=tmp_path / "o")
    with pytest.raises(ValueError, match="--user-symbols applies to --kind sentencepiece"):
        VocabConfig(input=tiny_words, output=tmp_path / "o", user_symbols=["x"])
    run(VocabConfig(input=tiny_words, output=tmp_path / "o"))
    with pytest.raises(DatasetError, match="o: output exists and is not empty"):
        run(VocabConfig(input=tiny_words, output=tmp_path / "o"))
    run(VocabConfig(input=tiny_words, output=tmp_path / "o", overwrite=True, min_freq=3))
    assert "罕" not in _vocab(tmp_path / "o")


# --------------------------------------------------------------------------- fast counting


def _count_units_reference(sentences: list[str], do_lower_case: bool) -> dict:
    """The plain way: normalise the whole text with BERT's normaliser, count every character,
    blank out CJK, pre-tokenize the rest (what count_units must equal)."""
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    from albertzh.pipeline.vocab import _CJK_RE, _is_punct
    from albertzh.tokenizer import is_cjk

    norm = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case
    )
    text = norm.normalize_str("\n".join(sentences))
    chars = Counter(text)
    rest = _CJK_RE.sub(" ", text)
    words = Counter(
        t
        for t, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(rest)
        if not (len(t) == 1 and _is_punct(t))
    )
    return {
        "cjk": Counter({c: n for c, n in chars.items() if is_cjk(c)}),
        "punct": Counter({c: n for c, n in chars.items() if _is_punct(c)}),
        "words": words,
    }


@pytest.mark.parametrize("lower", [True, False])
def test_count_units_equals_whole_text_normalisation(lower: bool) -> None:
    import random

    from albertzh.pipeline.vocab import count_units
    from tests.conftest import shared_path

    lines = shared_path("corpus/clue_corpus_small_sample.txt").read_text("utf-8").splitlines()
    # Odd characters: removed ones (controls, zero-width, unassigned CJK code points) that
    # join their neighbours, accents and marks, compatibility ideographs, CJK outside BERT's
    # padding, punctuation that NFD changes, full-width forms, emoji, special-token text.
    pool = list("中文字abcXYZ019éÅßǄİΣς,.!?;:'\"()[]-_/@#$%&*~，。！？；：“”（）《》、…—·")
    pool += ["\u0301", "\u093f", "\u037e", "\u1fef", "\uf900", "\ufa6e", "\u9ffd", "\U0002b820"]
    pool += [" ", "\t", "\u3000", "\xa0", "\u200b", "\ufeff", "\x00", "\x7f", "\ufffd", "🤗"]
    pool += ["[MASK]", "Ａ１"]
    rng = random.Random(3)
    fuzz = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    sentences = lines[:800] + fuzz
    got = count_units(iter(sentences), lower, batch=700)
    want = _count_units_reference(sentences, lower)
    assert got["words"] and got["punct"] and got["cjk"]
    for key in ("cjk", "punct", "words"):
        assert dict(got[key]) == dict(want[key]), key


def test_coverage_counts_unknown_characters(tmp_path: Path) -> None:
    from albertzh.pipeline.vocab import coverage

    (tmp_path / "vocab.txt").write_text("\n".join(BERT_HEAD + ["中", "文", "a"]) + "\n")
    tok = load_tokenizer(tmp_path / "vocab.txt")
    # "字" and "xyz" are unknown: 1 + 3 characters of 2 + 1 + 5 + 1 non-space ones.
    cov = coverage(tok, iter(["中 字", "文", "a xyz\u3000", "字"]), limit=3)
    assert cov["sentences"] == 3
    assert cov["chars"] == 2 + 1 + 4
    assert cov["tokens"] == 2 + 1 + 2 and cov["unk_tokens"] == 2
    assert cov["unk_char_pct"] == round(100 * 4 / 7, 4)
