"""Every reader checks its input dataset (issue 11, item 4; a manifest without files, item 6).

Always, cheaply: the manifest's file list (well formed, names inside the directory), each
part's size and row count against it, its schema. With ``--verify``: each part's sha256. A
bad part is one line naming it, exit 2, and the inputs stay as they were. The last test feeds
random damage (seeded) to every reader.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from albertzh.data import dataset as ds
from albertzh.errors import DatasetError
from albertzh.train.instances import InstanceData
from tests.cli.conftest import SENTENCES, invoke, invoke_json, one_error_line, write_corpus

OTHER_SENTENCES = [s[::-1] for s in SENTENCES]


def tree_digest(*dirs: Path) -> str:
    """A hash of every file (relative name and bytes) under ``dirs``."""
    h = hashlib.sha256()
    for d in dirs:
        d = Path(d)
        for p in sorted(d.rglob("*")) if d.is_dir() else [d]:
            if p.is_file():
                h.update(str(p.relative_to(d) if d.is_dir() else p.name).encode() + b"\0")
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """docs -> words -> vocab -> shards of one corpus, and docs/words/shards of another."""
    tmp = tmp_path_factory.mktemp("chain")
    d: dict[str, Path] = {
        "corpus": write_corpus(tmp / "a.txt", n_docs=60, seed=1),
        "corpus_b": write_corpus(tmp / "b.txt", n_docs=60, seed=2, sentences=OTHER_SENTENCES),
        "vocab": tmp / "vocab",
    }
    for suffix, corpus in (("", d["corpus"]), ("_b", d["corpus_b"])):
        docs, words, shards = (tmp / f"{n}{suffix}" for n in ("docs", "words", "shards"))
        invoke_json("clean", corpus, "-o", docs, "--chunk-mb", "0.002")
        invoke_json("segment", docs, "-o", words)
        if not suffix:
            invoke_json("build-vocab", words, "-o", d["vocab"], "--wordpiece-size", "0")
        invoke_json(
            "make-shards", words, "--vocab", d["vocab"], "-o", shards, "--max-seq-len", "32"
        )
        d |= {f"docs{suffix}": docs, f"words{suffix}": words, f"shards{suffix}": shards}
    return d


def copy(chain: dict[str, Path], name: str, tmp: Path) -> Path:
    return Path(shutil.copytree(chain[name], tmp / name))


# Each reader: the dataset it reads and the command line (``{data}``, ``{out}``, ``{vocab}``).
READERS: dict[str, tuple[str, list[str]]] = {
    "segment": ("docs", ["segment", "{data}", "-o", "{out}"]),
    "build-vocab": ("words", ["build-vocab", "{data}", "-o", "{out}", "--wordpiece-size", "0"]),
    "make-shards": (
        "words",
        ["make-shards", "{data}", "--vocab", "{vocab}", "-o", "{out}", "--max-seq-len", "32"],
    ),
    "pretrain": (
        "shards",
        ["pretrain", "--data", "{data}", "-o", "{out}", "--size", "tiny", "--device", "cpu"],
    ),
}


def run_reader(reader: str, data: Path | str, chain: dict[str, Path], out: Path, *extra: str):
    args = [a.format(data=data, out=out, vocab=chain["vocab"]) for a in READERS[reader][1]]
    return invoke(*args, *extra)


def edit_manifest(data: Path, fn: Callable[[dict], object]) -> None:
    m = json.loads((data / "manifest.json").read_text())
    fn(m)
    (data / "manifest.json").write_text(json.dumps(m))


# --------------------------------------------------------------------------- damaged parts


@pytest.mark.parametrize("reader", sorted(READERS))
def test_truncated_part_is_one_line(chain: dict[str, Path], tmp_path: Path, reader: str) -> None:
    data = copy(chain, READERS[reader][0], tmp_path)
    part = data / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:-200])
    before = tree_digest(data)
    r = run_reader(reader, data, chain, tmp_path / "out")
    one_error_line(r, "part-00001.parquet", "bytes, the manifest says")
    assert tree_digest(data) == before


@pytest.mark.parametrize("reader", sorted(READERS))
def test_part_from_another_corpus_is_one_line(
    chain: dict[str, Path], tmp_path: Path, reader: str
) -> None:
    kind = READERS[reader][0]
    data = copy(chain, kind, tmp_path)
    shutil.copy(chain[f"{kind}_b"] / "part-00001.parquet", data / "part-00001.parquet")
    r = run_reader(reader, data, chain, tmp_path / "out")
    one_error_line(r, "part-00001.parquet", "the manifest says")


@pytest.mark.parametrize("reader", sorted(READERS))
def test_verify_catches_a_same_size_change(
    chain: dict[str, Path], tmp_path: Path, reader: str
) -> None:
    data = copy(chain, READERS[reader][0], tmp_path)
    part = data / "part-00000.parquet"
    raw = bytearray(part.read_bytes())
    raw[40] ^= 0xFF  # inside the first data page: the size and footer stay valid
    part.write_bytes(bytes(raw))
    before = tree_digest(data)
    r = run_reader(reader, data, chain, tmp_path / "out", "--verify")
    one_error_line(r, "part-00000.parquet", "sha256 differs from the manifest")
    assert tree_digest(data) == before


def test_rows_that_disagree_with_the_manifest(chain: dict[str, Path], tmp_path: Path) -> None:
    # A part rewritten with fewer rows whose manifest entry was patched for size and hash only.
    data = copy(chain, "words", tmp_path)
    part = data / "part-00002.parquet"
    table = pq.read_table(part)
    pq.write_table(table.slice(0, table.num_rows - 1), part)

    def patch(m: dict) -> None:
        entry = m["files"][2]
        entry["bytes"], entry["sha256"] = part.stat().st_size, ds.sha256_file(part)

    edit_manifest(data, patch)
    r = run_reader("make-shards", data, chain, tmp_path / "out")
    one_error_line(r, "part-00002.parquet", f"{table.num_rows - 1} rows, the manifest says")


def test_instance_data_checks_and_verifies(chain: dict[str, Path], tmp_path: Path) -> None:
    data = copy(chain, "shards", tmp_path)
    InstanceData(data, verify=True)
    part = data / "part-00000.parquet"
    raw = bytearray(part.read_bytes())
    raw[40] ^= 0xFF
    part.write_bytes(bytes(raw))
    InstanceData(data)  # size, rows and schema still agree: only the hash tells
    with pytest.raises(DatasetError, match=r"part-00000\.parquet: sha256 differs"):
        InstanceData(data, verify=True)


def test_clean_resume_with_a_truncated_kept_part(chain: dict[str, Path], tmp_path: Path) -> None:
    out = copy(chain, "docs", tmp_path)
    (out / "manifest.json").unlink()
    part = out / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:-50])
    before = tree_digest(out, chain["corpus"])
    r = invoke("clean", chain["corpus"], "-o", out, "--chunk-mb", "0.002", "--resume")
    one_error_line(r, "part-00001.parquet", "not a readable Parquet part")
    assert tree_digest(out, chain["corpus"]) == before


# --------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("reader", sorted(READERS))
def test_manifest_without_files_is_one_line(
    chain: dict[str, Path], tmp_path: Path, reader: str
) -> None:
    data = copy(chain, READERS[reader][0], tmp_path)
    edit_manifest(data, lambda m: m.pop("files"))
    r = run_reader(reader, data, chain, tmp_path / "out")
    one_error_line(r, "manifest.json", "no 'files' list")


@pytest.mark.parametrize(
    "name",
    ["../words_b/part-00000.parquet", "{abs}", "sub/../part-00000.parquet", "..", "a\\b.parquet"],
)
def test_manifest_names_stay_inside_the_dataset(
    chain: dict[str, Path], tmp_path: Path, name: str
) -> None:
    data = copy(chain, "words", tmp_path)
    other = copy(chain, "words_b", tmp_path) / "part-00000.parquet"
    name = name.format(abs=other)

    def point_outside(m: dict) -> None:
        # The entry matches the outside file exactly, so only its name gives it away.
        m["files"][0] = {
            "name": name,
            "rows": pq.read_metadata(other).num_rows,
            "bytes": other.stat().st_size,
            "sha256": ds.sha256_file(other),
        }
        m["rows"] = sum(f["rows"] for f in m["files"])

    edit_manifest(data, point_outside)
    r = run_reader("make-shards", data, chain, tmp_path / "out")
    one_error_line(r, "manifest.json", "not a plain file name inside")


def test_manifest_entries_are_checked(chain: dict[str, Path], tmp_path: Path) -> None:
    data = copy(chain, "words", tmp_path)
    edit_manifest(data, lambda m: m["files"][1].pop("sha256"))
    one_error_line(run_reader("build-vocab", data, chain, tmp_path / "o"), "files[1]", "'sha256'")
    data = copy(chain, "docs", tmp_path)
    edit_manifest(data, lambda m: m["files"].append(dict(m["files"][0])))
    one_error_line(run_reader("segment", data, chain, tmp_path / "o"), "listed twice")
    (data / "manifest.json").write_text("[1, 2]")
    one_error_line(run_reader("segment", data, chain, tmp_path / "o"), "not a JSON object")


def test_remote_dataset_is_checked_too(chain: dict[str, Path], tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    base = "/verify-test/words"
    try:
        for p in chain["words"].iterdir():
            mem.pipe(f"{base}/{p.name}", p.read_bytes())
        url = f"memory://{base}"
        ds.open_dataset(url, "segment", verify=True)
        raw = bytearray(mem.cat(f"{base}/part-00000.parquet"))
        raw[40] ^= 0xFF
        mem.pipe(f"{base}/part-00000.parquet", bytes(raw))
        # Size, rows and schema still agree (the data decodes): only --verify sees it.
        assert ds.open_dataset(url, "segment")[1]
        r = run_reader("build-vocab", url, chain, tmp_path / "v2", "--verify")
        one_error_line(r, f"{url}/part-00000.parquet", "sha256 differs")
        mem.pipe(f"{base}/part-00001.parquet", b"PAR1 truncated")
        r = run_reader("make-shards", url, chain, tmp_path / "s")
        one_error_line(r, f"{url}/part-00001.parquet", "bytes, the manifest says")
    finally:
        mem.rm("/verify-test", recursive=True)


# --------------------------------------------------------------------------- build-vocab, empty


def test_build_vocab_refuses_an_empty_dataset(chain: dict[str, Path], tmp_path: Path) -> None:
    empty = ds.prepare_output(tmp_path / "empty")
    ds.finish_output(empty, "segment", {"x": 1}, [])
    r = invoke("build-vocab", empty, "-o", tmp_path / "v")
    one_error_line(r, str(empty), "no rows", "nothing to build a vocab from")
    assert not list((tmp_path / "v").glob("vocab*"))  # no vocab written
    # A part with no rows is the same: no text.
    one_row = copy(chain, "words", tmp_path)
    for p in one_row.glob("part-*.parquet"):
        pq.write_table(pq.read_table(p).slice(0, 0), p)
    edit_manifest(
        one_row,
        lambda m: m.update(
            files=[
                {"name": f["name"], "rows": 0, "bytes": (one_row / f["name"]).stat().st_size,
                 "sha256": ds.sha256_file(one_row / f["name"])}
                for f in m["files"]
            ],
            rows=0,
        ),
    )  # fmt: skip
    one_error_line(invoke("build-vocab", one_row, "-o", tmp_path / "v"), "no rows")


def test_build_vocab_refuses_a_vocab_of_special_tokens_only(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    r = invoke("build-vocab", chain["words"], "-o", tmp_path / "v", "--min-freq", "1000000")
    one_error_line(r, "--min-freq 1000000", "only the special tokens")
    assert not list((tmp_path / "v").glob("vocab*"))  # no vocab written


# --------------------------------------------------------------------------- fuzz


def _other_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string(t):
        return pa.large_string()
    if pa.types.is_list(t):
        return pa.large_list(t.value_type)
    if pa.types.is_integer(t):
        return pa.int64() if t != pa.int64() else pa.int32()
    return pa.string()


def _rewrite(part: Path, table: pa.Table, data: Path, index: int, manifest: bool) -> None:
    """Write ``table`` over ``part`` and, with ``manifest``, make the manifest agree with it."""
    pq.write_table(table, part)
    if manifest:
        size, sha, rows = part.stat().st_size, ds.sha256_file(part), table.num_rows

        def patch(m: dict) -> None:
            m["files"][index].update(bytes=size, sha256=sha, rows=rows)
            m["rows"] = sum(f["rows"] for f in m["files"])

        edit_manifest(data, patch)


def _damage(kind: str, data: Path, rng: np.random.Generator, columns: list[str], manifest: bool):
    """Damage one part (or the manifest) of ``data``; returns whether ``--verify`` is needed."""
    parts = sorted(data.glob("part-*.parquet"))
    index = int(rng.integers(len(parts)))
    part = parts[index]
    raw = part.read_bytes()
    if kind == "truncate":
        part.write_bytes(raw[: int(rng.integers(0, len(raw)))])
    elif kind == "random_bytes":
        n = int(rng.integers(0, 2 * len(raw)))
        part.write_bytes(rng.bytes(n if n != len(raw) else n + 1))
    elif kind == "append":
        part.write_bytes(raw + rng.bytes(int(rng.integers(1, 64))))
    elif kind == "flip":
        buf = bytearray(raw)
        for pos in rng.integers(4, len(raw) - 8, size=int(rng.integers(1, 8))):
            buf[int(pos)] ^= int(rng.integers(1, 256))
        part.write_bytes(bytes(buf))
        return True
    elif kind in ("drop_column", "retype_column"):
        table = pq.read_table(part)
        meta = table.schema.metadata  # keep the footer's stats and origin
        col = columns[int(rng.integers(len(columns)))]
        if kind == "drop_column":
            table = table.drop_columns([col])
        else:
            i = table.schema.get_field_index(col)
            table = table.set_column(i, col, table.column(col).cast(_other_type(table[col].type)))
        _rewrite(part, table.replace_schema_metadata(meta), data, index, manifest)
    elif kind == "manifest":
        m = json.loads((data / "manifest.json").read_text())
        f = m["files"][index]
        what = ["rows", "bytes", "name", "drop_files", "garbage"][int(rng.integers(5))]
        if what in ("rows", "bytes"):
            f[what] += int(rng.integers(1, 1000))
        elif what == "name":
            f["name"] = ["../x.parquet", "/etc/passwd", "a/b.parquet", ".."][int(rng.integers(4))]
        elif what == "drop_files":
            del m["files"]
        if what == "garbage":
            (data / "manifest.json").write_bytes(rng.bytes(int(rng.integers(1, 200))))
        else:
            (data / "manifest.json").write_text(json.dumps(m))
    return False


ROUNDS = 3
FUZZ_KINDS = ["truncate", "random_bytes", "append", "flip", "drop_column", "retype_column"]
NEEDED = {  # the columns each reader relies on (a schema change elsewhere may be fine)
    "segment": ["doc_id", "text"],
    "build-vocab": ["sentences", "word_lens"],
    "make-shards": ["doc_id", "sentences", "word_lens"],
    "instances": ["input_ids", "token_type_ids", "word_starts", "sop_label"],
    "clean --resume": ["doc_id", "text", "source"],
}


def test_fuzz_every_reader_one_line_exit_2_inputs_untouched(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    """Seeded damage to each reader's input: one error line, exit 2, the inputs unchanged."""
    rng = np.random.default_rng(11)
    n = 0
    cases = [
        (reader, kind)
        for _ in range(ROUNDS)
        for reader in NEEDED
        for kind in FUZZ_KINDS + (["manifest"] if reader != "clean --resume" else [])
    ]
    messages = []
    for reader, kind in cases:
        columns = NEEDED[reader]
        n += 1
        work = tmp_path / f"case{n}"
        work.mkdir()
        name = {"instances": "shards", "clean --resume": "docs"}.get(reader)
        data = copy(chain, name or READERS[reader][0], work)
        if reader == "clean --resume":
            (data / "manifest.json").unlink()  # an interrupted run
        verify = _damage(kind, data, rng, columns, manifest=reader != "clean --resume")
        if reader == "clean --resume" and verify:
            continue  # clean has no --verify: a same-size change of a kept part is not seen
        before = tree_digest(data, chain["corpus"])
        where = f"{reader} / {kind}"
        if reader == "instances":
            with pytest.raises(DatasetError) as exc:
                InstanceData(data, verify=verify)
            assert "\n" not in str(exc.value) and str(data) in str(exc.value), where
            messages.append(str(exc.value))
        elif reader == "clean --resume":
            r = invoke("clean", chain["corpus"], "-o", data, "--chunk-mb", "0.002", "--resume")
            messages.append(one_error_line(r, str(data)))
        else:
            r = run_reader(reader, data, chain, work / "out", *(["--verify"] * verify))
            assert r.exit_code == 2, (where, r.output)
            messages.append(one_error_line(r, str(data)))
        assert tree_digest(data, chain["corpus"]) == before, where
    assert n > 80 and len(messages) == n - ROUNDS  # clean's "flip" cases are skipped
