"""--resume keeps a part only if it was made from the same inputs and options (issue 11, item 3).

Each part's footer records its origin (stage, options, what its inputs hold); a resumed clean,
segment or make-shards refuses, in one line naming the part and what differs, before it
touches the output. Every case is run as the user would: ``albertzh ... --resume``.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from albertzh.data import dataset as ds
from tests.cli.conftest import SENTENCES, invoke, invoke_json, one_error_line, write_corpus

OTHER_SENTENCES = [s[::-1] for s in SENTENCES]  # other text, other characters' order


def tree_digest(*dirs: Path) -> str:
    """A hash of every file (relative name and bytes) under ``dirs``."""
    h = hashlib.sha256()
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(d)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two corpora cleaned and segmented, two vocabs, and shards of the first (several parts)."""
    tmp = tmp_path_factory.mktemp("chain")
    d = {
        "corpus": write_corpus(tmp / "a.txt", n_docs=60, seed=1),
        "corpus_b": write_corpus(tmp / "b.txt", n_docs=60, seed=2, sentences=OTHER_SENTENCES),
    }
    for name in ("docs", "docs_b", "words", "words_b", "vocab", "vocab2", "shards"):
        d[name] = tmp / name
    invoke_json("clean", d["corpus"], "-o", d["docs"], "--chunk-mb", "0.002")
    invoke_json("clean", d["corpus_b"], "-o", d["docs_b"], "--chunk-mb", "0.002")
    invoke_json("segment", d["docs"], "-o", d["words"])
    invoke_json("segment", d["docs_b"], "-o", d["words_b"])
    invoke_json("build-vocab", d["words"], "-o", d["vocab"], "--wordpiece-size", "0")
    invoke_json(
        "build-vocab", d["words"], "-o", d["vocab2"], "--wordpiece-size", "0", "--max-size", "200"
    )
    invoke_json(
        "make-shards", d["words"], "--vocab", d["vocab"], "-o", d["shards"], "--max-seq-len", "32"
    )
    assert len(ds.read_manifest(d["shards"])["files"]) >= 4
    return d


def interrupted(src: Path, dst: Path, drop_last: int = 2) -> Path:
    """A copy of a finished dataset as a killed run leaves it: no manifest, last parts missing."""
    shutil.copytree(src, dst)
    (dst / "manifest.json").unlink()
    for p in sorted(dst.glob("part-*.parquet"))[-drop_last:]:
        p.unlink()
    return dst


SHARDS = ("make-shards", "--max-seq-len", "32")


# --------------------------------------------------------------------------- make-shards


@pytest.mark.parametrize(
    ("flags", "differs"),
    [
        (["--vocab", "{vocab2}", "--max-seq-len", "32"], "--vocab"),
        (["--vocab", "{vocab}", "--max-seq-len", "64"], "--max-seq-len"),
        (["--vocab", "{vocab}", "--max-seq-len", "32", "--seed", "7"], "--seed"),
        (["--vocab", "{vocab}", "--max-seq-len", "32", "--masking", "static"], "--masking"),
    ],
)
def test_make_shards_resume_with_other_options_is_refused(
    chain: dict[str, Path], tmp_path: Path, flags: list[str], differs: str
) -> None:
    out = interrupted(chain["shards"], tmp_path / "shards")
    before = tree_digest(out)
    flags = [f.format(**{k: str(v) for k, v in chain.items()}) for f in flags]
    r = invoke("make-shards", chain["words"], *flags, "-o", out, "--resume")
    one_error_line(r, "part-00000.parquet", "written with other make-shards options", differs)
    assert tree_digest(out) == before  # refused before the output was touched


def test_make_shards_resume_with_other_words_is_refused(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    out = interrupted(chain["shards"], tmp_path / "shards")
    before = tree_digest(out)
    r = invoke(
        *SHARDS[:1], chain["words_b"], "--vocab", chain["vocab"], *SHARDS[1:], "-o", out, "--resume"
    )
    one_error_line(r, "part-00000.parquet", "input")
    assert tree_digest(out) == before


def test_make_shards_resume_with_same_options_gives_the_same_bytes(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    out = interrupted(chain["shards"], tmp_path / "shards")
    # --workers and --verify are run-only: they never change the parts.
    s = invoke_json(
        "make-shards", chain["words"], "--vocab", chain["vocab"], "-o", out, "--max-seq-len",
        "32", "--resume", "--workers", "2", "--verify",
    )  # fmt: skip
    assert s["parts"]["skipped"] > 0 and s["parts"]["written"] == 2
    want = ds.read_manifest(chain["shards"])["files"]
    assert ds.read_manifest(out)["files"] == want


def test_resume_refuses_a_part_without_origin(chain: dict[str, Path], tmp_path: Path) -> None:
    # A part written by an older albertzh (or by hand): nothing says what it was made from.
    out = interrupted(chain["shards"], tmp_path / "shards")
    table = pa.table({"input_ids": pa.array([[1, 2]], pa.list_(pa.int32()))})
    ds.write_part(out, 1, table)
    r = invoke(
        "make-shards", chain["words"], "--vocab", chain["vocab"], "-o", out, "--max-seq-len",
        "32", "--resume",
    )  # fmt: skip
    one_error_line(r, "part-00001.parquet", "no record of the options and inputs")


def test_resume_refuses_a_part_the_input_cannot_make(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    out = interrupted(chain["shards"], tmp_path / "shards", drop_last=1)
    shutil.copy(out / "part-00000.parquet", out / "part-00099.parquet")
    r = invoke(
        "make-shards", chain["words"], "--vocab", chain["vocab"], "-o", out, "--max-seq-len",
        "32", "--resume",
    )  # fmt: skip
    one_error_line(r, "part-00099.parquet", "the input makes only")


def test_resume_refuses_a_truncated_part(chain: dict[str, Path], tmp_path: Path) -> None:
    out = interrupted(chain["shards"], tmp_path / "shards")
    p = out / "part-00001.parquet"
    p.write_bytes(p.read_bytes()[:-100])
    before = tree_digest(out)
    r = invoke(
        "make-shards", chain["words"], "--vocab", chain["vocab"], "-o", out, "--max-seq-len",
        "32", "--resume",
    )  # fmt: skip
    one_error_line(r, "part-00001.parquet", "not a readable Parquet part")
    assert tree_digest(out) == before


# --------------------------------------------------------------------------- segment


@pytest.mark.parametrize(
    ("flags", "differs"),
    [(["--no-hmm"], "--hmm"), (["--user-dict", "{user_dict}"], "--user-dict")],
)
def test_segment_resume_with_other_options_is_refused(
    chain: dict[str, Path], tmp_path: Path, flags: list[str], differs: str
) -> None:
    user_dict = tmp_path / "user.dict"
    user_dict.write_text("天气很好 100 n\n", encoding="utf-8")
    out = interrupted(chain["words"], tmp_path / "words")
    before = tree_digest(out)
    flags = [f.format(user_dict=user_dict) for f in flags]
    r = invoke("segment", chain["docs"], "-o", out, "--resume", *flags)
    one_error_line(r, "part-00000.parquet", "written with other segment options", differs)
    assert tree_digest(out) == before


def test_segment_resume_with_another_user_dict_content_is_refused(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    user_dict = tmp_path / "user.dict"
    user_dict.write_text("天气很好 100 n\n", encoding="utf-8")
    invoke_json("segment", chain["docs"], "-o", tmp_path / "words", "--user-dict", user_dict)
    out = interrupted(tmp_path / "words", tmp_path / "cut")
    # Same path, other words in it: the user dict counts by what it holds.
    user_dict.write_text("公园散步 100 n\n", encoding="utf-8")
    r = invoke("segment", chain["docs"], "-o", out, "--resume", "--user-dict", user_dict)
    one_error_line(r, "part-00000.parquet", "--user-dict")


def test_segment_resume_with_another_corpus_is_refused(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    out = interrupted(chain["words"], tmp_path / "words")
    before = tree_digest(out)
    r = invoke("segment", chain["docs_b"], "-o", out, "--resume")
    one_error_line(r, "part-00000.parquet", "written with other segment options", "input")
    assert tree_digest(out) == before


def test_segment_resume_into_a_docs_dataset_is_refused(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    # `segment d2 -o d2 --resume` used to turn a docs dataset into a broken words dataset.
    d2 = tmp_path / "d2"
    shutil.copytree(chain["docs"], d2)
    before = tree_digest(d2)
    r = invoke("segment", d2, "-o", d2, "--resume")
    one_error_line(r, str(d2))
    assert tree_digest(d2) == before
    # The same with the docs dataset as the output only: its parts are clean's, not segment's.
    w = tmp_path / "w"
    shutil.copytree(chain["docs"], w)
    before = tree_digest(w)
    r = invoke("segment", chain["docs"], "-o", w, "--resume")
    one_error_line(r, "part-00000.parquet", "written by clean, not by segment")
    assert tree_digest(w) == before


def test_segment_resume_with_run_only_changes_keeps_parts(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    out = interrupted(chain["words"], tmp_path / "words")
    s = invoke_json(
        "segment", chain["docs"], "-o", out, "--resume", "--batch-docs", "3", "--workers", "2"
    )
    assert s["parts_resumed"] > 0
    assert ds.read_manifest(out)["files"] == ds.read_manifest(chain["words"])["files"]


# --------------------------------------------------------------------------- clean


def test_clean_resume_names_what_differs(chain: dict[str, Path], tmp_path: Path) -> None:
    out = interrupted(chain["docs"], tmp_path / "docs")
    before = tree_digest(out)
    r = invoke("clean", chain["corpus"], "-o", out, "--chunk-mb", "0.002", "--resume", "--no-nfkc")
    one_error_line(r, "part-00000.parquet", "written with other clean options", "--nfkc")
    r = invoke("clean", chain["corpus_b"], "-o", out, "--chunk-mb", "0.002", "--resume")
    one_error_line(r, "part-00000.parquet", "inputs")
    assert tree_digest(out) == before
    s = invoke_json("clean", chain["corpus"], "-o", out, "--chunk-mb", "0.002", "--resume")
    assert s["units_resumed"] > 0
    assert ds.read_manifest(out)["files"] == ds.read_manifest(chain["docs"])["files"]
