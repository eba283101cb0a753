"""predict --int8: dynamic int8 quantization on CPU, same output format, labels mostly agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.conftest import one_error_line, root, runner
from tests.pipeline.test_finetune import make_model_dir, make_senti_data
from tests.pipeline.test_finetune_ner import CHARS as NER_CHARS
from tests.pipeline.test_finetune_ner import LABEL2ID, make_ner_data

LINES = ["房间很好的", "服务很差", "价格便宜", "早餐太脏", "酒店满意的", "房间讨厌", "服务不错"] * 3


def invoke(*args: object, input: str | None = None):  # noqa: ANN201
    return runner.invoke(root, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def senti(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("int8")
    base = make_model_dir(tmp / "base")
    data = make_senti_data(tmp / "data", n_train=96, n_dev=20, seed=1)
    out = tmp / "out"
    r = invoke(
        "finetune", "--task", "chnsenticorp", "--model", base, "--data-dir", data, "-o", out,
        "--lr", "3e-3", "--epochs", "2", "--batch-size", "16", "--max-seq-len", "16",
        "--device", "cpu", "--seed", "1", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    src = tmp / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return {"tmp": tmp, "out": out, "src": src}


def _predict(model: Path, src: Path, dest: Path, *extra: object) -> tuple[list[dict], dict]:
    r = invoke("predict", src, "--model", model, "-o", dest, "--json", "--device", "cpu", *extra)
    assert r.exit_code == 0, r.output
    return [json.loads(x) for x in dest.read_text("utf-8").splitlines()], json.loads(r.stdout)


def test_int8_classifier_same_format_and_labels(senti: dict) -> None:
    tmp = senti["tmp"]
    fp32, s32 = _predict(senti["out"], senti["src"], tmp / "fp32.jsonl")
    int8, s8 = _predict(senti["out"], senti["src"], tmp / "int8.jsonl", "--int8")
    assert s32["int8"] is False and s8["int8"] is True and s8["rows"] == len(LINES)
    assert len(int8) == len(fp32) == len(LINES)
    for a, b in zip(fp32, int8, strict=True):
        assert a.keys() == b.keys() and a["probabilities"].keys() == b["probabilities"].keys()
        assert sum(b["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    same = sum(a["label"] == b["label"] for a, b in zip(fp32, int8, strict=True))
    assert same >= 0.9 * len(LINES)


def test_int8_stderr_note(senti: dict) -> None:
    r = invoke("predict", "--model", senti["out"], "--int8", input="房间很好的\n")
    assert r.exit_code == 0, r.output
    assert "1 rows" in r.stderr and "int8" in r.stderr
    assert set(json.loads(r.stdout)) == {"label", "probabilities"}


def test_int8_quantizes_every_linear_qkv_included(senti: dict) -> None:
    from albertzh.train.inference import load_classifier

    fp32 = load_classifier(senti["out"], device="cpu")
    clf = load_classifier(senti["out"], device="cpu", int8=True)
    qmods = [n for n, m in clf.model.named_modules() if "quantized" in type(m).__module__]
    for name in ("ffn", "classifier", "query", "key", "value", "dense"):
        assert any(n.endswith(name) for n in qmods), name
    assert not any(type(m) is torch.nn.Linear for m in clf.model.modules())
    layer = clf.model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    assert layer.attention.qkv_weights() is None  # the attention applies q, k, v one by one
    a, b = fp32.logits([(t, None) for t in LINES], 8), clf.logits([(t, None) for t in LINES], 8)
    assert np.abs(a - b).max() < 0.1  # int8 rounding, not a different computation


def test_int8_on_cuda_is_one_line_refusal(senti: dict) -> None:
    # Refused before anything is loaded, with or without a GPU on this machine.
    r = invoke("predict", "--model", senti["out"], "--int8", "--device", "cuda", input="好\n")
    one_error_line(r, "--int8", "CPU only", "--device cuda")
    assert r.stdout == ""
    r = invoke("predict", "--model", senti["out"], "--int8", "--precision", "bf16", input="好\n")
    one_error_line(r, "--int8", "--precision bf16")


def test_int8_token_classifier(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab.write_text("\n".join(specials + NER_CHARS) + "\n", "utf-8")
    base = make_model_dir(tmp_path / "base", vocab=vocab)
    data = make_ner_data(tmp_path / "data")
    (data / "label2id.json").write_text(json.dumps(LABEL2ID), encoding="utf-8")
    out = tmp_path / "out"
    r = invoke(
        "finetune", "--task", "msra_ner", "--model", base, "--data-dir", data, "-o", out,
        "--lr", "3e-3", "--epochs", "1", "--batch-size", "32", "--max-seq-len", "12",
        "--doc-stride", "4", "--device", "cpu", "--seed", "1", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    src = tmp_path / "in.txt"
    src.write_text("张明在北京说\n\n我们今天去北京了，张明说王华在上海和广州。\n", encoding="utf-8")
    fp32, _ = _predict(out, src, tmp_path / "a.jsonl")
    int8, s8 = _predict(out, src, tmp_path / "b.jsonl", "--int8")
    assert s8["int8"] is True and len(int8) == len(fp32) == 3
    for a, b in zip(fp32, int8, strict=True):
        assert a.keys() == b.keys() == {"entities"}
        for e in b["entities"]:
            assert set(e) == {"type", "text", "start", "end"}


@pytest.mark.parametrize(
    "cls", ["AlbertForQuestionAnswering", "AlbertForMultipleChoice", "AlbertForTokenClassification"]
)
def test_int8_runs_every_head(cls: str) -> None:
    """Every head predict serves still runs after quantize_int8, close to fp32."""
    import copy

    from albertzh import model as M
    from albertzh.train.inference import quantize_int8

    cfg = M.AlbertConfig(
        vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = getattr(M, cls)(cfg).eval()
    shape = (2, 3, 10) if cls == "AlbertForMultipleChoice" else (2, 10)
    ids = torch.randint(5, 50, shape)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    qmodel = quantize_int8(copy.deepcopy(model))
    with torch.inference_mode():
        a, b = model(**batch), qmodel(**batch)
    outs = [(x, vars(b)[k]) for k, x in vars(a).items() if isinstance(x, torch.Tensor)]
    assert outs
    for x, y in outs:
        assert x.shape == y.shape and (x - y).abs().max() < 0.1
