"""No command loses or corrupts a user's data through its outputs (issue 11, items 1, 2, 8).

- An output may never be, hold or sit inside an input; ``--overwrite`` deletes only what
  albertzh wrote and refuses a directory holding anything else (one line, exit 2, nothing lost).
- No command writes over an existing file without ``--overwrite``, never over its own input;
  a model directory that lost its classifier head is refused, not re-initialised.
- One writer per output directory: a lock file (pid, host), the second writer gets one line; a
  stale lock is reported and broken only with ``--break-lock``.

Each reproduced command of the issue is a test here, through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from albertzh import outputs
from albertzh.data import dataset as ds
from albertzh.errors import InputError
from tests.cli.conftest import invoke, invoke_json, one_error_line, write_corpus
from tests.pipeline.test_finetune import make_senti_data

ROOT = Path(__file__).resolve().parents[1]
LOCK = outputs.LOCK_FILE


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> bytes); a file itself maps "" to its bytes."""
    path = Path(path)
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
    return dst


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real corpus -> docs -> words -> vocab -> shards -> pretrained run -> classifier."""
    root = tmp_path_factory.mktemp("chain")
    corpus = write_corpus(root / "corpus.txt", 120, seed=1)
    d = {name: root / name for name in ("docs", "words", "vocab", "shards", "rm1", "clf")}
    invoke_json("clean", corpus, "-o", d["docs"])
    invoke_json("segment", d["docs"], "-o", d["words"])
    invoke_json("build-vocab", d["words"], "-o", d["vocab"])
    invoke_json("make-shards", d["words"], "--vocab", d["vocab"], "-o", d["shards"],
                "--max-seq-len", "32")  # fmt: skip
    size = json.loads((d["vocab"] / "vocab.json").read_text())["size"]
    model = root / "tiny.json"
    model.write_text(json.dumps({
        "vocab_size": size, "embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
    }))  # fmt: skip
    invoke_json("pretrain", "--data", d["shards"], "-o", d["rm1"], "--model-config", model,
                "--steps", "2", "--batch-size", "8", "--device", "cpu")  # fmt: skip
    tc = make_senti_data(root / "tc", n_train=32, n_dev=16)
    invoke_json("finetune", "--task", "chnsenticorp", "--model", d["rm1"], "--data-dir", tc,
                "-o", d["clf"], "--steps", "2", "--batch-size", "8", "--max-seq-len", "16",
                "--device", "cpu")  # fmt: skip
    return {**d, "root": root, "corpus": corpus, "tc": tc, "model_config": model}


def _refused(r, *needles: str) -> str:
    line = one_error_line(r, *needles)
    assert "Traceback" not in r.output
    return line


# --------------------------------------------------------------------------- item 1: inputs


def test_clean_into_the_current_directory_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cd dir-with-files && albertzh clean corpus.txt -o . --overwrite``"""
    write_corpus(tmp_path / "corpus.txt", 20, seed=2)
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    _refused(invoke("clean", "corpus.txt", "-o", ".", "--overwrite"), "holds the input")
    assert snapshot(tmp_path) == before


def test_clean_never_writes_over_its_input(tmp_path: Path) -> None:
    """``clean io/corpus.txt -o io --overwrite``; ``clean inout -o inout`` (item 9's odd message)."""
    io = tmp_path / "io"
    io.mkdir()
    write_corpus(io / "corpus.txt", 20, seed=2)
    before = snapshot(io)
    _refused(invoke("clean", io / "corpus.txt", "-o", io, "--overwrite"), "holds the input")
    _refused(invoke("clean", io, "-o", io), "is the input INPUTS")
    _refused(invoke("clean", io, "-o", io / "docs"), "is inside the input")
    _refused(invoke("clean", io / "corpus.txt", "-o", tmp_path / "o", "--exclude", tmp_path / "o"),
             "is the input --exclude")  # fmt: skip
    assert snapshot(io) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "stage",
    ["segment-dc", "make-shards-wc", "build-vocab-wb", "pretrain-sc", "finetune-rm1", "inside"],
)
def test_a_stage_never_writes_over_its_input_dataset(
    chain: dict[str, Path], tmp_path: Path, stage: str
) -> None:
    """``segment dc -o dc --overwrite``, ``make-shards wc ... -o wc --overwrite``,
    ``build-vocab wb -o wb --overwrite``, ``pretrain --data sc -o sc --overwrite``,
    ``finetune --model rm1 -o rm1 --overwrite``, and an output inside the input."""
    c = {k: copy(chain[k], tmp_path / k) for k in ("docs", "words", "vocab", "shards", "rm1")}
    before = {k: snapshot(v) for k, v in c.items()}
    model = ["--model-config", chain["model_config"], "--steps", "1", "--device", "cpu"]
    args = {
        "segment-dc": ["segment", c["docs"], "-o", c["docs"]],
        "make-shards-wc": ["make-shards", c["words"], "--vocab", c["vocab"], "-o", c["words"]],
        "build-vocab-wb": ["build-vocab", c["words"], "-o", c["words"]],
        "pretrain-sc": ["pretrain", "--data", c["shards"], "-o", c["shards"], *model],
        "finetune-rm1": ["finetune", "--task", "chnsenticorp", "--model", c["rm1"],
                         "--data-dir", chain["tc"], "-o", c["rm1"], "--device", "cpu"],
        "inside": ["segment", c["docs"], "-o", c["docs"] / "words"],
    }[stage]  # fmt: skip
    flags = [] if stage == "inside" else ["--overwrite"]
    _refused(invoke(*args, *flags), "the input")
    assert {k: snapshot(v) for k, v in c.items()} == before


def test_pretrain_never_overwrites_the_vocab_its_shards_name(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    shards = copy(chain["shards"], tmp_path / "shards")
    before = snapshot(chain["vocab"])
    r = invoke("pretrain", "--data", shards, "-o", chain["vocab"], "--overwrite",
               "--model-config", chain["model_config"], "--steps", "1", "--device", "cpu")  # fmt: skip
    _refused(r, "is the input the shards' vocab")
    assert snapshot(chain["vocab"]) == before


def test_overwrite_refuses_a_directory_of_user_files(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    """A directory of unrelated user files is refused by every stage's --overwrite, untouched."""
    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    (user / "thesis.tex").write_text("years of work")
    (user / "sub" / "data.csv").write_text("1,2")
    before = snapshot(user)
    model = ["--model-config", chain["model_config"], "--steps", "1", "--device", "cpu"]
    commands = [
        ["clean", chain["corpus"]],
        ["segment", chain["docs"]],
        ["build-vocab", chain["words"]],
        ["make-shards", chain["words"], "--vocab", chain["vocab"]],
        ["pretrain", "--data", chain["shards"], *model],
        ["finetune", "--task", "chnsenticorp", "--model", chain["rm1"], "--data-dir", chain["tc"],
         "--steps", "1", "--device", "cpu"],
        ["quickstart"],
    ]  # fmt: skip
    for cmd in commands:
        r = invoke(*cmd, "-o", user, "--overwrite")
        _refused(r, str(user), "--overwrite refused", "was not written by albertzh")
        assert snapshot(user) == before, cmd


def test_overwrite_removes_only_what_albertzh_wrote(chain: dict[str, Path], tmp_path: Path) -> None:
    # A dataset: a stale part of an earlier run goes; one foreign file and nothing is deleted.
    docs = copy(chain["docs"], tmp_path / "docs")
    (docs / "part-00099.parquet").write_bytes(b"stale")
    (docs / ".staging-clean").mkdir()
    invoke_json("clean", chain["corpus"], "-o", docs, "--overwrite")
    assert sorted(os.listdir(docs)) == ["manifest.json", "part-00000.parquet"]
    (docs / "README.md").write_text("mine")
    before = snapshot(docs)
    _refused(invoke("clean", chain["corpus"], "-o", docs, "--overwrite"), "README.md")
    assert snapshot(docs) == before
    # A vocab directory.
    vocab = copy(chain["vocab"], tmp_path / "vocab")
    invoke_json("build-vocab", chain["words"], "-o", vocab, "--overwrite", "--min-freq", "2")
    (vocab / "notes.txt").write_text("mine")
    before = snapshot(vocab)
    _refused(invoke("build-vocab", chain["words"], "-o", vocab, "--overwrite"), "notes.txt")
    assert snapshot(vocab) == before
    # A run directory: a finished run is replaced; a foreign file deep inside stops it.
    run = copy(chain["rm1"], tmp_path / "run")
    pre = ["pretrain", "--data", chain["shards"], "-o", run, "--model-config",
           chain["model_config"], "--steps", "1", "--batch-size", "8", "--device", "cpu"]  # fmt: skip
    invoke_json(*pre, "--overwrite")
    assert (run / "model.safetensors").is_file() and not (run / LOCK).exists()
    (run / "checkpoints" / "notes.txt").write_text("mine")
    before = snapshot(run)
    _refused(invoke(*pre, "--overwrite"), "notes.txt")
    assert snapshot(run) == before


def test_no_output_is_touched_before_the_inputs_are_read(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    docs = copy(chain["docs"], tmp_path / "docs")
    before = snapshot(docs)
    _refused(invoke("clean", tmp_path / "missing.txt", "-o", docs, "--overwrite"), "missing.txt")
    assert snapshot(docs) == before
    # A refused run into a new directory leaves no trace (not even the directory or its lock).
    _refused(invoke("clean", tmp_path / "missing.txt", "-o", tmp_path / "new" / "docs"))
    assert not (tmp_path / "new").exists()


def test_export_never_writes_into_a_model_or_run_directory(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    """``export -o run ...`` replaced the run's config.json/vocab.txt."""
    pytest.importorskip("onnx")
    run = copy(chain["rm1"], tmp_path / "rm1")
    clf = copy(chain["clf"], tmp_path / "clf")
    before = {"run": snapshot(run), "clf": snapshot(clf)}
    _refused(invoke("export", "--model", clf, "-o", run, "--overwrite"), "albertzh.json",
             "not an export output")  # fmt: skip
    _refused(invoke("export", "--model", clf, "-o", clf, "--overwrite"), "is the input --model")
    _refused(invoke("export", "--model", clf, "-o", clf / "onnx"), "is inside the input")
    # a directory holding config.json but no model.onnx is not an export output either
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    _refused(invoke("export", "--model", clf, "-o", other, "--overwrite"), "config.json",
             "no model.onnx")  # fmt: skip
    assert (other / "config.json").read_text() == "{}"
    assert {"run": snapshot(run), "clf": snapshot(clf)} == before


# --------------------------------------------------------------------------- item 2: files


def test_eval_predictions_never_replace_a_file_without_overwrite(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    """``eval ... --predictions tc/dev.tsv``, ``--predictions model/config.json``."""
    tc = copy(chain["tc"], tmp_path / "tc")
    clf = copy(chain["clf"], tmp_path / "clf")
    before = {"tc": snapshot(tc), "clf": snapshot(clf)}
    ev = ["eval", "--model", clf, "--task", "chnsenticorp", "--data-dir", tc, "--device", "cpu"]
    _refused(invoke(*ev, "--predictions", tc / "dev.tsv"), "inside the input --data-dir")
    _refused(invoke(*ev, "--predictions", clf / "config.json", "--overwrite"), "--model")
    assert {"tc": snapshot(tc), "clf": snapshot(clf)} == before
    # elsewhere: an existing file needs --overwrite; a directory is no file name
    preds = tmp_path / "preds.jsonl"
    preds.write_text("keep me\n")
    _refused(invoke(*ev, "--predictions", preds), "exists", "--overwrite")
    assert preds.read_text() == "keep me\n"
    (tmp_path / "adir").mkdir()
    _refused(invoke(*ev, "--predictions", tmp_path / "adir"), "is a directory")
    s = invoke_json(*ev, "--predictions", preds, "--overwrite")
    assert s["predictions"] == str(preds) and len(preds.read_text().splitlines()) == 16


def test_predict_never_writes_over_its_input(chain: dict[str, Path], tmp_path: Path) -> None:
    """``predict p.txt -o p.txt`` replaced its input."""
    p = tmp_path / "p.txt"
    p.write_text("房间很好\n服务太差\n", encoding="utf-8")
    before = p.read_bytes()
    pr = ["predict", "--model", chain["clf"], "--device", "cpu"]
    _refused(invoke(*pr, p, "-o", p), "is the input INPUT")
    _refused(invoke(*pr, p, "-o", p, "--overwrite"), "is the input INPUT")
    _refused(invoke(*pr, p, "-o", chain["clf"] / "out.jsonl"), "inside the input --model")
    assert p.read_bytes() == before and not (chain["clf"] / "out.jsonl").exists()
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    _refused(invoke(*pr, p, "-o", out), "exists", "--overwrite")
    assert out.read_text() == "old\n"
    r = invoke(*pr, p, "-o", out, "--overwrite", "--quiet")
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 2


def test_a_model_without_its_classifier_head_is_refused(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    """After its files were mixed up (export once copied a classifier's config.json over a run
    dir), ``predict --model run`` answered from a randomly initialised head with exit 0."""
    mixed = copy(chain["rm1"], tmp_path / "mixed")  # pretraining weights: no classifier
    shutil.copyfile(chain["clf"] / "config.json", mixed / "config.json")
    p = tmp_path / "p.txt"
    p.write_text("房间很好\n", encoding="utf-8")
    r = invoke("predict", p, "--model", mixed, "--device", "cpu")
    _refused(r, str(mixed), "no classifier")
    r = invoke("eval", "--model", mixed, "--task", "chnsenticorp", "--data-dir", chain["tc"],
               "--device", "cpu")  # fmt: skip
    _refused(r, str(mixed), "no classifier")


# --------------------------------------------------------------------------- item 8: locks


def _holder(directory: Path, *, shard: str = "None") -> subprocess.Popen:
    """Another process holding ``directory``'s lock (through the same code a stage uses) until
    it is signalled; returns once the lock is taken."""
    code = (
        "import sys, time; from pathlib import Path; from albertzh.outputs import locked\n"
        f"with locked(Path(sys.argv[1]), shard={shard}):\n"
        "    print('locked', flush=True)\n"
        "    while True: time.sleep(0.1)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked", proc.stderr
    return proc


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=30)


def test_two_clean_writers_the_second_gets_one_line(chain: dict[str, Path], tmp_path: Path) -> None:
    """Two ``clean --overwrite`` into one directory: the survivor had lost parts (exit 0)."""
    out = tmp_path / "docs"
    first = subprocess.Popen(
        [sys.executable, "-m", "albertzh", "clean", "-", "-o", str(out), "--json"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / LOCK).exists():  # the first writer holds the lock, waiting for stdin
        assert first.poll() is None and time.monotonic() < deadline, first.stderr
        time.sleep(0.05)
    holder = json.loads((out / LOCK).read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    r = invoke("clean", chain["corpus"], "-o", out, "--overwrite")
    _refused(r, str(out), f"another albertzh (pid {first.pid}", "is writing here")
    r = invoke("clean", chain["corpus"], "-o", out, "--overwrite", "--break-lock")
    _refused(r, "is writing here", "--break-lock breaks only the lock of a process that is gone")
    text = chain["corpus"].read_text(encoding="utf-8")
    stdout, stderr = first.communicate(text, timeout=120)
    assert first.returncode == 0, stderr
    assert json.loads(stdout)["rows_out"] > 0
    m = ds.read_manifest(out, "clean")
    assert [f["name"] for f in m["files"]] == ["part-00000.parquet"]
    assert sorted(os.listdir(out)) == ["manifest.json", "part-00000.parquet"]  # lock gone


def test_two_pretrain_resumes_on_one_run_dir(chain: dict[str, Path], tmp_path: Path) -> None:
    """Two ``pretrain --resume`` on one run dir both exited 0, every metrics line twice."""
    run = copy(chain["rm1"], tmp_path / "run")
    before = snapshot(run)
    holder = _holder(run)
    try:
        r = invoke("pretrain", "--data", chain["shards"], "-o", run, "--resume", "--model-config",
                   chain["model_config"], "--steps", "3", "--device", "cpu")  # fmt: skip
        _refused(r, f"another albertzh (pid {holder.pid}")
        r = invoke("make-shards", chain["words"], "--vocab", chain["vocab"], "-o", run, "--resume")
        _refused(r, "is writing here")
    finally:
        assert _stop(holder) == 128 + signal.SIGTERM  # SIGTERM unwinds: the lock goes with it
    assert snapshot(run) == before and not (run / LOCK).exists()


def test_a_stale_lock_is_reported_and_broken_only_on_request(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    holder = _holder(out)
    pid = holder.pid
    _stop(holder, signal.SIGKILL)  # no clean-up: the lock stays
    assert (out / LOCK).exists()
    args = ["make-shards", chain["words"], "--vocab", chain["vocab"], "-o", out]
    _refused(invoke(*args), f"locked by pid {pid}", "no longer running", "--break-lock")
    r = invoke(*args, "--break-lock", "--json")
    assert r.exit_code == 0, r.output
    assert f"broke the stale lock of pid {pid}" in r.stderr
    names = sorted(os.listdir(out))
    assert names[0] == "manifest.json" and all(n.startswith("part-") for n in names[1:])
    # A lock from another machine cannot be judged: reported, broken only on request.
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    _refused(invoke(*args, "--overwrite"), "on elsewhere.example (another machine)")
    invoke_json(*args, "--overwrite", "--break-lock")
    assert not (out / LOCK).exists()


def test_shards_share_a_directory_but_not_with_a_whole_run(tmp_path: Path) -> None:
    out = tmp_path / "docs"
    holder = _holder(out, shard="(0, 2)")
    try:
        with outputs.locked(out, shard=(1, 2)):  # another shard: fine
            assert (out / ".albertzh-shard-1-of-2.lock").exists()
        with (
            pytest.raises(InputError, match="a sharded and an unsharded run"),
            outputs.locked(out),
        ):
            pass
        assert not (out / LOCK).exists()
    finally:
        _stop(holder)
    assert not out.exists()  # the holder created it: gone once empty


def test_only_rank_0_takes_the_run_dir_lock(tmp_path: Path) -> None:
    from albertzh.train import loop as tr

    with tr.run_dir_lock(tmp_path / "a", is_main=False):
        assert not (tmp_path / "a").exists()
    with tr.run_dir_lock(tmp_path / "b", is_main=True):
        assert (tmp_path / "b" / LOCK).is_file()
    assert not (tmp_path / "b").exists()  # created here and left empty: removed


def test_the_lock_never_lands_in_a_finished_output(chain: dict[str, Path]) -> None:
    for name in ("docs", "words", "vocab", "shards", "rm1", "clf"):
        found = [p for p in chain[name].rglob("*") if outputs.is_lock(p.name)]
        assert not found, found
    # the lock never counts as foreign, whoever left it
    (chain["docs"] / LOCK).write_text("{}")
    try:
        assert ds.DATASET_LAYOUT.foreign(chain["docs"]) is None
        assert ds.read_manifest(chain["docs"], "clean")["rows"] > 0
    finally:
        (chain["docs"] / LOCK).unlink()


def test_quickstart_overwrite_checks_every_stage_directory(tmp_path: Path) -> None:
    from albertzh.pipeline import quickstart as qs

    out = tmp_path / "qs"
    files = [
        "summary.json", "model_config.json", "data/corpus/reviews.txt", "data/task/dev.tsv",
        "docs/manifest.json", "docs/part-00000.parquet", "vocab/vocab.txt", "vocab/vocab.json",
        "pretrain/config.json", "pretrain/checkpoints/step-00000006/state/trainer.pt",
        "finetune-random-seed0/model.safetensors", "finetune-random-seed0/metrics.json",
    ]  # fmt: skip
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    (out / "pretrain" / "notes.txt").write_text("mine")
    before = snapshot(out)
    r = invoke("quickstart", "-o", out, "--overwrite")
    _refused(r, "pretrain/notes.txt", "was not written by albertzh")
    assert snapshot(out) == before
    (out / "pretrain" / "notes.txt").unlink()
    outputs.prepare_dir(out, qs._layout(), overwrite=True)
    assert os.listdir(out) == []
