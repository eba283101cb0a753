"""make-shards: word alignment, SOP instances, determinism, static masks, manifests, bad input."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from albertzh.config import StageConfig
from albertzh.data import dataset as ds
from albertzh.errors import DatasetError, InputError
from albertzh.pipeline.shards import (
    Counters,
    Doc,
    ShardsConfig,
    align_words,
    continuation_table,
    document_instances,
    run,
    trim_counts,
)
from albertzh.tokenizer import load_tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = "我喜欢玩游戏年今天气很好们去公园看书人大中国上海北京的了是在有这个"
PIECES = ["play", "##ing", "iphone", "##11", "2019", "abc", "##d", "hello", "world", "11"]


class _Cfg(StageConfig):
    pass


def make_vocab(tmp: Path) -> Path:
    d = tmp / "vocab"
    d.mkdir(exist_ok=True)
    tokens = SPECIALS + ["，", "。"] + list(CHARS) + PIECES
    (d / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return d


def make_words(tmp: Path, parts: list[list[list[list[str]]]], name: str = "words") -> Path:
    """A words dataset: parts -> documents -> sentences -> words."""
    out = ds.prepare_output(tmp / name)
    schema = pa.schema(
        [
            ("doc_id", pa.string()),
            ("sentences", pa.list_(pa.string())),
            ("word_lens", pa.list_(pa.list_(pa.int32()))),
        ]
    )
    for i, docs in enumerate(parts):
        rows = {
            "doc_id": [f"p{i}d{k}" for k in range(len(docs))],
            "sentences": [["".join(s) for s in doc] for doc in docs],
            "word_lens": [[[len(w) for w in s] for s in doc] for doc in docs],
        }
        ds.write_part(out, i, pa.table(rows, schema=schema))
    ds.finish_output(out, "segment", _Cfg(), ["test"])
    return out


def random_docs(rng: np.random.Generator, n_docs: int, max_sents: int = 12) -> list:
    words = ["我", "喜欢", "玩", "游戏", "今天", "天气", "很好", "我们", "去", "公园", "看书"]
    words += ["中国人", "上海", "北京", "playing", "hello", " ", "2019", "年", "，"]
    docs = []
    for _ in range(n_docs):
        doc = []
        for _ in range(int(rng.integers(1, max_sents + 1))):
            sent = [str(rng.choice(words)) for _ in range(int(rng.integers(2, 16)))]
            doc.append(sent + ["。"])
        docs.append(doc)
    return docs


@pytest.fixture
def tok(tmp_path: Path):
    return load_tokenizer(make_vocab(tmp_path))


# --------------------------------------------------------------------------- alignment


def test_alignment_chinese_english_digits_wordpiece(tok) -> None:
    sents = ["我喜欢playing游戏2019年", "hello world", "iPhone11很好", "abcd好"]
    words = [
        ["我", "喜欢", "playing", "游戏", "2019", "年"],
        ["hello", " ", "world"],
        ["iPhone", "11", "很好"],  # jieba splits inside one WordPiece word
        ["ab", "cd", "好"],  # the token "abc" spans the boundary between "ab" and "cd"
    ]
    got = align_words(tok, sents, [[len(w) for w in s] for s in words])
    toks = [tok.convert_ids_to_tokens(ids) for ids, _ in got]
    assert toks[0] == ["我", "喜", "欢", "play", "##ing", "游", "戏", "2019", "年"]
    assert got[0][1] == [True, True, False, True, False, True, False, True, True]
    assert got[1][1] == [True, True]
    assert toks[2] == ["iphone", "##11", "很", "好"]
    assert got[2][1] == [True, False, True, False]  # "##11" never starts a word
    assert toks[3] == ["abc", "##d", "好"]
    assert got[3][1] == [True, False, True]  # "ab"+"cd" become one masking unit


def test_alignment_specials_in_text_become_unk(tok) -> None:
    ((ids, ws),) = align_words(tok, ["我[MASK]你"], [[1, 6, 1]])
    assert tok.mask_id not in ids and tok.unk_id in ids
    assert len(ids) == len(ws) and ws[0]
    # Empty sentences (also trailing ones) give no tokens and do not shift the others.
    got = align_words(tok, ["", "我们", "", "很好", ""], [[], [2], [], [1, 1], []])
    assert [ws for _, ws in got] == [[], [True, False], [], [True, True], []]


def check_units(tok, sents: list[str], words: list[list[str]]) -> int:
    """Units (a word-start token and the tokens up to the next one) are unions of whole words:
    a unit starts exactly where a word starts; every non-continuation token at a new word start
    does start a unit. Returns the number of tokens checked."""
    got = align_words(tok, sents, [[len(w) for w in ws] for ws in words])
    cont = continuation_table(tok)
    checked = 0
    for s, wds, (ids, ws) in zip(sents, words, got, strict=True):
        starts = set(np.cumsum([0] + [len(w) for w in wds])[:-1].tolist())
        offs = [o for o, _ in tok.encode(s).offsets]
        assert len(offs) == len(ids) and (not ws or ws[0])
        for j in range(1, len(ids)):
            if ws[j]:
                assert offs[j] in starts, (s, j)
            elif offs[j] in starts and offs[j] != offs[j - 1]:
                assert cont[ids[j]], (s, j)
            checked += 1
        # No Chinese character is ever turned into its "##" variant (albert_zh's label bug).
        toks = tok.convert_ids_to_tokens(ids)
        assert not any(t.startswith("##") and "\u4e00" <= t[2:3] <= "\u9fff" for t in toks)
    return checked


def test_alignment_on_real_text_units_are_unions_of_words(
    clue_corpus, bert_vocab, tmp_path
) -> None:
    import rjieba

    vocab = tmp_path / "v"
    vocab.mkdir()
    (vocab / "vocab.txt").write_bytes(bert_vocab.read_bytes())
    lines = [x.strip() for x in islice(clue_corpus.open(encoding="utf-8"), 60)]
    sents = [x[:300] for x in lines if x.strip()]
    assert check_units(load_tokenizer(vocab), sents, [list(rjieba.cut(s)) for s in sents]) > 1000


def make_spm_vocab(tmp: Path) -> Path:
    import io

    import sentencepiece as spm

    rng = np.random.default_rng(0)
    sents = ["".join(s) for doc in random_docs(rng, 60) for s in doc]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sents),
        model_writer=model,
        vocab_size=60,
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        pad_id=0,
        pad_piece="[PAD]",
        unk_id=1,
        unk_piece="[UNK]",
        bos_id=-1,
        eos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    d = tmp / "spm"
    d.mkdir()
    (d / "spiece.model").write_bytes(model.getvalue())
    return d


def test_alignment_and_run_with_sentencepiece(tmp_path) -> None:
    tok = load_tokenizer(make_spm_vocab(tmp_path))
    assert tok.kind == "sentencepiece"
    docs = random_docs(np.random.default_rng(11), 30)
    sents = ["".join(s) for doc in docs for s in doc]
    words = [s for doc in docs for s in doc]
    assert check_units(tok, sents, words) > 500
    # Some units span several tokens (a "▁" piece, or a piece inside a longer jieba word).
    got = align_words(tok, sents, [[len(w) for w in s] for s in words])
    assert any(not all(ws) for _, ws in got)
    words_dir = make_words(tmp_path, [docs])
    s = run(ShardsConfig(input=words_dir, vocab=tmp_path / "spm", output=tmp_path / "out"))
    m = ds.read_manifest(tmp_path / "out", "make-shards")
    assert m["vocab"]["kind"] == "sentencepiece" and m["vocab"]["hash"] == tok.hash
    assert s.figures["instances"] == m["rows"] > 0


# --------------------------------------------------------------------------- instances


def _numbered_doc(doc_no: int, lengths: list[int]) -> Doc:
    """Sentences whose ids encode (document, position): id = 1000 * (doc + 1) + position."""
    out, pos = [], 0
    for n in lengths:
        ids = [1000 * (doc_no + 1) + pos + k for k in range(n)]
        out.append((ids, [k % 2 == 0 for k in range(n)]))
        pos += n
    return Doc.from_sentences(out)


def _albert_truncate(a: list[int], b: list[int], max_tokens: int, coins: list[bool]) -> None:
    """google-research/albert's truncate_seq_pair, with its coin flips given."""
    step = 0
    while len(a) + len(b) > max_tokens:
        trunc = a if len(a) > len(b) else b
        if coins[step]:
            del trunc[0]
        else:
            trunc.pop()
        step += 1


def test_trim_counts_matches_albert_truncation() -> None:
    rng = np.random.default_rng(8)
    for _ in range(3000):
        la, lb = int(rng.integers(1, 90)), int(rng.integers(1, 90))
        max_tokens = int(rng.integers(2, 130))
        coins = rng.random(max(0, la + lb - max_tokens)) < 0.5
        a, b = list(range(la)), list(range(100, 100 + lb))
        _albert_truncate(a, b, max_tokens, coins.tolist())
        fa, ba, fb, bb = trim_counts(la, lb, max_tokens, coins)
        assert a == list(range(la))[fa : la - ba] and b == list(range(100, 100 + lb))[fb : lb - bb]


def test_instances_structure_sop_and_no_cross_document() -> None:
    rng = np.random.default_rng(0)
    c = Counters()
    insts = []
    for d in range(400):
        doc = _numbered_doc(d, [int(x) for x in rng.integers(3, 40, size=rng.integers(1, 15))])
        for inst in document_instances(
            doc, rng, max_seq_len=64, short_seq_prob=0.1, cls_id=2, sep_id=3, counters=c
        ):
            insts.append(inst)
    assert c.instances == len(insts) > 500
    swapped = 0
    for inst in insts:
        ids = inst.input_ids.tolist()
        assert inst.input_ids.dtype == np.int32 and inst.token_type_ids.dtype == np.int8
        assert len(ids) <= 64 and ids[0] == 2 and ids[-1] == 3
        sep = ids.index(3)
        a, b = ids[1:sep], ids[sep + 1 : -1]
        assert a and b and 3 not in b
        assert inst.token_type_ids.tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert len(inst.word_starts) == len(ids)
        assert inst.word_starts[0] and inst.word_starts[sep] and inst.word_starts[-1]
        assert inst.word_starts[1] and inst.word_starts[sep + 1]
        assert len({x // 1000 for x in a + b}) == 1, "A and B from different documents"
        # Order within a side is kept; sop_label says whether B came before A.
        assert a == sorted(a) and b == sorted(b)
        assert (max(a) < min(b)) == (inst.sop_label == 0)
        swapped += inst.sop_label
    assert abs(swapped / len(insts) - 0.5) < 0.05
    assert abs(c.short_target / c.instances - 0.1) < 0.03


def test_short_seq_prob_controls_lengths() -> None:
    def lengths(prob: float) -> list[int]:
        rng = np.random.default_rng(1)
        out = []
        for d in range(60):
            doc = _numbered_doc(d, [6] * 80)
            insts = list(
                document_instances(
                    doc, rng, max_seq_len=64, short_seq_prob=prob, cls_id=2, sep_id=3
                )
            )
            out += [len(i.input_ids) for i in insts[:-1]]  # the last one takes what is left
        return out

    full = lengths(0.0)
    assert set(full) == {64}  # always filled to max_seq_len, truncated albert-style
    short = lengths(1.0)
    assert max(short) <= 64 and np.mean(short) < 45


def _one_doc_instances(
    sentences: list[tuple[list[int], list[bool]]],
    rng: np.random.Generator,
    counters: Counters,
    max_seq_len: int = 32,
) -> list:
    """All instances of one document of (ids, word_starts) sentences, never shortened."""
    return list(
        document_instances(
            Doc.from_sentences(sentences),
            rng,
            max_seq_len=max_seq_len,
            short_seq_prob=0,
            cls_id=2,
            sep_id=3,
            counters=counters,
        )
    )


def test_single_sentence_split_at_word_boundary_and_tiny_dropped() -> None:
    rng = np.random.default_rng(2)
    ids = list(range(10, 20))
    ws = [True, False, False, True, False, True, False, False, False, False]
    cuts = set()
    for _ in range(40):
        c = Counters()
        insts = _one_doc_instances([(ids, ws)], rng, c)
        assert len(insts) == 1 and c.single_sentence_split == 1
        inst = insts[0]
        got = inst.input_ids.tolist()
        sep = got.index(3)
        a, b = got[1:sep], got[sep + 1 : -1]
        assert sorted(a + b) == ids
        cut = ids.index(b[0] if inst.sop_label == 0 else a[0])  # where the sentence was cut
        cuts.add(cut)
    assert cuts == {3, 5}  # only at word starts (never 0), and both of them get used
    c2 = Counters()
    assert not _one_doc_instances([([7], [True])], rng, c2)
    assert c2.dropped_too_short == 1


def test_long_sentence_is_cut_not_lost() -> None:
    rng = np.random.default_rng(3)
    ids = list(range(100, 400))
    ws = [k % 4 == 0 for k in range(300)]
    c = Counters()
    insts = _one_doc_instances([(ids, ws)], rng, c, max_seq_len=64)
    assert c.long_sentences_split == 1
    seen = {x for i in insts for x in i.input_ids if x >= 100}
    # Every token lands in exactly one instance or is truncated; without the cut one
    # instance would keep 61 tokens and lose the rest.
    assert len(seen) + c.truncated_tokens == 300 and len(seen) > 2 * 61
    assert all(len(i.input_ids) <= 64 for i in insts)


# --------------------------------------------------------------------------- the stage


def _cfg(tmp: Path, words: Path, vocab: Path, name: str = "shards", **kw) -> ShardsConfig:
    return ShardsConfig(input=words, vocab=vocab, output=tmp / name, **kw)


def _rows(out: Path) -> list[dict]:
    return [r for p in ds.part_paths(out) for r in pq.read_table(p).to_pylist()]


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    parts = [random_docs(rng, 40), random_docs(rng, 25), random_docs(rng, 1), random_docs(rng, 30)]
    return make_words(tmp_path, parts), make_vocab(tmp_path)


def test_run_manifest_and_bytes_identical_across_workers(tmp_path, corpus) -> None:
    words, vocab = corpus
    s1 = run(_cfg(tmp_path, words, vocab, "w1", max_seq_len=48, row_group_rows=16))
    run(_cfg(tmp_path, words, vocab, "w2", max_seq_len=48, row_group_rows=16, workers=2))
    m1 = ds.read_manifest(tmp_path / "w1", "make-shards")
    m2 = ds.read_manifest(tmp_path / "w2", "make-shards")
    assert [f["sha256"] for f in m1["files"]] == [f["sha256"] for f in m2["files"]]
    assert len(m1["files"]) == 4 and s1.figures["instances"] == m1["rows"] > 0
    tok = load_tokenizer(vocab)
    assert m1["vocab"] == {
        "kind": "char",
        "size": tok.vocab_size,
        "hash": tok.hash,
        "special_ids": tok.special_ids_by_role,
    }
    assert m1["masking"] == "dynamic" and m1["max_seq_len"] == 48
    assert m1["masking_options"]["ngram"] == 3 and m1["dupe_factor"] == 1
    assert m1["stats"]["docs"] == 96
    for p in ds.part_paths(tmp_path / "w1"):
        meta = pq.read_metadata(p)
        assert all(meta.row_group(g).num_rows <= 16 for g in range(meta.num_row_groups))
        assert set(pq.read_schema(p).names) == {
            "input_ids",
            "token_type_ids",
            "word_starts",
            "sop_label",
        }
    rows = _rows(tmp_path / "w1")
    assert all(len(r["input_ids"]) <= 48 for r in rows)
    assert len(rows) > 200 and abs(np.mean([r["sop_label"] for r in rows]) - 0.5) < 0.1
    assert all(
        len(r["input_ids"]) == len(r["word_starts"]) == len(r["token_type_ids"]) for r in rows
    )
    # Another seed gives other bytes.
    run(_cfg(tmp_path, words, vocab, "w3", max_seq_len=48, row_group_rows=16, seed=1))
    m3 = ds.read_manifest(tmp_path / "w3")
    assert [f["sha256"] for f in m3["files"]] != [f["sha256"] for f in m1["files"]]


def test_static_masking_with_dupe_factor(tmp_path, corpus) -> None:
    words, vocab = corpus
    tok = load_tokenizer(vocab)
    run(_cfg(tmp_path, words, vocab, "dyn", max_seq_len=64))
    run(
        _cfg(
            tmp_path,
            words,
            vocab,
            "st",
            max_seq_len=64,
            masking="static",
            dupe_factor=3,
            max_predictions=10,
        )
    )
    m = ds.read_manifest(tmp_path / "st")
    assert m["masking"] == "static" and m["dupe_factor"] == 3
    assert m["masking_options"]["max_predictions"] == 10
    dyn, st = _rows(tmp_path / "dyn"), _rows(tmp_path / "st")
    assert 2.5 * len(dyn) < len(st) < 3.5 * len(dyn)
    n_masked = n_tok = n_mask_tok = 0
    for r in st:
        pos, lab, ids = r["masked_positions"], r["masked_ids"], r["input_ids"]
        assert len(pos) == len(lab) <= 10 and pos == sorted(set(pos))
        assert all(ids[p] not in (tok.cls_id, tok.sep_id) for p in pos)
        assert not any(i == tok.mask_id for k, i in enumerate(ids) if k not in set(pos))
        assert all(lab_id not in tok.special_ids for lab_id in lab)
        n_masked += len(pos)
        n_mask_tok += sum(ids[p] == tok.mask_id for p in pos)
        n_tok += len(ids) - 3
    assert abs(n_masked / n_tok - 0.15) < 0.03
    assert abs(n_mask_tok / n_masked - 0.8) < 0.05
    assert m["stats"]["masked_tokens"] == n_masked
    # The default dupe factor of static masking is 10.
    assert (
        ShardsConfig(input=words, vocab=vocab, output=tmp_path / "x", masking="static").copies == 10
    )


def test_dynamic_dupe_factor_makes_distinct_copies(tmp_path, corpus) -> None:
    words, vocab = corpus
    run(_cfg(tmp_path, words, vocab, "one", max_seq_len=40))
    run(_cfg(tmp_path, words, vocab, "two", max_seq_len=40, dupe_factor=2))
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert 1.6 * len(one) < len(two) < 2.4 * len(one)
    assert "masked_positions" not in two[0]
    # The copies are chunked and swapped differently, not repeated.
    key = [(tuple(r["input_ids"]), r["sop_label"]) for r in two]
    assert len(set(key)) > 0.8 * len(key)


def test_resume_and_sharding(tmp_path, corpus) -> None:
    words, vocab = corpus
    full = _cfg(tmp_path, words, vocab, "full")
    run(full)
    shard = _cfg(tmp_path, words, vocab, "sh", shard_index=1, num_shards=2)
    run(shard)
    sh = json.loads((tmp_path / "sh" / ds.shard_manifest_name(1, 2)).read_text(encoding="utf-8"))
    assert [f["name"] for f in sh["files"]] == ["part-00001.parquet", "part-00003.parquet"]
    assert sh["shard"] == {"index": 1, "count": 2} and sh["total_parts"] == 4
    ref = {f["name"]: f["sha256"] for f in ds.read_manifest(tmp_path / "full")["files"]}
    for f in sh["files"]:
        assert f["sha256"] == ref[f["name"]]
    # Interrupted run: part 1 missing, manifest gone; --resume redoes only part 1.
    out = tmp_path / "full"
    (out / "part-00001.parquet").unlink()
    (out / "manifest.json").unlink()
    before = (out / "part-00000.parquet").stat().st_mtime_ns
    s = run(_cfg(tmp_path, words, vocab, "full", resume=True))
    assert s.figures["parts"] == {"written": 1, "skipped": 3}
    assert (out / "part-00000.parquet").stat().st_mtime_ns == before
    assert {f["name"]: f["sha256"] for f in ds.read_manifest(out)["files"]} == ref


def test_bad_inputs(tmp_path, corpus) -> None:
    words, vocab = corpus
    with pytest.raises(DatasetError, match="no such directory"):
        run(_cfg(tmp_path, tmp_path / "nope", vocab))
    (words / "manifest.json").rename(tmp_path / "m.json")
    with pytest.raises(DatasetError, match="no manifest.json"):
        run(_cfg(tmp_path, words, vocab))
    (tmp_path / "m.json").rename(words / "manifest.json")
    with pytest.raises(InputError, match="--vocab"):
        run(_cfg(tmp_path, words, tmp_path / "novocab"))
    empty = tmp_path / "emptyvocab"
    empty.mkdir()
    with pytest.raises(InputError, match="emptyvocab.*--vocab"):
        run(_cfg(tmp_path, words, empty))
    bad = tmp_path / "badvocab"
    bad.mkdir()
    (bad / "vocab.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing special token"):
        run(_cfg(tmp_path, words, bad))
    # A docs dataset (wrong stage) is refused.
    docs = ds.prepare_output(tmp_path / "docs")
    ds.write_part(docs, 0, pa.table({"doc_id": ["a"], "text": ["x"], "source": ["s"]}))
    ds.finish_output(docs, "clean", _Cfg(), [])
    with pytest.raises(DatasetError, match="expected segment"):
        run(_cfg(tmp_path, docs, vocab))
    assert not (tmp_path / "shards").exists() or not any((tmp_path / "shards").iterdir())


def test_bad_word_lens_fails_without_half_written_output(tmp_path, tok) -> None:
    out = ds.prepare_output(tmp_path / "w")
    good = {"doc_id": ["a"], "sentences": [["我喜欢"]], "word_lens": [[[1, 2]]]}
    bad = {
        "doc_id": ["b", "c"],
        "sentences": [["很好"], ["我们去"]],
        "word_lens": [[[2]], [[1, 1]]],
    }
    schema = pa.schema(
        [
            ("doc_id", pa.string()),
            ("sentences", pa.list_(pa.string())),
            ("word_lens", pa.list_(pa.list_(pa.int32()))),
        ]
    )
    ds.write_part(out, 0, pa.table(good, schema=schema))
    ds.write_part(out, 1, pa.table(bad, schema=schema))
    ds.finish_output(out, "segment", _Cfg(), [])
    vocab = make_vocab(tmp_path)
    with pytest.raises(
        DatasetError, match=r"part-00001.parquet: document 'c'.*add up to 2.*3 characters"
    ):
        run(_cfg(tmp_path, out, vocab))
    res = tmp_path / "shards"
    assert not (res / "manifest.json").exists()
    assert not list(res.glob(".*tmp*")) and not (res / "part-00001.parquet").exists()
    # A words part without the word_lens column is refused by name.
    out2 = ds.prepare_output(tmp_path / "w2")
    ds.write_part(out2, 0, pa.table({"doc_id": ["a"], "sentences": [["x"]]}))
    ds.finish_output(out2, "segment", _Cfg(), [])
    with pytest.raises(DatasetError, match="missing column 'word_lens'"):
        run(_cfg(tmp_path, out2, vocab, "s2"))
    # A null sentence inside a document is named, not turned into a wrong length.
    out3 = ds.prepare_output(tmp_path / "w3")
    nulls = {"doc_id": ["a"], "sentences": [["我", None]], "word_lens": [[[1], []]]}
    ds.write_part(out3, 0, pa.table(nulls, schema=schema))
    ds.finish_output(out3, "segment", _Cfg(), [])
    with pytest.raises(DatasetError, match="part-00000.parquet: column 'sentences' holds a null"):
        run(_cfg(tmp_path, out3, vocab, "s3"))
    assert not (tmp_path / "s3" / "manifest.json").exists()


def test_config_checks(tmp_path) -> None:
    with pytest.raises(ValueError, match="--max-predictions"):
        ShardsConfig(input="w", vocab="v", output="o", max_predictions=200, max_seq_len=128)
    cfg = ShardsConfig(input="w", vocab="v", output="o")
    assert cfg.copies == 1 and cfg.masking == "dynamic"
    assert json.loads(cfg.model_dump_json())["whole_word"] is True
