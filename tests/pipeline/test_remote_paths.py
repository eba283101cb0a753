"""Stage datasets on URLs: memory:// (fsspec) and file:// (pyarrow) give the local bytes.

The whole corpus chain (clean -> segment -> build-vocab -> make-shards) runs once on local
paths, once with every dataset on ``memory://`` and once on ``file://`` URLs with two workers;
parts and manifest file lists must match. Then --resume/--overwrite, incomplete and unknown
locations, and pretrain/eval reading ``memory://`` shards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from albertzh.config import PathOrURL, StageConfig
from albertzh.data import dataset as ds
from albertzh.data import fs
from albertzh.errors import DatasetError
from tests.cli.conftest import (
    invoke,
    invoke_json,
    one_error_line,
    write_corpus,
)

fsspec = pytest.importorskip("fsspec")


def _memory() -> object:
    return fsspec.filesystem("memory")


@pytest.fixture(autouse=True)
def clean_memory_fs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """fsspec's memory filesystem is one global store: start and end every test empty.

    The tests also run in an empty working directory, so a URL that collapsed into a local
    path (``memory:/x``) would show up there."""
    mem = _memory()
    mem.store.clear()
    mem.pseudo_dirs[:] = [""]
    monkeypatch.chdir(tmp_path)
    yield
    mem.store.clear()
    mem.pseudo_dirs[:] = [""]
    assert not list(tmp_path.glob("*:*")), "a URL was written as a local path"


def _corpus(path: Path) -> Path:
    return write_corpus(path, n_docs=80, seed=3)


def _chain(base: str, corpus: Path, vocab: Path, workers: int = 1) -> dict[str, str]:
    """clean -> segment -> build-vocab -> make-shards with every dataset under ``base``
    (a local directory or a URL); the vocab directory is local."""
    d = {name: f"{base}/{name}" for name in ("docs", "words", "shards")}
    w = ("--workers", workers)
    invoke_json("clean", corpus, "-o", d["docs"], "--chunk-mb", "0.002", *w)
    invoke_json("segment", d["docs"], "-o", d["words"], *w)
    invoke_json("build-vocab", d["words"], "-o", vocab, "--wordpiece-size", "0")
    invoke_json(
        "make-shards", d["words"], "--vocab", vocab, "-o", d["shards"], "--max-seq-len", "32", *w
    )
    return d


def _parts(where: str) -> dict[str, bytes]:
    manifest = ds.read_manifest(where)
    return {fs.name_of(p): fs.read_bytes(p) for p in ds.part_paths(where, manifest)} | {
        "(files)": json.dumps(manifest["files"]).encode()
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: the chain on local paths."""
    root_dir = tmp_path_factory.mktemp("local")
    corpus = _corpus(root_dir / "corpus.txt")
    d = _chain(str(root_dir), corpus, root_dir / "vocab")
    parts = {k: _parts(v) for k, v in d.items()}
    assert len(parts["docs"]) > 3, "the corpus should make several parts"
    return {"corpus": corpus, "vocab": root_dir / "vocab", "parts": parts}


def test_chain_on_memory_urls_matches_local(local_run: dict, tmp_path: Path) -> None:
    d = _chain("memory://chain", local_run["corpus"], tmp_path / "vocab")
    for name, url in d.items():
        assert _parts(url) == local_run["parts"][name], name
    store = _memory().store
    assert "/chain/shards/manifest.json" in store and "/chain/docs/part-00000.parquet" in store
    assert not any(".tmp-" in k for k in store), "temporary names were moved into place"
    assert (tmp_path / "vocab" / "vocab.txt").read_bytes() == (
        local_run["vocab"] / "vocab.txt"
    ).read_bytes()
    # The manifests record the URLs they read, intact.
    assert ds.read_manifest(d["words"])["inputs"] == [d["docs"]]
    assert ds.read_manifest(d["shards"])["inputs"][0] == d["words"]


def test_chain_on_file_urls_with_two_workers(local_run: dict, tmp_path: Path) -> None:
    base = (tmp_path / "remote").as_uri()
    d = _chain(base, local_run["corpus"], tmp_path / "vocab", workers=2)
    for name, url in d.items():
        assert _parts(url) == local_run["parts"][name], name
    assert (tmp_path / "remote" / "shards" / "manifest.json").is_file()
    assert not list((tmp_path / "remote").rglob(".*.tmp-*"))


def test_resume_on_url_skips_complete_parts(local_run: dict, tmp_path: Path) -> None:
    d = _chain("memory://r", local_run["corpus"], tmp_path / "vocab")
    mem = _memory()
    for name, flags in (
        ("docs", ["clean", local_run["corpus"], "--chunk-mb", "0.002"]),
        ("words", ["segment", d["docs"]]),
        ("shards", ["make-shards", d["words"], "--vocab", tmp_path / "vocab"]),
    ):
        # An interrupted run: no manifest, the last part missing, a stale temp file.
        files = ds.read_manifest(d[name])["files"]
        mem.rm(f"/r/{name}/manifest.json")
        mem.rm(f"/r/{name}/{files[-1]['name']}")
        mem.pipe(f"/r/{name}/.{files[-1]['name']}.tmp-1", b"half")
        with pytest.raises(DatasetError, match=f"memory://r/{name}: no manifest.json"):
            ds.read_manifest(d[name])
        extra = ["--max-seq-len", "32"] if name == "shards" else []
        s = invoke_json(*flags, "-o", d[name], "--resume", *extra)
        resumed = {
            "docs": lambda s: s["units_resumed"],
            "words": lambda s: s["parts_resumed"],
            "shards": lambda s: s["parts"]["skipped"],
        }[name](s)
        assert resumed == len(files) - 1, (name, s)
        assert _parts(d[name]) == local_run["parts"][name], name
        assert not [k for k in mem.store if k.startswith(f"/r/{name}/.")]


def test_non_empty_url_output_needs_resume_or_overwrite(local_run: dict) -> None:
    url = "memory://busy/docs"
    invoke_json("clean", local_run["corpus"], "-o", url)
    r = invoke("clean", local_run["corpus"], "-o", url)
    one_error_line(r, url, "not empty", "--resume", "--overwrite")
    _memory().pipe("/busy/docs/part-00099.parquet", b"old")
    invoke_json("clean", local_run["corpus"], "-o", url, "--overwrite")
    assert "/busy/docs/part-00099.parquet" not in _memory().store
    assert ds.read_manifest(url)["rows"] > 0


def test_incomplete_or_missing_url_dataset_is_refused(local_run: dict) -> None:
    mem = _memory()
    mem.pipe("/half/words/part-00000.parquet", b"not parquet")
    with pytest.raises(DatasetError, match=r"memory://half/words: no manifest\.json"):
        ds.read_manifest("memory://half/words")
    r = invoke("make-shards", "memory://half/words", "--vocab", local_run["vocab"], "-o", "out")
    one_error_line(r, "memory://half/words: no manifest.json")
    r = invoke("segment", "memory://nothing/docs", "-o", "memory://nothing/words")
    one_error_line(r, "memory://nothing/docs: no such directory")
    with pytest.raises(DatasetError, match="got a file"):
        ds.read_manifest("memory://half/words/part-00000.parquet")


def test_unknown_scheme_is_one_error_line(local_run: dict) -> None:
    r = invoke("clean", local_run["corpus"], "-o", "nosuch://x/docs")
    one_error_line(r, "nosuch://x/docs", "cannot open this URL")
    r = invoke("segment", "nosuch://x/docs", "-o", "words")
    one_error_line(r, "nosuch://x/docs", "cannot open this URL")
    r = invoke("clean", "nosuch://x/in.txt", "-o", "docs")
    one_error_line(r, "nosuch://x/in.txt", "cannot open this URL")
    with pytest.raises(DatasetError, match="nosuch://x: cannot open this URL"):
        fs.resolve("nosuch://x")


def test_without_fsspec_only_pyarrow_schemes_open(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec -> ImportError
    with pytest.raises(DatasetError, match="memory://no-fsspec/x: .*install fsspec"):
        fs.resolve("memory://no-fsspec/x")
    assert fs.kind((tmp_path).as_uri()) == "dir"


def test_url_fields_stay_intact() -> None:
    class Cfg(StageConfig):
        where: PathOrURL
        maybe: PathOrURL | None = None

    c = Cfg(where="s3://bucket/a/b", maybe="rel/dir")
    assert c.where == "s3://bucket/a/b" and c.maybe == Path("rel/dir")
    assert Cfg.model_validate_json(c.model_dump_json()) == c
    r = invoke("segment", "gs://b/docs", "-o", "s3://b/words", "--print-config")
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.stdout)
    assert cfg["input"] == "gs://b/docs" and cfg["output"] == "s3://b/words"
    r = invoke("pretrain", "--data", "memory://x/shards", "-o", "run", "--print-config")
    assert json.loads(r.stdout)["data"] == "memory://x/shards"


def test_location_helpers() -> None:
    assert fs.location("memory://a/b") == "memory://a/b"
    assert fs.location("a/b") == Path("a/b") and fs.location(Path("x")) == Path("x")
    assert fs.location("C://x") == Path("C://x")  # a drive letter is not a scheme
    assert fs.join("s3://b/d/", "m.json") == "s3://b/d/m.json"
    assert fs.join("s3://b/d?region=x", "m.json") == "s3://b/d/m.json?region=x"
    assert fs.name_of("s3://b/d/part-00001.parquet?region=x") == "part-00001.parquet"
    tmp = fs.tmp_for("memory://d/manifest.json")
    assert tmp.startswith("memory://d/.manifest.json.tmp-")
    assert fs.join(Path("d"), "x") == Path("d/x")


def _pretrain_helpers():
    from tests.train import test_instances as helpers

    return helpers


def test_pretrain_and_eval_read_memory_shards(tmp_path: Path) -> None:
    h = _pretrain_helpers()
    make_vocab, vocab_info, write_instances = h.make_vocab, h.vocab_info, h.write_instances
    vocab = make_vocab(tmp_path / "vocab")
    (tmp_path / "tiny.json").write_text(json.dumps(h.TINY_MODEL))
    url = "memory://pt/shards"
    for where in (tmp_path / "shards", url):
        write_instances(where, 48, vocab=vocab_info(vocab), vocab_dir=vocab, max_len=30)
    assert _parts(url) == _parts(str(tmp_path / "shards"))

    def pretrain(data: object, out: str) -> dict:
        return invoke_json(
            "pretrain", "--data", data, "-o", tmp_path / out, "--model-config",
            tmp_path / "tiny.json", "--steps", "2", "--batch-size", "8", "--eval-data", data,
            "--eval-batches", "1", "--eval-every", "2", "--device", "cpu", "--seed", "1",
        )  # fmt: skip

    remote, local = pretrain(url, "remote"), pretrain(tmp_path / "shards", "local")
    assert remote["steps"] == 2 and remote["eval_last"] == local["eval_last"]
    assert remote["weights_sha256"] == local["weights_sha256"]
    s = invoke_json(
        "eval", "--model", tmp_path / "remote", "--shards", url, "--max-batches", "1",
        "--device", "cpu",
    )  # fmt: skip
    assert s["shards"] == url and s["instances"] > 0
