"""ONNX export, checked in onnxruntime against PyTorch (fp32) and on real data (int8).

``-o`` is a directory: model.onnx + config.json + the tokenizer files (what onnxruntime users and
HF Optimum load), written only there, replacing only export's own files under --overwrite.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from click.testing import CliRunner

import albertzh.cli
from albertzh.model import (
    AlbertConfig,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from albertzh.model import onnx as ex  # noqa: E402

ROOT = typer.main.get_command(albertzh.cli.app)
runner = CliRunner()

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"我们你他是的了在有不这个人中大上为和国地"]


def _tiny_config(**kw) -> AlbertConfig:
    fields = dict(
        vocab_size=len(TOKENS),
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    fields.update(kw)
    return AlbertConfig(**fields)


def _save(model, path: Path) -> Path:
    from albertzh.tokenizer import load_tokenizer

    vocab = path.parent / f"{path.name}-vocab.txt"
    vocab.write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    model.save_pretrained(path, tokenizer=load_tokenizer(vocab))
    return path


# Wide enough that the exporter leaves weight transposes in the graph (it folds tiny ones).
HIDDEN, INTER = 128, 256


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = _tiny_config(num_labels=3, hidden_size=HIDDEN, intermediate_size=INTER)
    return _save(AlbertForSequenceClassification(cfg), tmp_path_factory.mktemp("cls") / "model")


@pytest.fixture(scope="module")
def exported(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The classifier exported once through the CLI: (OUTPUT/model.onnx, summary)."""
    out = tmp_path_factory.mktemp("deploy") / "senti"
    r = runner.invoke(
        ROOT,
        ["export", "--model", str(classifier_dir), "--format", "onnx", "-o", str(out), "--json"],
    )
    assert r.exit_code == 0, r.output
    return out / "model.onnx", json.loads(r.stdout)


def _export(*args: object):
    return runner.invoke(ROOT, ["export", *map(str, args)])


def _one_line(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _listing(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


def _feeds(batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    return ex.sample_inputs(len(TOKENS), batch=batch, seq=seq, seed=seed)


def test_classifier_fp32_matches_pytorch_any_batch_and_length(
    classifier_dir: Path, exported: tuple[Path, dict]
) -> None:
    out, summary = exported
    assert summary["head"] == "classifier" and summary["outputs"] == ["logits"]
    assert summary["onnxruntime_max_abs_diff"] <= 1e-4
    assert summary["graph"] == "model.onnx: fp32" and summary["output"] == str(out.parent)
    # the directory holds the graph, config.json and the tokenizer files, and nothing else
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(summary["files"])
    assert {"model.onnx", "config.json", "vocab.txt", "tokenizer_config.json"} <= set(
        summary["files"]
    )
    for name in ("vocab.txt", "tokenizer_config.json", "config.json"):
        assert (out.parent / name).read_bytes() == (classifier_dir / name).read_bytes()
    assert not any(p.name != "senti" for p in out.parent.parent.iterdir())  # nothing beside -o
    graph = onnx.load(str(out))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in graph.graph.input
    }
    assert dims == {n: ["batch", "sequence"] for n in ex.INPUTS}
    model = AlbertForSequenceClassification.from_pretrained(classifier_dir).eval()
    session = ex.ort_session(out)
    for batch, seq, seed in ((1, 5, 1), (4, 37, 2), (2, 64, 3)):  # none is the traced shape
        feeds = _feeds(batch, seq, seed)
        want = ex.torch_outputs(model, "classifier", feeds)[0]
        got = session.run(None, feeds)[0]
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_token_classifier_exports_per_token_logits(tmp_path: Path) -> None:
    torch.manual_seed(1)
    tags = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    cfg = _tiny_config(id2label=dict(enumerate(tags)), num_labels=len(tags))
    model_dir = _save(AlbertForTokenClassification(cfg), tmp_path / "ner")
    r = _export("--model", model_dir, "-o", tmp_path / "deploy", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["head"] == "classifier" and summary["outputs"] == ["logits"]
    assert summary["onnxruntime_max_abs_diff"] <= 1e-4
    config = json.loads((tmp_path / "deploy" / "config.json").read_text())
    assert config["architectures"] == ["AlbertForTokenClassification"]
    assert config["id2label"]["1"] == "B-LOC"
    model = AlbertForTokenClassification.from_pretrained(model_dir).eval()
    session = ex.ort_session(tmp_path / "deploy" / "model.onnx")
    for batch, seq, seed in ((1, 5, 1), (3, 40, 2)):
        feeds = _feeds(batch, seq, seed)
        want = ex.torch_outputs(model, "classifier", feeds)[0]
        got = session.run(None, feeds)[0]
        assert got.shape == (batch, seq, len(tags))
        keep = feeds["attention_mask"].astype(bool)  # padded positions carry no meaning
        np.testing.assert_allclose(got[keep], want[keep], atol=1e-4, rtol=0)


def test_head_none_exports_sequence_and_pooled(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model_dir = _save(AlbertModel(_tiny_config()), tmp_path / "enc")
    out = tmp_path / "enc-onnx"
    r = runner.invoke(ROOT, ["export", "--model", str(model_dir), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["outputs"] == ["last_hidden_state", "pooler_output"]
    model = AlbertModel.from_pretrained(model_dir).eval()
    feeds = _feeds(3, 21, 5)
    hidden, pooled = ex.ort_session(out / "model.onnx").run(None, feeds)
    want_hidden, want_pooled = ex.torch_outputs(model, "none", feeds)
    keep = feeds["attention_mask"].astype(bool)
    assert hidden.shape == (3, 21, 32) and pooled.shape == (3, 32)
    np.testing.assert_allclose(hidden[keep], want_hidden[keep], atol=1e-4, rtol=0)
    np.testing.assert_allclose(pooled, want_pooled, atol=1e-4, rtol=0)


def test_errors_are_one_line_exit_2(classifier_dir: Path, tmp_path: Path) -> None:
    enc = _save(AlbertModel(_tiny_config()), tmp_path / "enc")
    r = _export("--model", enc, "--head", "classifier", "-o", tmp_path / "a")
    _one_line(r, "not a finetuned classifier")
    assert not (tmp_path / "a").exists()
    r = _export("--model", tmp_path / "nope", "-o", tmp_path / "b")
    _one_line(r, "nope: no config.json")
    assert not (tmp_path / "b").exists()
    # -o names the directory, not the graph file
    r = _export("--model", classifier_dir, "-o", tmp_path / "deploy" / "model.onnx")
    _one_line(r, "-o is the directory", f"-o {tmp_path / 'deploy'}")
    assert not (tmp_path / "deploy").exists()


def test_output_must_be_an_empty_directory_or_overwrite(
    classifier_dir: Path, tmp_path: Path
) -> None:
    # an existing file: refused, and nothing is written beside it
    here = tmp_path / "here"
    here.mkdir()
    (here / "model.bin").write_bytes(b"old")
    r = _export("--model", classifier_dir, "-o", here / "model.bin")
    _one_line(r, "model.bin: is a file")
    assert _listing(here) == {"model.bin": b"old"}
    # a non-empty directory: refused without --overwrite, untouched
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "spiece.model").write_bytes(b"stale tokenizer of an earlier export")
    (out / "model.onnx").write_bytes(b"old graph")
    before = _listing(out)
    r = _export("--model", classifier_dir, "-o", out)
    _one_line(r, f"{out}: not empty", "--overwrite")
    assert _listing(out) == before
    # --overwrite replaces export's own files (a stale spiece.model goes) and keeps the rest
    r = _export("--model", classifier_dir, "-o", out, "--overwrite", "--json")
    assert r.exit_code == 0, r.output
    after = _listing(out)
    assert after["notes.txt"] == b"mine" and "spiece.model" not in after
    assert (
        after["model.onnx"] != b"old graph"
        and after["vocab.txt"] == (classifier_dir / "vocab.txt").read_bytes()
    )
    assert set(after) == {"notes.txt", *json.loads(r.stdout)["files"]}
    # int8: model.onnx is then the quantized graph, and the summary says so
    r = _export("--model", classifier_dir, "-o", out, "--overwrite", "--quantize", "int8", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["quantize"] == "int8" and summary["graph"].startswith("model.onnx: int8")
    graph = onnx.load(str(out / "model.onnx")).graph
    assert {n.op_type for n in graph.node} & {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert summary["bytes"] == (out / "model.onnx").stat().st_size < len(after["model.onnx"])
    assert (out / "notes.txt").read_text() == "mine"


def test_failed_export_leaves_output_as_it_was(
    classifier_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from albertzh.errors import ModelDirError
    from albertzh.pipeline import export as stage

    def broken(*args, **kwargs):
        raise ModelDirError("exporter failed")

    monkeypatch.setattr(stage, "export_onnx", broken)
    r = _export("--model", classifier_dir, "-o", tmp_path / "new" / "deploy")
    _one_line(r, "exporter failed")
    assert not (tmp_path / "new" / "deploy").exists()  # the directory it created is gone
    out = tmp_path / "kept"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"old graph")
    r = _export("--model", classifier_dir, "-o", out, "--overwrite")
    _one_line(r, "exporter failed")
    assert _listing(out) == {"model.onnx": b"old graph"}  # no staging directory left either


def test_fold_weight_ops_dedupes_shared_weights(
    exported: tuple[Path, dict], tmp_path: Path
) -> None:
    hidden, inter = HIDDEN, INTER
    src = exported[0]
    before = onnx.load(str(src)).graph
    consts = {i.name for i in before.initializer}
    assert any(n.input[1] not in consts for n in before.node if n.op_type == "MatMul")
    assert ex.fold_weight_ops(src, tmp_path / "f.onnx") > 0
    g = onnx.load(str(tmp_path / "f.onnx")).graph
    consts = {i.name for i in g.initializer}
    # every weight MatMul (those that read a parameter) now reads a constant ...
    weights = {i.name for i in g.initializer if len(i.dims) == 2 and i.dims[0] in (hidden, inter)}
    matmul_b = [n.input[1] for n in g.node if n.op_type in ("MatMul", "Gemm")]
    assert weights and weights <= set(matmul_b)
    # ... and the shared layer's FFN kernel is stored once for its three applications
    assert sum(1 for i in g.initializer if list(i.dims) == [hidden, inter]) == 1
    feeds = _feeds(2, 9, 7)
    a = ex.ort_session(src).run(None, feeds)[0]
    b = ex.ort_session(tmp_path / "f.onnx").run(None, feeds)[0]
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def _matrix_bytes(graph, types: tuple[int, ...]) -> int:
    """Bytes of the graph's 2-D+ initializers (weight matrices, embedding tables) of ``types``."""
    return sum(
        onnx.numpy_helper.to_array(i).nbytes
        for i in graph.initializer
        if i.data_type in types and len(i.dims) >= 2
    )


def test_int8_quantizes_matmuls_and_embeddings(
    classifier_dir: Path, exported: tuple[Path, dict], tmp_path: Path
) -> None:
    int8 = tmp_path / "int8.onnx"
    ex.quantize_int8(exported[0], int8)
    g = onnx.load(str(int8)).graph
    ops = {n.op_type for n in g.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    int8_inits = {i.name for i in g.initializer if i.data_type in eight_bit}
    assert any("word_embeddings" in n for n in int8_inits)  # the embedding table is int8 too
    # The weights shrink to one byte each: compare the weight matrices, not the file sizes (the
    # nodes' export metadata, a third of this tiny model's file, varies with torch and onnx).
    fp32 = _matrix_bytes(onnx.load(str(exported[0])).graph, (onnx.TensorProto.FLOAT,))
    assert _matrix_bytes(g, (onnx.TensorProto.FLOAT,)) < 0.05 * fp32  # ~1% left: tiny tables
    assert _matrix_bytes(g, eight_bit) < 0.3 * fp32  # 1/4 of the fp32 bytes they replace
    model = AlbertForSequenceClassification.from_pretrained(classifier_dir).eval()
    feeds = _feeds(4, 30, 9)
    want = ex.torch_outputs(model, "classifier", feeds)[0]
    got = ex.ort_session(int8).run(None, feeds)[0]
    assert np.abs(got - want).max() < 0.05 * (np.abs(want).max() + 1e-3) + 1e-2


# --------------------------------------------------------------------------- int8 on real data


def _read_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if i == 0 or not line.strip():
            continue
        label, text = line.split("\t", 1)
        labels.append(int(label))
        texts.append(text)
    return texts, np.array(labels)


def _encode(tok, texts: list[str], seq: int) -> dict[str, np.ndarray]:
    ids = np.zeros((len(texts), seq), dtype=np.int64)
    for i, text in enumerate(texts):
        row, _ = tok.encode_for_model(text, max_len=seq)
        ids[i, : len(row)] = row
    return {
        "input_ids": ids,
        "attention_mask": (ids != tok.pad_id).astype(np.int64),
        "token_type_ids": np.zeros_like(ids),
    }


@pytest.mark.slow
def test_int8_accuracy_on_chnsenticorp_within_one_point(tmp_path: Path) -> None:
    from albertzh.tokenizer import load_tokenizer
    from tests.conftest import shared_path

    train_tsv = shared_path("tasks/chnsenticorp/train.tsv")
    dev_tsv = shared_path("tasks/chnsenticorp/dev.tsv")
    bert = load_tokenizer(shared_path("vocab/bert_chinese_vocab.txt"))
    seq = 48
    train_x, train_y = _read_tsv(train_tsv)
    dev_x, dev_y = _read_tsv(dev_tsv)
    train, dev = _encode(bert, train_x, seq), _encode(bert, dev_x, seq)
    # A compact vocab of the tokens these texts use keeps the embedding (and the test) small.
    used = np.unique(np.concatenate([train["input_ids"].ravel(), dev["input_ids"].ravel()]))
    used = np.union1d(used, list(bert.special_ids))
    remap = np.zeros(bert.vocab_size, dtype=np.int64)
    remap[used] = np.arange(len(used))
    for feeds in (train, dev):
        feeds["input_ids"] = remap[feeds["input_ids"]]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(bert.convert_ids_to_tokens(used.tolist())) + "\n", encoding="utf-8")
    tok = load_tokenizer(vocab)
    assert tok.pad_id == 0 and tok.vocab_size == len(used)

    # A small classifier, trained briefly with a plain loop.
    torch.manual_seed(0)
    config = AlbertConfig(
        vocab_size=tok.vocab_size,
        embedding_size=32,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=seq,
        num_labels=2,
    )
    model = AlbertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(250):
        idx = rng.integers(0, len(train_y), 32)
        batch = {k: torch.from_numpy(v[idx]) for k, v in train.items()}
        logits = model(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(train_y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model_dir = tmp_path / "cls"
    model.save_pretrained(model_dir, tokenizer=tok)

    def accuracy(predict) -> float:
        preds = []
        for s in range(0, len(dev_y), 200):
            preds.append(predict({k: v[s : s + 200] for k, v in dev.items()}).argmax(-1))
        return float((np.concatenate(preds) == dev_y).mean())

    fp32 = accuracy(lambda f: ex.torch_outputs(model, "classifier", f)[0])
    assert fp32 > 0.7, fp32  # it learned something, so the comparison means something

    out = tmp_path / "int8"
    r = runner.invoke(
        ROOT, ["export", "--model", str(model_dir), "-o", str(out), "--quantize", "int8"]
    )
    assert r.exit_code == 0, r.output
    session = ex.ort_session(out / "model.onnx")
    int8 = accuracy(lambda f: session.run(None, f)[0])
    graph = onnx.load(str(out / "model.onnx")).graph
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in graph.node)
    assert abs(int8 - fp32) <= 0.01, (fp32, int8)
