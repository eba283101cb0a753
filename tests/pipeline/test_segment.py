"""segment: words as slices of sentences, rjieba == jieba, user dict, workers, resume, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from albertzh.data import dataset as ds
from albertzh.errors import DatasetError, InputError
from albertzh.pipeline.segment import (
    WORDS_SCHEMA,
    SegmentConfig,
    Segmenter,
    iter_words,
    read_user_dict,
    run,
    words_of,
)

USER_DICT = """\ufeff陶哲轩 5 nr
云计算平台
兰州公交集团 100
GPT-4o 10 nz
靖远路站 n

读博 2000 v
很好奇 3
"""


@pytest.fixture(scope="module")
def segmenters() -> dict:
    return {}


def _seg(cache: dict, engine: str, user_dict: tuple = (), hmm: bool = True) -> Segmenter:
    key = (engine, user_dict, hmm)
    if key not in cache:
        cache[key] = Segmenter(engine, list(user_dict), hmm)
    return cache[key]


def _docs(path: Path, n: int | None = None) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    return lines[:n] if n else lines


# --------------------------------------------------------------------------- helpers


def test_words_of_slices_and_checks() -> None:
    assert words_of("我爱北京 ok", [1, 1, 2, 1, 2]) == ["我", "爱", "北京", " ", "ok"]
    assert words_of("", []) == []
    with pytest.raises(ValueError, match="add up to 3"):
        words_of("我爱北京", [1, 2])


def test_read_user_dict_rules_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "user.dict"
    p.write_text(USER_DICT, encoding="utf-8")
    entries = read_user_dict(p)
    assert entries[0] == ("陶哲轩", 5, "nr")  # BOM stripped
    assert ("云计算平台", None, None) in entries and ("靖远路站", None, "n") in entries
    assert len(entries) == 7  # blank line skipped
    with pytest.raises(InputError, match=r"nope.dict: user dict not found"):
        read_user_dict(tmp_path / "nope.dict")
    p.write_text("北京大学 3 nt\n清华 x 3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"user.dict:2: malformed user-dict line '清华 x 3'"):
        read_user_dict(p)
    p.write_bytes("北京".encode("gbk"))
    with pytest.raises(InputError, match=r"user.dict: user dict is not UTF-8"):
        read_user_dict(p)


def test_split_doc_cuts_at_newlines(segmenters: dict) -> None:
    for engine in ("rjieba", "jieba"):
        seg = _seg(segmenters, engine)
        assert seg.split_doc("") == []
        assert seg.split_doc("\n\n") == []
        out = seg.split_doc("\n我们去北京大学。\n\n你好\r\n世界\n")
        assert [s for s, _ in out] == ["我们去北京大学。", "你好\r", "世界"]
        for sentence, lens in out:
            assert sum(lens) == len(sentence)
        assert words_of(*out[0]) == ["我们", "去", "北京大学", "。"]
        # The fast path (each "\n" its own word) and the general one agree.
        text = "第一句话。\n第二句 with English words.\n\n第三句"
        assert seg.split_doc(text) == seg._split_slow(text, seg.cut(text))


def test_ascii_runs_split_as_jieba_does(segmenters: dict) -> None:
    text = "4220-4230区间，inside-out翻成，10.4.5版本，4.2k的位置，99.5%的人，GPT-4o发布"
    r, j = _seg(segmenters, "rjieba"), _seg(segmenters, "jieba")
    assert r.cut(text) == j.cut(text)
    assert r.cut(text)[:4] == ["4220", "-", "4230", "区间"]
    # A dictionary word keeps its ASCII run whole in both engines.
    ud = (("GPT-4o", 10, "nz"),)
    assert "GPT-4o" in _seg(segmenters, "rjieba", ud).cut(text)
    assert _seg(segmenters, "rjieba", ud).cut(text) == _seg(segmenters, "jieba", ud).cut(text)


# --------------------------------------------------------------------------- parity on real text


def _route_logprob(seg: Segmenter, words: list[str]) -> float:
    tk = seg._jieba  # the jieba engine: its dictionary frequencies
    logtotal = math.log(tk.total)
    return sum(math.log(tk.FREQ.get(w) or 1) - logtotal for w in words)


def _assert_parity(docs: list[str], segmenters: dict, user_dict: tuple, hmm: bool) -> int:
    """rjieba == jieba, except where two segmentations are equally likely (a float tie)."""
    r = _seg(segmenters, "rjieba", user_dict, hmm)
    j = _seg(segmenters, "jieba", user_dict, hmm)
    ties = 0
    for doc in docs:
        a, b = r.cut(doc), j.cut(doc)
        if a == b:
            continue
        k = 0
        while a[k] == b[k]:
            k += 1
        ea, eb = len(a) - 1, len(b) - 1
        while a[ea] == b[eb]:
            ea, eb = ea - 1, eb - 1
        da, db = a[k : ea + 1], b[k : eb + 1]
        assert "".join(da) == "".join(db)
        assert abs(_route_logprob(j, da) - _route_logprob(j, db)) < 1e-9, (da, db)
        ties += 1
    assert ties <= 2, f"{ties} documents differ"
    return ties


@pytest.mark.parametrize("hmm", [True, False])
def test_rjieba_equals_jieba_on_real_text(
    news_corpus: Path, clue_corpus: Path, tmp_path: Path, segmenters: dict, hmm: bool
) -> None:
    docs = _docs(news_corpus) + _docs(clue_corpus, 250)
    p = tmp_path / "user.dict"
    p.write_text(USER_DICT, encoding="utf-8")
    user_dict = tuple(read_user_dict(p))
    _assert_parity(docs, segmenters, (), hmm)
    _assert_parity(docs, segmenters, user_dict, hmm)
    # The user dict really changes the words.
    changed = sum(
        _seg(segmenters, "rjieba", user_dict, hmm).cut(d)
        != _seg(segmenters, "rjieba", (), hmm).cut(d)
        for d in docs
    )
    assert changed >= 2


@pytest.mark.slow
def test_rjieba_equals_jieba_on_whole_clue_sample(
    clue_corpus: Path, tmp_path: Path, segmenters: dict
) -> None:
    docs = _docs(clue_corpus)
    p = tmp_path / "user.dict"
    p.write_text(USER_DICT, encoding="utf-8")
    assert _assert_parity(docs, segmenters, (), True) == 0
    # With this user dict one sentence (…季节最最最肥美…) is a float tie: 最|最最 vs 最最|最.
    _assert_parity(docs, segmenters, tuple(read_user_dict(p)), True)


# --------------------------------------------------------------------------- the stage

DOCS = [
    "我爱北京天安门。\n天安门上太阳升。",
    "",
    "陶哲轩在UCLA读博？\n\n这是一个4220-4230区间的问题。",
    "今天天气很好",
    "云计算平台发布了GPT-4o。\n第二句。",
    "   \n只有一句",
]


def _make_docs(root: Path, parts: int = 3, stage: str = "clean") -> Path:
    out = ds.prepare_output(root)
    for i in range(parts):
        rows = [(f"{i}-{k}", t) for k, t in enumerate(DOCS) if (k + i) % 2 == 0 or i == 0]
        table = pa.table(
            {
                "doc_id": [r[0] for r in rows],
                "text": [r[1] for r in rows],
                "source": ["t"] * len(rows),
            }
        )
        ds.write_part(out, i, table)
    ds.finish_output(out, stage, {"x": 1}, ["raw.txt"])
    return out


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("part-*.parquet"))}


def test_run_writes_words_dataset(tmp_path: Path) -> None:
    docs = _make_docs(tmp_path / "docs")
    s = run(SegmentConfig(input=docs, output=tmp_path / "words", engine="rjieba")).figures
    m = ds.read_manifest(tmp_path / "words", "segment")
    assert m["engine"] == "rjieba" and m["config"]["engine"] == "rjieba" and m["parts"] == 3
    assert (
        pq.read_schema(tmp_path / "words" / "part-00000.parquet")
        .remove_metadata()
        .equals(WORDS_SCHEMA)
    )
    rows = list(iter_words(tmp_path / "words"))
    assert s["docs"] == len(rows) == m["rows"]
    assert s["empty_docs"] >= 1 and m["stats"]["blank_sentences"] >= 1
    first = rows[0]
    assert first[0] == "0-0" and first[1] == ["我爱北京天安门。", "天安门上太阳升。"]
    assert words_of(first[1][0], first[2][0]) == ["我", "爱", "北京", "天安门", "。"]
    for _, sentences, lens in rows:
        assert all(s.strip() for s in sentences)
        for sentence, ls in zip(sentences, lens, strict=True):
            assert sum(ls) == len(sentence) and all(n > 0 for n in ls)
    assert s["sentences"] == sum(len(r[1]) for r in rows)
    assert s["words"] == sum(len(x) for r in rows for x in r[2])


def test_workers_engines_and_resume_give_identical_parts(tmp_path: Path) -> None:
    docs = _make_docs(tmp_path / "docs")
    run(SegmentConfig(input=docs, output=tmp_path / "a", engine="rjieba", batch_docs=1))
    run(SegmentConfig(input=docs, output=tmp_path / "b", engine="rjieba", workers=2))
    run(SegmentConfig(input=docs, output=tmp_path / "c", engine="jieba", workers=2))
    assert _files(tmp_path / "a") == _files(tmp_path / "b") == _files(tmp_path / "c")
    # Resume: remove one part (as if cut off); only that part is redone.
    (tmp_path / "b" / "part-00001.parquet").unlink()
    s = run(SegmentConfig(input=docs, output=tmp_path / "b", resume=True)).figures
    assert s["parts_resumed"] == 2
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert ds.read_manifest(tmp_path / "b")["rows"] == ds.read_manifest(tmp_path / "a")["rows"]


def test_user_dict_and_hmm_flags_change_words(tmp_path: Path) -> None:
    docs = _make_docs(tmp_path / "docs", parts=1)
    ud = tmp_path / "user.dict"
    ud.write_text("陶哲轩在UCLA 5\n天气很好 100\n", encoding="utf-8")
    run(SegmentConfig(input=docs, output=tmp_path / "plain"))
    run(SegmentConfig(input=docs, output=tmp_path / "dict", user_dict=ud))
    run(SegmentConfig(input=docs, output=tmp_path / "nohmm", hmm=False))

    def words(d: str) -> list[str]:
        return [
            w
            for _, ss, ls in iter_words(tmp_path / d)
            for s, wl in zip(ss, ls, strict=True)
            for w in words_of(s, wl)
        ]

    assert "天气很好" in words("dict") and "天气很好" not in words("plain")
    m = ds.read_manifest(tmp_path / "dict")
    assert m["user_dict"]["words"] == 2 and len(m["user_dict"]["sha256"]) == 64
    assert words("nohmm") != words("plain")


def test_shards_split_the_parts(tmp_path: Path) -> None:
    docs = _make_docs(tmp_path / "docs")
    s = run(SegmentConfig(input=docs, output=tmp_path / "s1", shard_index=1, num_shards=2))
    assert s.figures["parts"] == 1
    assert sorted(_files(tmp_path / "s1")) == ["part-00001.parquet"]


def test_bad_inputs(tmp_path: Path) -> None:
    docs = _make_docs(tmp_path / "docs", parts=1)
    (tmp_path / "half").mkdir()
    ds.write_part(tmp_path / "half", 0, pa.table({"doc_id": ["a"], "text": ["b"]}))
    with pytest.raises(DatasetError, match="half: no manifest.json"):
        run(SegmentConfig(input=tmp_path / "half", output=tmp_path / "o1"))
    wrong = _make_docs(tmp_path / "wrong", parts=1, stage="segment")
    with pytest.raises(DatasetError, match="wrong: is a 'segment' dataset; expected clean"):
        run(SegmentConfig(input=wrong, output=tmp_path / "o2"))
    with pytest.raises(InputError, match="missing.dict: user dict not found"):
        run(SegmentConfig(input=docs, output=tmp_path / "o3", user_dict=tmp_path / "missing.dict"))
    bad = tmp_path / "bad.dict"
    bad.write_text("好词 12\n坏 词 很 多\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.dict:2: malformed"):
        run(SegmentConfig(input=docs, output=tmp_path / "o4", user_dict=bad))
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()
    nocol = tmp_path / "nocol"
    ds.prepare_output(nocol)
    ds.write_part(nocol, 0, pa.table({"doc_id": ["a"], "body": ["b"]}))
    ds.finish_output(nocol, "clean", {}, [])
    with pytest.raises(DatasetError, match="missing column 'text'"):
        run(SegmentConfig(input=nocol, output=tmp_path / "o5"))
