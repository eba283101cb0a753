"""Several machines, one output directory: --shard-index/--num-shards with a merged manifest.

Each shard writes its own parts and ``manifest.shard-i-of-n.json``; the last one to finish
merges them into ``manifest.json``. Until then the next stage refuses the directory; once
merged, the parts are the bytes a single unsharded run writes (clean with --no-dedup, segment
and make-shards: their per-part output does not depend on sharding).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from albertzh.data import dataset as ds
from albertzh.data import fs
from tests.cli.conftest import (
    SENTENCES,
    invoke,
    invoke_json,
    one_error_line,
    write_corpus,
)

CLEAN = ("--chunk-mb", "0.002", "--no-dedup")


def _corpus(path: Path) -> Path:
    return write_corpus(path, n_docs=60, seed=5, sentences=SENTENCES[:10])


def _shard(i: int, n: int = 2) -> tuple[str, ...]:
    return ("--shard-index", str(i), "--num-shards", str(n))


def _parts(where: str | Path) -> dict[str, bytes]:
    """Every part's bytes plus the manifest's file list (names, rows, sizes, hashes)."""
    manifest = ds.read_manifest(where)
    return {fs.name_of(p): fs.read_bytes(p) for p in ds.part_paths(where, manifest)} | {
        "(files)": json.dumps(manifest["files"]).encode()
    }


def _column(where: str | Path, name: str) -> list:
    return [v for p in ds.part_paths(where) for v in pq.read_table(p).column(name).to_pylist()]


def _texts(where: str | Path) -> list[tuple[str, str]]:
    return list(zip(_column(where, "doc_id"), _column(where, "text"), strict=True))


@pytest.fixture(autouse=True)
def clean_memory_fs():
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    mem.store.clear()
    mem.pseudo_dirs[:] = [""]
    yield
    mem.store.clear()
    mem.pseudo_dirs[:] = [""]


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: one unsharded run of clean -> segment -> build-vocab -> make-shards."""
    d = tmp_path_factory.mktemp("ref")
    corpus = _corpus(d / "corpus.txt")
    invoke_json("clean", corpus, "-o", d / "docs", *CLEAN)
    invoke_json("segment", d / "docs", "-o", d / "words")
    invoke_json("build-vocab", d / "words", "-o", d / "vocab", "--wordpiece-size", "0")
    invoke_json(
        "make-shards",
        d / "words",
        "--vocab",
        d / "vocab",
        "-o",
        d / "shards",
        "--max-seq-len",
        "32",
    )
    parts = {k: _parts(d / k) for k in ("docs", "words", "shards")}
    assert len(parts["docs"]) > 4, "the corpus should make several parts"
    return {"dir": d, "corpus": corpus, "vocab": d / "vocab", "parts": parts}


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_clean_two_shards_into_one_dir(ref: dict, tmp_path: Path, order: tuple[int, int]) -> None:
    out = tmp_path / "docs"
    first, second = order
    s = invoke_json("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(first))
    assert s["dataset"] == (f"1 of 2 shards finished; 1 still missing (indices {second})"), s
    assert (out / ds.shard_manifest_name(first, 2)).is_file()
    assert not (out / ds.MANIFEST).exists()
    # The next stage refuses the half-finished dataset with one clear line.
    r = invoke("segment", out, "-o", tmp_path / "words")
    one_error_line(r, "only 1 of 2 shards are finished", f"missing shard indices {second}")

    s = invoke_json("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(second))
    assert s["dataset"].startswith("complete"), s
    # The merged figures are the whole dataset's.
    assert s["rows_out"] == ds.read_manifest(ref["dir"] / "docs")["rows"]
    assert _parts(out) == ref["parts"]["docs"]
    merged = ds.read_manifest(out)
    assert merged["num_shards"] == 2 and merged["total_parts"] == len(merged["files"])
    assert merged["stats"]["rows_in"] == ds.read_manifest(ref["dir"] / "docs")["stats"]["rows_in"]
    invoke_json("segment", out, "-o", tmp_path / "words")
    assert _parts(tmp_path / "words") == ref["parts"]["words"]


def test_clean_shards_with_dedup_sum_up(ref: dict, tmp_path: Path) -> None:
    """With dedup each shard de-duplicates only its own units: the merged manifest sums them."""
    out = tmp_path / "docs"
    shards = [
        invoke_json("clean", ref["corpus"], "-o", out, "--chunk-mb", "0.002", *_shard(i))
        for i in (0, 1)
    ]
    merged = ds.read_manifest(out)
    one = [json.loads((out / ds.shard_manifest_name(i, 2)).read_text()) for i in (0, 1)]
    assert merged["rows"] == sum(m["rows"] for m in one) == shards[1]["rows_out"]
    assert merged["stats"]["rows_in"] == sum(m["stats"]["rows_in"] for m in one)
    assert [f["name"] for f in merged["files"]] == sorted(
        f["name"] for m in one for f in m["files"]
    )


def test_segment_and_make_shards_as_shards(ref: dict, tmp_path: Path) -> None:
    docs = ref["dir"] / "docs"
    words = tmp_path / "words"
    for i in (1, 0):
        invoke_json("segment", docs, "-o", words, *_shard(i))
    assert _parts(words) == ref["parts"]["words"]
    shards = tmp_path / "shards"
    flags = ("--vocab", ref["vocab"], "--max-seq-len", "32")
    for n, i in enumerate((0, 2, 1)):
        s = invoke_json("make-shards", words, "-o", shards, *flags, *_shard(i, 3))
        assert ("complete" in s["dataset"]) == (n == 2), s
    assert _parts(shards) == ref["parts"]["shards"]


def test_overwrite_and_resume_touch_only_their_shard(ref: dict, tmp_path: Path) -> None:
    out = tmp_path / "docs"
    for i in (0, 1):
        invoke_json("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(i))
    shard0 = {
        p.name: p.stat().st_mtime_ns for p in out.glob("part-*") if int(p.name[5:10]) % 2 == 0
    }
    # Shard 1 again without a flag: refused, nothing deleted.
    r = invoke("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(1))
    one_error_line(r, "shard 1 of 2 already has files here", "--overwrite")
    assert (out / ds.MANIFEST).is_file()
    # --overwrite replaces shard 1's files only.
    invoke_json("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(1), "--overwrite")
    assert {n: (out / n).stat().st_mtime_ns for n in shard0} == shard0
    assert _parts(out) == ref["parts"]["docs"]
    # An interrupted shard 0 (one part lost): --resume redoes just that part and re-merges.
    lost = sorted(shard0)[-1]
    (out / lost).unlink()
    r = invoke("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(0))
    one_error_line(r, "shard 0 of 2 already has files here")
    s = invoke_json("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(0), "--resume")
    assert s["units_resumed"] == len(shard0) - 1 and s["dataset"].startswith("complete")
    assert {n: (out / n).stat().st_mtime_ns for n in shard0 if n != lost} == {
        n: t for n, t in shard0.items() if n != lost
    }
    assert _parts(out) == ref["parts"]["docs"]


def test_resume_drops_a_stale_merged_manifest(ref: dict, tmp_path: Path) -> None:
    out = tmp_path / "words"
    docs = ref["dir"] / "docs"
    for i in (0, 1):
        invoke_json("segment", docs, "-o", out, *_shard(i))
    assert (out / ds.MANIFEST).is_file()
    # A re-run of one shard makes the merged manifest stale: it goes until the shard finishes.
    (out / "part-00001.parquet").unlink()
    ds.prepare_output(out, resume=True, shard=(1, 2))
    assert not (out / ds.MANIFEST).exists()
    assert not (out / ds.shard_manifest_name(1, 2)).exists()
    assert (out / ds.shard_manifest_name(0, 2)).exists()
    r = invoke("make-shards", out, "--vocab", ref["vocab"], "-o", tmp_path / "sh")
    one_error_line(r, "only 1 of 2 shards are finished", "missing shard indices 1")
    invoke_json("segment", docs, "-o", out, *_shard(1), "--resume")
    assert _parts(out) == ref["parts"]["words"]


def test_shards_with_other_options_refuse_to_merge(ref: dict, tmp_path: Path) -> None:
    out = tmp_path / "docs"
    invoke_json("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(0))
    r = invoke("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(1), "--min-chars", "3")
    line = one_error_line(
        r, ds.shard_manifest_name(0, 2), ds.shard_manifest_name(1, 2), "different config"
    )
    assert "--overwrite" in line
    assert not (out / ds.MANIFEST).exists()
    # The next stage says the merge failed rather than that shards are missing.
    r = invoke("segment", out, "-o", tmp_path / "words")
    one_error_line(r, "all 2 shards are finished", "merge failed")
    # Redoing the odd shard with the same options repairs the dataset.
    invoke_json("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(1), "--overwrite")
    assert _parts(out) == ref["parts"]["docs"]


def test_shards_agree_on_content_not_on_paths(ref: dict, tmp_path: Path) -> None:
    """Machines that mount the inputs at different places (or read them by URL) still merge:
    shards compare what the corpus, the input dataset and the vocab hold, not their paths."""
    elsewhere = tmp_path / "mnt"
    shutil.copytree(ref["dir"], elsewhere)
    corpora = (ref["corpus"], elsewhere / "corpus.txt")
    docs = tmp_path / "docs"
    for i in (0, 1):
        invoke_json("clean", corpora[i], "-o", docs, *CLEAN, *_shard(i))
    # Same documents; only the provenance column says which path each machine read.
    assert _texts(docs) == _texts(ref["dir"] / "docs")
    assert {s for s in _column(docs, "source")} == {str(c) for c in corpora}
    words = tmp_path / "words"
    inputs = (ref["dir"] / "docs", (elsewhere / "docs").as_uri())
    for i in (1, 0):
        invoke_json("segment", inputs[i], "-o", words, *_shard(i))
    assert _parts(words) == ref["parts"]["words"]
    shards = tmp_path / "shards"
    vocabs = (ref["vocab"], elsewhere / "vocab")
    for i in (0, 1):
        flags = ("--vocab", vocabs[i], "--max-seq-len", "32")
        invoke_json("make-shards", words, "-o", shards, *flags, *_shard(i))
    assert _parts(shards) == ref["parts"]["shards"]

    # A corpus that is not the same (one more line) refuses to merge, naming both shards.
    other = tmp_path / "other" / "corpus.txt"
    other.parent.mkdir()
    other.write_text(ref["corpus"].read_text(encoding="utf-8") + "又一行新的文本内容。\n")
    out = tmp_path / "docs2"
    invoke_json("clean", ref["corpus"], "-o", out, *CLEAN, *_shard(0))
    r = invoke("clean", other, "-o", out, *CLEAN, *_shard(1))
    one_error_line(r, ds.shard_manifest_name(0, 2), ds.shard_manifest_name(1, 2))
    assert not (out / ds.MANIFEST).exists()


def test_shards_on_a_memory_url(ref: dict) -> None:
    docs, words = "memory://sharded/docs", "memory://sharded/words"
    for i in (1, 0):
        invoke_json("clean", ref["corpus"], "-o", docs, *CLEAN, *_shard(i))
    assert _parts(docs) == ref["parts"]["docs"]
    invoke_json("segment", docs, "-o", words, *_shard(0))
    r = invoke("make-shards", words, "--vocab", ref["vocab"], "-o", "memory://sharded/sh")
    one_error_line(r, "only 1 of 2 shards are finished", "missing shard indices 1")
    invoke_json("segment", docs, "-o", words, *_shard(1))
    assert _parts(words) == ref["parts"]["words"]
    store = pytest.importorskip("fsspec").filesystem("memory").store
    assert not any(".tmp-" in k for k in store)
