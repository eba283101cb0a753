"""The tokenizer API: ids equal transformers' on real text, offsets index the original text."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from albertzh.errors import InputError
from albertzh.tokenizer import Encoding, load_tokenizer

MIXED = [
    "Hello WORLD, café naïve 2024年GPT-4o发布了！很好",
    "ＡＢＣ全角字母，\u3000全角空格\t和tab  还有emoji🤗与生僻字𠮷。",
    "他说：``引号''里面[MASK]是special token吗？",
    "",
    "   ",
]


def _lines(path: Path, n: int, skip: int = 0) -> list[str]:
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n") for _, line in zip(range(skip + n), f, strict=False)]
    return rows[skip:]


def _plain(s: str) -> str:
    # What BERT/ALBERT normalisation does to a span: lowercase and strip accents.
    s = unicodedata.normalize("NFD", s.lower())
    return "".join(c for c in s if not unicodedata.combining(c))


# --------------------------------------------------------------------------- char (vocab.txt)


@pytest.fixture(scope="module")
def bert_tok(request: pytest.FixtureRequest):
    from tests.conftest import shared_path

    return load_tokenizer(shared_path("vocab/bert_chinese_vocab.txt"))


def test_char_special_ids_and_hash(bert_tok, bert_vocab: Path) -> None:
    import hashlib

    t = bert_tok
    assert t.kind == "char" and t.vocab_size == 21128
    assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id) == (0, 100, 101, 102, 103)
    assert t.special_ids == {0, 100, 101, 102, 103}
    assert t.hash == hashlib.sha256(bert_vocab.read_bytes()).hexdigest()
    assert t.convert_ids_to_tokens([101, 103]) == ["[CLS]", "[MASK]"]


def test_char_ids_equal_bert_tokenizer(bert_tok, bert_vocab: Path, clue_corpus: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizer(str(bert_vocab))
    texts = _lines(clue_corpus, 150) + MIXED
    ours = bert_tok.encode_batch(texts)
    for text, enc in zip(texts, ours, strict=True):
        assert enc.ids == hf(text, add_special_tokens=False)["input_ids"], text[:50]
        assert bert_tok.encode(text) == enc
    ids, types = bert_tok.encode_for_model(texts[0], texts[1], max_len=64)
    want = hf(texts[0], texts[1], truncation="longest_first", max_length=64)
    assert ids == want["input_ids"] and types == want["token_type_ids"]


def test_char_offsets_slice_back_to_tokens(bert_tok, clue_corpus: Path) -> None:
    texts = _lines(clue_corpus, 50) + MIXED
    checked = 0
    for text in texts:
        enc = bert_tok.encode(text)
        assert len(enc.ids) == len(enc.offsets)
        for tok, (s, e) in zip(bert_tok.convert_ids_to_tokens(enc.ids), enc.offsets, strict=True):
            assert 0 <= s < e <= len(text)
            if tok in ("[MASK]", "[CLS]", "[SEP]"):
                assert text[s:e] == tok
            elif tok != "[UNK]":
                assert _plain(text[s:e]) == tok.removeprefix("##"), (tok, text[s:e])
                checked += 1
    assert checked > 1000


def test_char_decode_gives_text_back(bert_tok) -> None:
    text = "在北京大学读博是什么感受？很好奇，patience是美德。"
    assert bert_tok.decode(bert_tok.encode(text).ids) == text
    ids, _ = bert_tok.encode_for_model(text)
    assert bert_tok.decode(ids) == text  # [CLS]/[SEP] skipped
    assert "[CLS]" in bert_tok.decode(ids, skip_special_tokens=False)


def test_encode_for_model_truncates_longest_first(bert_tok) -> None:
    a, b = "一二三四五六七八九十", "甲乙丙"
    ids, types = bert_tok.encode_for_model(a, b, max_len=10)
    assert len(ids) == 10
    # 7 content tokens: a is cut from 10 to 4, b (3) kept whole.
    assert ids[0] == bert_tok.cls_id and ids.count(bert_tok.sep_id) == 2
    assert bert_tok.decode(ids[1:5]) == "一二三四" and bert_tok.decode(ids[6:9]) == "甲乙丙"
    assert types == [0] * 6 + [1] * 4
    ids, types = bert_tok.encode_for_model(a, max_len=5)
    assert len(ids) == 5 and set(types) == {0} and ids[-1] == bert_tok.sep_id


def test_char_save_loads_in_transformers(bert_tok, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    out = bert_tok.save(tmp_path / "model")
    again = load_tokenizer(out)
    assert again.hash == bert_tok.hash and again.kind == "char"
    info = json.loads((out / "vocab.json").read_text())
    assert info["special_ids"] == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    hf = transformers.BertTokenizer.from_pretrained(str(out))
    auto = transformers.AutoTokenizer.from_pretrained(str(out))
    text = MIXED[0]
    assert hf(text)["input_ids"] == bert_tok.encode_for_model(text)[0]
    assert auto(text)["input_ids"] == bert_tok.encode_for_model(text)[0]
    assert hf.mask_token_id == 103 and hf.pad_token_id == 0


def test_cased_vocab_keeps_case(tmp_path: Path) -> None:
    d = tmp_path / "v"
    d.mkdir()
    (d / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "中"]) + "\n"
    )
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    t = load_tokenizer(d)
    assert t.encode("Hello hello 中").ids == [5, 6, 7]
    assert load_tokenizer(d / "vocab.txt").encode("Hello").ids == [5]
    # Another file in that directory is read alone (default: lowercase).
    (d / "other.txt").write_text((d / "vocab.txt").read_text())
    assert load_tokenizer(d / "other.txt").encode("Hello").ids == [6]


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no vocab.txt or spiece.model"):
        load_tokenizer(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n中\n")
    with pytest.raises(InputError, match=r"vocab.txt: missing special token\(s\) \[MASK\]"):
        load_tokenizer(bad)
    (bad / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    (bad / "vocab.json").write_text(json.dumps({"hash": "0" * 64}))
    with pytest.raises(InputError, match="vocab.json: hash"):
        load_tokenizer(bad)


# --------------------------------------------------------------------------- sentencepiece


def _train_spm(d: Path, lines: list[str], model_type: str) -> Path:
    import sentencepiece as spm

    d.mkdir(parents=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(d / "spiece"),
        vocab_size=2500,
        model_type=model_type,
        character_coverage=0.995,
        pad_id=0,
        pad_piece="[PAD]",
        unk_id=1,
        unk_piece="[UNK]",
        bos_id=-1,
        eos_id=-1,
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        num_threads=1,
        minloglevel=2,
    )
    (d / "spiece.vocab").unlink()
    return d


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def spm_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import shared_path

    lines = _lines(shared_path("corpus/clue_corpus_small_sample.txt"), 400)
    return _train_spm(tmp_path_factory.mktemp("spm") / request.param, lines, request.param)


def test_spm_special_ids(spm_dir: Path) -> None:
    t = load_tokenizer(spm_dir)
    assert t.kind == "sentencepiece" and t.vocab_size == 2500
    assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id) == (0, 1, 2, 3, 4)
    assert t.special_tokens == {
        "pad": "[PAD]",
        "unk": "[UNK]",
        "cls": "[CLS]",
        "sep": "[SEP]",
        "mask": "[MASK]",
    }


def _spm_reference(model: Path, text: str) -> list[int]:
    """sentencepiece itself on text normalised as AlbertTokenizer does (no special tokens)."""
    import sentencepiece as spm

    text = text.replace("``", '"').replace("''", '"')
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return spm.SentencePieceProcessor(model_file=str(model)).encode(text)


def test_spm_ids_equal_sentencepiece_and_albert_tokenizer(
    spm_dir: Path, clue_corpus: Path, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("google.protobuf")
    t = load_tokenizer(spm_dir)
    out = t.save(tmp_path / "model")
    hf = transformers.AlbertTokenizer.from_pretrained(str(out))
    texts = _lines(clue_corpus, 100, skip=400) + MIXED
    encs = t.encode_batch(texts)
    spaces = hf_same = 0
    for text, enc in zip(texts, encs, strict=True):
        assert t.encode(text) == enc
        if "[MASK]" not in text:
            assert enc.ids == _spm_reference(spm_dir / "spiece.model", text), text[:50]
        hf_same += enc.ids == hf(text, add_special_tokens=False)["input_ids"]
        for piece, (s, e) in zip(t.convert_ids_to_tokens(enc.ids), enc.offsets, strict=True):
            assert 0 <= s <= e <= len(text)
            body = piece.lstrip("\u2581")
            if not body:
                spaces += 1
                assert s == e
            elif piece != "[UNK]" and "``" not in text:
                # spm's own NFKC (full-width to half-width) applies after lowercasing; a piece
                # may hold part of one character's expansion ("…" -> "...").
                norm = unicodedata.normalize("NFKC", _plain(text[s:e]))
                split = any(len(unicodedata.normalize("NFKC", c)) > 1 for c in text[s:e])
                assert norm == body or (split and body in norm), (piece, text)
    assert spaces > 0
    if spm_dir.name == "unigram":
        # transformers rebuilds a unigram spm model exactly; its BPE rebuild (merges guessed
        # from piece scores) differs from sentencepiece on some texts, see the docs.
        assert hf_same == len(texts)
        ids, types = t.encode_for_model(texts[0], texts[1], max_len=40)
        want = hf(texts[0], texts[1], truncation="longest_first", max_length=40)
        assert ids == want["input_ids"]
        assert types == [0] * (ids.index(t.sep_id) + 1) + [1] * (len(ids) - ids.index(t.sep_id) - 1)
    else:
        assert hf_same >= 0.5 * len(texts)


def test_spm_decode_and_special_text(spm_dir: Path) -> None:
    t = load_tokenizer(spm_dir)
    text = "中国甘肃网7月20日讯据兰州日报报道"
    assert t.decode(t.encode(text).ids) == text
    enc = t.encode("前[MASK]后")
    assert t.mask_id in enc.ids
    i = enc.ids.index(t.mask_id)
    assert enc.offsets[i] == (1, 7)


def test_encoding_is_a_value() -> None:
    assert Encoding([1, 2], [(0, 1), (1, 2)]) == Encoding([1, 2], [(0, 1), (1, 2)])
    assert len(Encoding([1], [(0, 1)])) == 1


# --------------------------------------------------------------------------- char fast path

# Characters that stress the fast path: CJK in and out of the vocab, compatibility ideographs
# (NFD maps them to unified ones), unassigned code points in CJK blocks, ASCII and full-width
# punctuation, letters with accents and case rules, combining marks after CJK/punctuation,
# every kind of space, control characters, emoji, special tokens (whole and broken) and
# over-long words (BERT's 100-character [UNK] rule).
_FUZZ_POOL = (
    list("中文的一是在不了有和人这北京大学")
    + ["\u3400", "\u4dbf", "\u9fff", "\u9ffd", "\uf900", "\ufa6e", "\ufad9", "\U00020000"]
    + ["\U0002a6df", "\U0002b81f", "\U0002b820", "\U0002f800", "\U00030000", "𠮷"]
    + list(",.!?;:'\"()[]{}<>-_/\\@#$%^&*~`|+=")
    + list("，。！？；：“”‘’（）《》【】、…—～·「」『』")
    + list("abcXYZ019éèüÅßǄİıﬁΣσςＡＢＣ１２３")
    + ["\u0301", "\u0300", "\u20dd", "\u093f", "\u0e31", "\u037e", "\u0387", "\u1fef"]
    + list(" \t\n\r\u3000\xa0\u2003\u200b\ufeff\x00\x01\x7f\x85\u2028\ufffd")
    + ["🤗", "😀", "\U0001f1e8\U0001f1f3"]
    + ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[CL", "S]", "##", "a" * 101, "1" * 60]
)


def _fuzz_texts(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return ["".join(rng.choice(_FUZZ_POOL) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.mark.parametrize("lower", [True, False])
def test_char_fast_path_equals_hf_tokenizers(
    bert_vocab: Path, clue_corpus: Path, lower: bool
) -> None:
    from albertzh.tokenizer import CharTokenizer

    t = CharTokenizer(bert_vocab, do_lower_case=lower)
    table = t._char_table()
    assert table is not None and (table >= 0).sum() > 7000  # CJK + punctuation take the table
    texts = _lines(clue_corpus, 600) + MIXED + _fuzz_texts(1500)
    want = t.encode_hf(texts)
    got = t.encode_arrays(texts)
    assert len(got) == len(texts)
    assert got.encodings() == want
    assert t.encode_batch(texts[:50]) == want[:50]
    assert [t.encode(x) for x in texts[-50:]] == want[-50:]
    # The flat arrays line up with the per-text lists.
    b = got.bounds
    assert b[0] == 0 and b[-1] == len(got.ids) == len(got.starts) == len(got.ends)
    assert got.ids.dtype == np.int32 and (np.diff(b) >= 0).all()


def test_char_fast_path_on_a_learned_vocab_and_odd_specials(tmp_path: Path) -> None:
    from albertzh.tokenizer import CharTokenizer

    # A small vocab: a compatibility ideograph and its unified form, punctuation that NFD
    # changes (U+037E -> ';'), a special token made of CJK and punctuation characters.
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<掩>", "中", "文", "\uf900", "\u8c48"]
    toks += ["，", "。", ";", "\u037e", "a", "##b", "ab", "1", "##2"]
    (tmp_path / "vocab.txt").write_text("\n".join(toks) + "\n", encoding="utf-8")
    texts = ["中<掩>文，ab12\uf900\u8c48\u037e;。<掩", "掩<中>", *_fuzz_texts(300, seed=1)]
    for lower in (True, False):
        t = CharTokenizer(tmp_path / "vocab.txt", {"mask": "<掩>"}, do_lower_case=lower)
        assert t.encode_arrays(texts).encodings() == t.encode_hf(texts)
        table = t._char_table()
        assert table is not None and table[ord("掩")] == -1  # in a special token: slow path
    # A special token holding a space turns the fast path off (runs are joined by spaces).
    toks[4] = "<掩 >"
    (tmp_path / "vocab.txt").write_text("\n".join(toks) + "\n", encoding="utf-8")
    t = CharTokenizer(tmp_path / "vocab.txt", {"mask": "<掩 >"})
    assert t._char_table() is None
    assert t.encode_arrays(["中<掩 >文"]).encodings() == t.encode_hf(["中<掩 >文"])
    assert t.encode("中<掩 >文").ids == [5, 4, 6]
