"""The clean stage: rule flags, dataset output, dedup across files/workers, resume, shards."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from albertzh.data import dataset as ds
from albertzh.errors import ConfigError, DatasetError, InputError
from albertzh.pipeline.clean import CleanConfig, Cleaner, run

GOOD = [
    "今天天气很好，我们一起去公园散步。公园里有很多人在锻炼身体！",
    "这家餐厅的菜很好吃，服务也很周到。下次还会再来。",
    "他说：“明天见！”然后就走了。我们都很想念他。",
    "北京是中国的首都，有着悠久的历史和灿烂的文化。",
    "学习一门新的语言需要时间和耐心，但是非常有意思。",
    "这本书讲述了一个感人的故事，让我久久不能忘怀。",
]


def _cfg(tmp_path: Path, inputs: list[Any], **kw: Any) -> CleanConfig:
    return CleanConfig(inputs=[str(i) for i in inputs], output=tmp_path / "docs", **kw)


def _clean_one(text: str, **kw: Any) -> str | None:
    return Cleaner(CleanConfig(inputs=["x"], output="o", **kw))(text)


def _rows(out: Path) -> list[dict[str, str]]:
    return [r for p in ds.part_paths(out) for r in pq.read_table(p).to_pylist()]


def _write(path: Path, docs: list[str]) -> Path:
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- rule flags


def test_default_rules_on_one_document() -> None:
    raw = "\ufeff<p>ＡＢＣ公司　发布了新产品，详见https://abc.com/x 。</p>大家都很喜欢！"
    assert _clean_one(raw) == "ABC公司 发布了新产品，详见[URL] 。\n大家都很喜欢！"


def test_each_normalizer_can_be_switched_off() -> None:
    assert "\u200b" in _clean_one("你好\u200b世界，今天很开心。", invisible=False)
    assert "<b>" in _clean_one("<b>你好世界</b>，今天很开心。", html=False)
    assert "ＡＢＣ" in _clean_one("ＡＢＣ你好世界，今天很开心。", fullwidth=False, nfkc=False)
    assert "ﬁ" in _clean_one("ﬁ你好世界，今天很开心。", nfkc=False)
    assert "ﬁ" not in _clean_one("ﬁ你好世界，今天很开心。")
    assert "," in _clean_one("你好世界，今天很开心。", keep_cn_punct=False)
    assert "  " in _clean_one("你好  世界，今天很开心。", whitespace=False)


def test_url_modes() -> None:
    text = "欢迎访问http://a.cn/b 或者写信到 me@a.cn 联系我们。"
    assert _clean_one(text) == "欢迎访问[URL] 或者写信到 [EMAIL] 联系我们。"
    assert _clean_one(text, url_token="<u>", email_token="<e>") == (
        "欢迎访问<u> 或者写信到 <e> 联系我们。"
    )
    assert _clean_one(text, urls="keep") == text
    c = Cleaner(CleanConfig(inputs=["x"], output="o", urls="drop"))
    assert c(text) is None and c.dropped == {"url": 1}


def test_t2s_flag() -> None:
    pytest.importorskip("opencc")
    assert _clean_one("這是一個繁體中文的句子。", t2s=True) == "这是一个繁体中文的句子。"
    assert _clean_one("這是一個繁體中文的句子。") == "這是一個繁體中文的句子。"


def test_t2s_missing_package_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opencc", None)  # makes `import opencc` fail
    with pytest.raises(ConfigError, match="--t2s needs the OpenCC package"):
        run(_cfg(tmp_path, [_write(tmp_path / "a.txt", GOOD)], t2s=True))


def test_sentence_splitting_and_short_sentences() -> None:
    text = "第一句话在这里。好。第三句话在这里！"
    assert _clean_one(text) == "第一句话在这里。\n好。\n第三句话在这里！"
    c = Cleaner(CleanConfig(inputs=["x"], output="o", min_sentence_chars=3))
    assert c(text) == "第一句话在这里。\n第三句话在这里！"
    assert c.rules["short_sentences"] == 1
    assert _clean_one(text, split_sentences=False) == text


@pytest.mark.parametrize(
    "text,kw,reason",
    [
        ("太短了。", {}, "too_short"),
        ("".join(GOOD), {"max_chars": 50}, "too_long"),
        ("This is English text with 一点 Chinese.", {}, "low_chinese_ratio"),
        ("这家餐厅的菜很好吃。" * 3, {}, "repeated_lines"),
        ("太好笑了哈哈哈哈哈哈哈哈哈哈哈哈", {}, "char_run"),
        ("啊好啊啊是啊啊对啊啊啊啊嗯啊啊啊啊啊吧啊啊哦", {"max_char_run": 0}, "char_spam"),
        ("。", {}, "empty"),
    ],
)
def test_filters_drop_with_named_reason(text: str, kw: dict[str, Any], reason: str) -> None:
    c = Cleaner(CleanConfig(inputs=["x"], output="o", **kw))
    assert c(text) is None
    assert dict(c.dropped) == {reason: 1}


@pytest.mark.parametrize(
    "text,kw",
    [
        ("太短了。", {"min_chars": 2}),
        ("".join(GOOD), {"max_chars": 0}),
        ("This is English text with 一点 Chinese.", {"min_chinese_ratio": 0.0}),
        ("这家餐厅的菜很好吃。" * 3, {"max_repeated_lines": 1.0}),
        ("太好笑了哈哈哈哈哈哈哈哈哈哈哈哈", {"max_char_run": 20}),
        (
            "啊好啊啊是啊啊对啊啊啊啊嗯啊啊啊啊啊吧啊啊哦",
            {"max_char_run": 0, "max_char_fraction": 1.0},
        ),
    ],
)
def test_filter_flags_relax_the_filters(text: str, kw: dict[str, Any]) -> None:
    assert _clean_one(text, **kw) is not None


def test_config_checks_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--max-chars 5 must not be smaller than --min-chars 10"):
        CleanConfig(inputs=["x"], output="o", max_chars=5)


# --------------------------------------------------------------------------- the dataset


def test_run_writes_docs_dataset_with_stats(tmp_path: Path) -> None:
    src = _write(tmp_path / "a.txt", [GOOD[0], "太短。", GOOD[1], GOOD[0], "", GOOD[2]])
    summary = run(_cfg(tmp_path, [src]))
    out = tmp_path / "docs"
    m = ds.read_manifest(out, "clean")
    ds.check_schema(
        out / "part-00000.parquet",
        {"doc_id": pa.string(), "text": pa.string(), "source": pa.string()},
    )
    rows = _rows(out)
    assert [r["doc_id"] for r in rows] == ["00000-000000", "00000-000002", "00000-000005"]
    assert rows[0]["text"] == "今天天气很好，我们一起去公园散步。\n公园里有很多人在锻炼身体！"
    assert {r["source"] for r in rows} == {str(src)}
    st = m["stats"]
    assert st["rows_in"] == 6 and st["rows_out"] == 3 == m["rows"]
    assert st["dropped"] == {"too_short": 1, "duplicate": 1, "empty": 1}
    assert st["bytes_in"] == src.stat().st_size
    f = summary.figures
    assert f["rows_in"] == 6 and f["rows_out"] == 3 and f["dropped"]["duplicate"] == 1
    assert f["sentences"] == 2 + 2 + 3 == st["sentences"]
    assert not list(out.glob(".*")), "no staging or temp files left behind"


def test_dedup_across_files_first_wins_and_can_be_off(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.txt", GOOD[:3])
    b = _write(tmp_path / "b.txt", [GOOD[2], GOOD[4], "  " + GOOD[1] + "  "])
    run(_cfg(tmp_path, [a, b]))
    rows = _rows(tmp_path / "docs")
    assert [r["source"] for r in rows] == [str(a)] * 3 + [str(b)]
    assert rows[-1]["doc_id"] == "00001-000001"
    m = ds.read_manifest(tmp_path / "docs")
    assert m["stats"]["dropped"] == {"duplicate": 2}
    run(_cfg(tmp_path, [a, b], dedup=False, overwrite=True))
    assert len(_rows(tmp_path / "docs")) == 6


def test_near_dup(tmp_path: Path) -> None:
    pytest.importorskip("datasketch")
    base = "今天天气很好，我们一起去公园散步。公园里有很多人在锻炼身体，有的跑步，有的打太极拳。"
    near = base.replace("打太极拳", "打太极")
    src = _write(tmp_path / "a.txt", [base, GOOD[3], near])
    run(_cfg(tmp_path, [src], near_dup=True))
    m = ds.read_manifest(tmp_path / "docs")
    assert m["stats"]["dropped"] == {"near_duplicate": 1}
    assert [r["doc_id"] for r in _rows(tmp_path / "docs")] == ["00000-000000", "00000-000001"]
    # A pair with Jaccard ~0.3 is kept at the default threshold, dropped at a low one.
    mid = base[:22] + "晚上我们回家吃了一顿非常丰盛的晚饭" + base[40:]
    src = _write(tmp_path / "a.txt", [base, mid])
    run(_cfg(tmp_path, [src], near_dup=True, overwrite=True))
    assert ds.read_manifest(tmp_path / "docs")["rows"] == 2
    run(_cfg(tmp_path, [src], near_dup=True, near_dup_threshold=0.15, overwrite=True))
    assert ds.read_manifest(tmp_path / "docs")["rows"] == 1
    with pytest.raises(ConfigError, match="--near-dup-threshold 0.99"):
        run(_cfg(tmp_path, [src], near_dup=True, near_dup_threshold=0.99, overwrite=True))


def _corpus(tmp_path: Path, n: int = 300) -> Path:
    # Many small units (chunk_mb below) with duplicates spread across them.
    docs = [f"第{i % 97}号文档：{GOOD[i % 97 % len(GOOD)]}编号{i % 97}。" for i in range(n)]
    return _write(tmp_path / "corpus.txt", docs)


def _part_hashes(out: Path) -> list[str]:
    return [f["sha256"] for f in ds.read_manifest(out)["files"]]


def test_workers_give_byte_identical_parts(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    one = run(CleanConfig(inputs=[str(src)], output=tmp_path / "w1", chunk_mb=0.002))
    two = run(CleanConfig(inputs=[str(src)], output=tmp_path / "w2", chunk_mb=0.002, workers=2))
    assert one.figures["units"] > 4
    assert _part_hashes(tmp_path / "w1") == _part_hashes(tmp_path / "w2")
    assert one.figures["dropped"] == two.figures["dropped"]
    assert one.figures["dropped"]["duplicate"] == 300 - 97
    assert one.figures["rows_out"] == 97


def test_resume_skips_complete_parts_and_dedups_correctly(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    out = tmp_path / "docs"
    cfg = CleanConfig(inputs=[str(src)], output=out, chunk_mb=0.002)
    run(cfg)
    full = ds.read_manifest(out)
    n = len(full["files"])
    # Simulate a run cut off after the first half of the parts.
    for f in full["files"][n // 2 :]:
        (out / f["name"]).unlink()
    (out / "manifest.json").unlink()
    summary = run(cfg.model_copy(update={"resume": True}))
    assert summary.figures["units_resumed"] == n // 2
    again = ds.read_manifest(out)
    assert _part_hashes(out) == [f["sha256"] for f in full["files"]]
    assert again["stats"] == full["stats"]
    assert summary.figures["rows_out"] == 97


def test_resume_refuses_parts_made_with_other_options(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    out = tmp_path / "docs"
    cfg = CleanConfig(inputs=[str(src)], output=out, chunk_mb=0.002)
    run(cfg)
    (out / "manifest.json").unlink()
    # Worker count is not an option that changes the output: resuming with 2 is fine.
    run(cfg.model_copy(update={"resume": True, "workers": 2}))
    (out / "manifest.json").unlink()
    (out / "part-00000.parquet").unlink()
    before = sorted(p.stat().st_mtime_ns for p in out.glob("part-*"))
    with pytest.raises(DatasetError, match=r"part-00001\.parquet: written with other clean"):
        run(cfg.model_copy(update={"resume": True, "min_chars": 3}))
    # Refused before any work: no new part mixed in.
    assert not (out / "part-00000.parquet").exists()
    assert sorted(p.stat().st_mtime_ns for p in out.glob("part-*")) == before
    # The same corpus at another path resumes (inputs count by name, format and size) ...
    moved = tmp_path / "elsewhere" / src.name
    moved.parent.mkdir()
    moved.write_bytes(src.read_bytes())
    run(cfg.model_copy(update={"resume": True, "inputs": [str(moved)]}))
    # ... a corpus that has grown since does not.
    (out / "manifest.json").unlink()
    (out / "part-00000.parquet").unlink()
    with moved.open("a", encoding="utf-8") as f:
        f.write("又一篇新的文档，内容完全不同。\n")
    with pytest.raises(DatasetError, match=r"other clean options or inputs"):
        run(cfg.model_copy(update={"resume": True, "inputs": [str(moved)]}))


def test_shards_process_disjoint_units(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    run(CleanConfig(inputs=[str(src)], output=tmp_path / "all", chunk_mb=0.002, dedup=False))
    parts = []
    for i in range(2):
        out = tmp_path / f"s{i}"
        run(
            CleanConfig(
                inputs=[str(src)],
                output=out,
                chunk_mb=0.002,
                shard_index=i,
                num_shards=2,
                dedup=False,
            )
        )
        # Separate directories: each holds one shard's manifest, never a merged manifest.json.
        shard = json.loads((out / ds.shard_manifest_name(i, 2)).read_text(encoding="utf-8"))
        assert not (out / ds.MANIFEST).exists()
        names = [f["name"] for f in shard["files"]]
        assert all(int(n[5:10]) % 2 == i for n in names)
        parts += names
    assert sorted(parts) == [f["name"] for f in ds.read_manifest(tmp_path / "all")["files"]]


def test_mixed_inputs_doc_sep_blank_json_parquet_gz(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text(
        f"{GOOD[0]}\n{GOOD[1]}\n\n{GOOD[2]}\n", encoding="utf-8"
    )  # two albert_zh-style docs
    (d / "b.jsonl.gz").write_bytes(
        gzip.compress(json.dumps({"content": GOOD[3]}, ensure_ascii=False).encode() + b"\n")
    )
    pq.write_table(pa.table({"body": [GOOD[4], GOOD[5]]}), d / "c.parquet")
    summary = run(_cfg(tmp_path, [d], doc_sep="blank", text_field="content", text_column="body"))
    rows = _rows(tmp_path / "docs")
    assert summary.figures["input_files"] == 3 and len(rows) == 5
    assert rows[0]["text"].count("\n") == 3  # two lines, each split in two sentences
    assert [Path(r["source"]).name for r in rows] == ["a.txt"] * 2 + ["b.jsonl.gz"] + [
        "c.parquet"
    ] * 2


def test_encoding_errors_in_run(tmp_path: Path) -> None:
    src = tmp_path / "bad.txt"
    src.write_bytes(GOOD[0].encode() + b"\n\xff\xfe bad line\n" + GOOD[1].encode() + b"\n")
    with pytest.raises(InputError, match=r"bad\.txt: byte \d+: not valid UTF-8"):
        run(_cfg(tmp_path, [src]))
    out = tmp_path / "docs"
    assert not (out / "manifest.json").exists() and not list(out.glob("part-*"))
    assert not list(out.glob(".*")), "nothing half-written"
    # Raised in a pool worker: same message; parts before the bad unit are complete files.
    with pytest.raises(InputError, match=r"bad\.txt: byte \d+: not valid UTF-8"):
        run(_cfg(tmp_path, [src], workers=2, chunk_mb=0.00005, overwrite=True))
    assert not (out / "manifest.json").exists() and not list(out.glob(".*"))
    assert [pq.read_table(p).num_rows for p in sorted(out.glob("part-*"))] == [1]
    s = run(_cfg(tmp_path, [src], encoding_errors="skip-line", overwrite=True))
    assert s.figures["skipped_lines"] == 1 and s.figures["rows_out"] == 2
    s = run(_cfg(tmp_path, [src], encoding_errors="replace", overwrite=True))
    assert s.figures["replaced_lines"] == 1 and s.figures["rows_in"] == 3


def test_resume_rebuilds_near_dup_index(tmp_path: Path) -> None:
    pytest.importorskip("datasketch")
    base = "今天天气很好，我们一起去公园散步。公园里有很多人在锻炼身体，有的跑步，有的打太极拳。"
    a = _write(tmp_path / "a.txt", [base, GOOD[3]])
    b = _write(tmp_path / "b.txt", [base.replace("打太极拳", "打太极"), GOOD[4]])
    out = tmp_path / "docs"
    cfg = _cfg(tmp_path, [a, b], near_dup=True)
    run(cfg)
    full = ds.read_manifest(out)
    assert full["stats"]["dropped"] == {"near_duplicate": 1}
    (out / "part-00001.parquet").unlink()
    (out / "manifest.json").unlink()
    run(cfg.model_copy(update={"resume": True}))
    assert _part_hashes(out) == [f["sha256"] for f in full["files"]]
    assert ds.read_manifest(out)["stats"] == full["stats"]


def test_output_inside_an_input_directory_is_refused(tmp_path: Path) -> None:
    # An output may never be, hold or sit inside an input (docs/guarantees.md).
    d = tmp_path / "corpus"
    d.mkdir()
    _write(d / "a.txt", GOOD)
    with pytest.raises(InputError, match="-o is inside the input INPUTS"):
        run(CleanConfig(inputs=[str(d)], output=d / "docs"))
    assert sorted(p.name for p in d.iterdir()) == ["a.txt"]


def test_near_dup_ngram_and_num_perm() -> None:
    pytest.importorskip("datasketch")
    from albertzh.pipeline.clean import minhash_values

    cfg = CleanConfig(inputs=["x"], output="o", near_dup=True, near_dup_num_perm=64)
    assert len(minhash_values("今天天气很好。", cfg)) == 64
    # Same characters in another order: identical as 1-gram sets, different as 5-grams.
    a, b = "今天天气很好我们去公园散步吧", "吧步散园公去们我好很气天天今"
    one = cfg.model_copy(update={"near_dup_ngram": 1})
    assert (minhash_values(a, one) == minhash_values(b, one)).all()
    assert (minhash_values(a, cfg) != minhash_values(b, cfg)).any()


def test_uri_input_gives_the_same_parts(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    run(CleanConfig(inputs=[str(src)], output=tmp_path / "local", chunk_mb=0.002))
    run(CleanConfig(inputs=[src.as_uri()], output=tmp_path / "uri", chunk_mb=0.002, workers=2))
    texts = [[r["text"] for r in _rows(tmp_path / d)] for d in ("local", "uri")]
    assert texts[0] == texts[1] and len(texts[0]) == 97
    assert _rows(tmp_path / "uri")[0]["source"] == src.as_uri()


# --------------------------------------------------------------------------- --exclude


def _fullwidth(text: str) -> str:
    """A width/whitespace variant that cleans back to ``text`` (ASCII -> full-width, spaces)."""
    return "　" + "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text) + "  "


def test_exclude_tsv_jsonl_txt_drop_exactly_the_matching_docs(tmp_path: Path) -> None:
    wide = "ABC公司发布了新产品，大家都很喜欢。"  # its full-width variant is in the corpus
    inside = "昨天我去了一趟书店。" + GOOD[5]  # holds an excluded text as one of its sentences
    corpus = [GOOD[0], _fullwidth(wide), GOOD[1], GOOD[2], GOOD[3], inside, GOOD[4], GOOD[1]]
    src = _write(tmp_path / "corpus.txt", corpus)
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(
        f"label\ttext_a\n1\t{wide}\n0\t  {GOOD[1]}\t\n1\t这条评论不在语料里，只在任务文件中。\n",
        encoding="utf-8",
    )
    jsonl = tmp_path / "test.jsonl"
    rows = [{"id": 7, "label": "entailment", "sentence": _fullwidth(GOOD[2]), "meta": {}}]
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    txt = tmp_path / "more.txt.gz"
    txt.write_bytes(gzip.compress(f"{GOOD[3]}\n{GOOD[5]}\n".encode()))

    plain = run(_cfg(tmp_path, [src]))
    assert "excluded" not in plain.figures["dropped"] and plain.figures["rows_out"] == 7
    s = run(_cfg(tmp_path, [src], exclude=[tsv, jsonl, txt], overwrite=True))
    kept = [r["doc_id"] for r in _rows(tmp_path / "docs")]
    assert kept == ["00000-000000", "00000-000006"]
    # Every copy of an excluded text counts as excluded, before de-duplication sees it.
    assert s.figures["dropped"] == {"excluded": 6}
    assert ds.read_manifest(tmp_path / "docs")["stats"]["dropped"] == {"excluded": 6}
    assert ds.read_manifest(tmp_path / "docs")["config"]["exclude"] == [
        str(tsv),
        str(jsonl),
        str(txt),
    ]


def test_exclude_ignores_labels_ids_and_short_fields(tmp_path: Path) -> None:
    corpus = ["1", "entailment", "not_entailment", "q-0001", "好的", "好的。" + GOOD[0]]
    src = _write(tmp_path / "corpus.txt", corpus)
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(
        "label\tid\ttext_a\n1\tq-0001\t好的\nentailment\tq-0002\t好的。\nnot_entailment\t\t\n",
        encoding="utf-8",
    )
    kw: dict[str, Any] = {"min_chars": 0, "min_sentence_chars": 0, "min_chinese_ratio": 0.0}
    s = run(_cfg(tmp_path, [src], exclude=[tsv], **kw))
    assert s.figures["rows_out"] == len(corpus) and s.figures["dropped"] == {}
    # The same file does exclude a real text: the labels were what it ignored.
    with tsv.open("a", encoding="utf-8") as f:
        f.write(f"1\tq-0003\t好的。{GOOD[0]}\n")
    s = run(_cfg(tmp_path, [src], exclude=[tsv], overwrite=True, **kw))
    assert s.figures["dropped"] == {"excluded": 1}


def test_exclude_uses_the_corpus_normalizers_t2s(tmp_path: Path) -> None:
    pytest.importorskip("opencc")
    src = _write(
        tmp_path / "corpus.txt", ["这家酒店的环境和服务态度都不错，下次还会再来。", GOOD[0]]
    )
    txt = _write(tmp_path / "dev.txt", ["這家酒店的環境和服務態度都不錯，下次還會再來。"])
    assert run(_cfg(tmp_path, [src], exclude=[txt])).figures["dropped"] == {}
    s = run(_cfg(tmp_path, [src], exclude=[txt], t2s=True, overwrite=True))
    assert s.figures["dropped"] == {"excluded": 1}


def test_exclude_works_without_dedup(tmp_path: Path) -> None:
    src = _write(tmp_path / "corpus.txt", [GOOD[0], GOOD[1], GOOD[0], GOOD[1]])
    txt = _write(tmp_path / "dev.txt", [GOOD[1]])
    s = run(_cfg(tmp_path, [src], exclude=[txt], dedup=False))
    assert s.figures["dropped"] == {"excluded": 2} and s.figures["rows_out"] == 2


def _exclude_file(tmp_path: Path, name: str = "dev.tsv") -> Path:
    # Ten of the 97 distinct texts of _corpus (each appears about three times there).
    rows = [f"1\t第{i}号文档：{GOOD[i % len(GOOD)]}编号{i}。\n" for i in range(0, 97, 10)]
    path = tmp_path / name
    path.write_text("label\ttext_a\n" + "".join(rows), encoding="utf-8")
    return path


def test_exclude_same_bytes_for_any_workers_and_with_resume(tmp_path: Path) -> None:
    src, tsv = _corpus(tmp_path), _exclude_file(tmp_path)
    out = tmp_path / "w1"
    cfg = CleanConfig(inputs=[str(src)], output=out, chunk_mb=0.002, exclude=[tsv])
    one = run(cfg)
    two = run(cfg.model_copy(update={"output": tmp_path / "w2", "workers": 2}))
    assert one.figures["units"] > 4 and one.figures["rows_out"] == 97 - 10
    assert one.figures["dropped"]["excluded"] == sum(1 for i in range(300) if i % 97 % 10 == 0)
    assert one.figures["dropped"] == two.figures["dropped"]
    assert _part_hashes(out) == _part_hashes(tmp_path / "w2")
    full = ds.read_manifest(out)

    # Cut off after half the parts, resumed with the same texts in a file elsewhere: equal.
    n = len(full["files"])
    for f in full["files"][n // 2 :]:
        (out / f["name"]).unlink()
    (out / "manifest.json").unlink()
    moved = _exclude_file(tmp_path / "w2", "copy.tsv")
    summary = run(cfg.model_copy(update={"resume": True, "exclude": [moved]}))
    assert summary.figures["units_resumed"] == n // 2
    assert _part_hashes(out) == [f["sha256"] for f in full["files"]]
    assert ds.read_manifest(out)["stats"] == full["stats"]

    # Other texts to exclude (or none) change what the parts hold: resume refuses them.
    (out / "manifest.json").unlink()
    (out / full["files"][-1]["name"]).unlink()
    other = _write(tmp_path / "other.txt", [GOOD[0]])
    for exclude in ([tsv, other], []):
        with pytest.raises(DatasetError, match="written with other clean options"):
            run(cfg.model_copy(update={"resume": True, "exclude": exclude}))


def test_exclude_with_shards(tmp_path: Path) -> None:
    src, tsv = _corpus(tmp_path), _exclude_file(tmp_path)
    kw: dict[str, Any] = {"chunk_mb": 0.002, "dedup": False, "exclude": [tsv]}
    whole = run(CleanConfig(inputs=[str(src)], output=tmp_path / "all", **kw))
    shards = [
        run(
            CleanConfig(
                inputs=[str(src)], output=tmp_path / f"s{i}", shard_index=i, num_shards=2, **kw
            )
        )
        for i in range(2)
    ]
    assert (
        sum(s.figures["dropped"]["excluded"] for s in shards)
        == whole.figures["dropped"]["excluded"]
    )
    assert sum(s.figures["rows_out"] for s in shards) == whole.figures["rows_out"] == 300 - 31


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("missing.tsv", None, "missing.tsv: --exclude file not found"),
        ("bad.txt", "好的\n".encode() + b"\xff\xfe\n", "bad.txt: line 2: not valid UTF-8"),
        (
            "bad.jsonl",
            b'{"text": "\xe5\xa5\xbd"}\n{"text": \n',
            "bad.jsonl: line 2: not valid JSON",
        ),
        ("broken.txt.gz", b"not gzip at all", "broken.txt.gz: cannot read --exclude file"),
        ("adir.tsv", "dir", "adir.tsv: cannot read --exclude file"),
    ],
)
def test_bad_exclude_file_is_one_error_line_and_writes_nothing(
    tmp_path: Path, name: str, content: bytes | str | None, needle: str
) -> None:
    from tests.cli.conftest import one_error_line, root, runner

    src = _write(tmp_path / "corpus.txt", GOOD)
    bad = tmp_path / name
    if content == "dir":
        bad.mkdir()
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    ok = _write(tmp_path / "ok.txt", [GOOD[0]])
    out = tmp_path / "docs"
    r = runner.invoke(
        root, ["clean", str(src), "--exclude", str(ok), "--exclude", str(bad), "-o", str(out)]
    )
    one_error_line(r, needle)
    assert not out.exists()


def test_exclude_from_repeated_flags_and_from_a_config_file(tmp_path: Path) -> None:
    from tests.cli.conftest import root, runner

    src = _write(tmp_path / "corpus.txt", GOOD)
    a, b = _write(tmp_path / "a.txt", [GOOD[0]]), _write(tmp_path / "b.txt", [GOOD[1]])
    args = ["clean", str(src), "--json", "-o", str(tmp_path / "docs")]
    r = runner.invoke(root, [*args, "--exclude", str(a), "--exclude", str(b)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["dropped"] == {"excluded": 2}
    conf = tmp_path / "clean.yaml"
    conf.write_text(f"exclude:\n  - {a}\n  - {b}\n", encoding="utf-8")
    r = runner.invoke(root, [*args, "--config", str(conf), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["dropped"] == {"excluded": 2}
