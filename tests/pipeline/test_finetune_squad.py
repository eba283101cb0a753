"""Span extraction end to end on a 2-layer toy model: finetune (SQuAD v1 layout, contexts longer
than a window), eval (EM/F1, predictions), predict, transformers and onnxruntime parity of the
saved head, and one-line errors for bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from albertzh.data import squad
from tests.cli.conftest import one_error_line, root, runner
from tests.pipeline.test_finetune import make_model_dir

NAMES = ["张明", "王华", "李小明", "赵六", "陈一"]
FILL = list("今天我们去了公园看到很多人和树天气不错")
CHARS = sorted(set("".join(NAMES) + "".join(FILL) + "作者是谁写的书。，"))


def invoke(*args: object, input: str | None = None):  # noqa: ANN201
    return runner.invoke(root, [str(a) for a in args], input=input)


def make_squad_data(path: Path, seed: int = 0) -> Path:
    """train (160) / dev (30) questions "作者是谁": the name after "作者是" in a context of 14-40
    characters (longer than one window of the tests' --max-seq-len)."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 160), ("dev", 30)):
        paragraphs = []
        for i in range(n):
            name = rng.choice(NAMES)
            before = "".join(rng.choices(FILL, k=rng.randint(2, 20)))
            after = "".join(rng.choices(FILL, k=rng.randint(2, 12)))
            context = f"{before}，这本书的作者是{name}。{after}"
            start = context.index("作者是") + 3
            answers = [{"text": name, "answer_start": start}]
            if split == "dev":
                answers.append({"text": f"{name}。", "answer_start": start})
            q = {"id": f"{split}-{i}", "question": "作者是谁", "answers": answers}
            paragraphs.append({"context": context, "qas": [q]})
        doc = {"version": "v1", "data": [{"title": "t", "paragraphs": paragraphs}]}
        (path / f"{split}.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("squad")
    vocab = tmp / "vocab.txt"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab.write_text("\n".join(specials + CHARS) + "\n", "utf-8")
    base = make_model_dir(tmp / "base", vocab=vocab)
    data = make_squad_data(tmp / "data")
    out = tmp / "out"
    r = invoke(
        "finetune", "--task", "squad", "--model", base, "--data-dir", data, "-o", out,
        "--lr", "3e-3", "--epochs", "8", "--batch-size", "16", "--max-seq-len", "24",
        "--max-query-len", "8", "--doc-stride", "6", "--max-answer-len", "5",
        "--device", "cpu", "--seed", "1", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return {"tmp": tmp, "base": base, "data": data, "out": out, "summary": json.loads(r.stdout)}


def test_finetune_learns_and_writes_a_question_answering_dir(run: dict) -> None:
    s, out = run["summary"], run["out"]
    assert s["task"] == "squad" and s["train_examples"] == 160 and s["dev_examples"] == 30
    assert s["stopped"] == "completed" and s["skipped_bad_answers"] == 0
    assert s["best_dev_f1"] >= 0.8 and "best_dev_em" in s
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["AlbertForQuestionAnswering"]
    meta = json.loads((out / "albertzh.json").read_text())
    assert meta["kind"] == "span_extraction"
    assert (meta["max_seq_len"], meta["doc_stride"], meta["max_query_len"]) == (24, 6, 8)
    assert meta["max_answer_len"] == 5
    report = json.loads((out / "metrics.json").read_text())
    assert report["metric"] == "f1" and report["train"]["rows"] > 160  # windows


def test_eval_json_and_predictions(run: dict, tmp_path: Path) -> None:
    preds = tmp_path / "dev.jsonl"
    r = invoke(
        "eval", "--task", "squad", "--model", run["out"], "--data-dir", run["data"],
        "--split", "dev", "--predictions", preds, "--batch-size", "7", "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["rows"] == 30 and s["windows"] > 30 and s["labelled"]
    assert s["f1"] == pytest.approx(run["summary"]["best_dev_f1"], abs=1e-6)
    recs = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines()]
    dev = squad.read_squad(run["data"] / "dev.json")
    assert [r["id"] for r in recs] == [e.qid for e in dev]
    for rec, e in zip(recs, dev, strict=True):
        assert set(rec) == {"id", "answer", "start", "score"}
        assert e.context[rec["start"] : rec["start"] + len(rec["answer"])] == rec["answer"]
    # The metric recomputed from the file (an independent path through qa_metrics).
    m = squad.qa_metrics(dev, {r["id"]: r["answer"] for r in recs})
    assert (m["em"], m["f1"]) == pytest.approx((s["em"], s["f1"]), abs=1e-6)


def test_predict_json_lines(run: dict) -> None:
    lines = [
        {"question": "作者是谁", "context": "今天我们去公园，这本书的作者是王华。天气不错"},
        {"id": "x", "question": "作者是谁", "context": "作者是陈一。"},
    ]
    text = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n"
    r = invoke("predict", "--model", run["out"], "--device", "cpu", "-q", input=text)
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 2 and recs[1]["id"] == "x"
    for rec, line in zip(recs, lines, strict=True):
        assert {"text", "start", "score"} <= set(rec)
        ctx = line["context"]
        assert ctx[rec["start"] : rec["start"] + len(rec["text"])] == rec["text"]
    assert recs[0]["text"] == "王华"


def test_predict_refuses_a_line_that_is_not_a_question(run: dict) -> None:
    r = invoke("predict", "--model", run["out"], "--device", "cpu", input='{"question": "q"}\n')
    one_error_line(r, "<stdin>: line 1: missing field 'context'")


def test_transformers_loads_the_head_with_the_same_logits(run: dict) -> None:
    transformers = pytest.importorskip("transformers")
    from albertzh.train.spans import load_reader

    reader = load_reader(run["out"], device="cpu")
    hf, info = transformers.AlbertForQuestionAnswering.from_pretrained(
        run["out"], output_loading_info=True
    )
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    ex = squad.QAExample("q", "作者是谁", "今天，这本书的作者是李小明。天气不错", None)
    ids, types = reader.features([ex]).encoded[0]
    feeds = {"input_ids": torch.tensor([ids]), "token_type_ids": torch.tensor([types])}
    with torch.no_grad():
        ours = reader.model(**feeds)
        theirs = hf.eval()(**feeds)
    torch.testing.assert_close(ours.start_logits, theirs.start_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.end_logits, theirs.end_logits, atol=1e-5, rtol=0)


def test_export_onnx_start_and_end_logits(run: dict, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from albertzh.model.onnx import sample_inputs, torch_outputs
    from albertzh.train.spans import load_reader

    out = tmp_path / "onnx"
    r = invoke("export", "--model", run["out"], "--format", "onnx", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["outputs"] == ["start_logits", "end_logits"]
    assert s["onnxruntime_max_abs_diff"] <= 1e-4
    model = load_reader(run["out"], device="cpu").model
    feeds = sample_inputs(model.config.vocab_size, batch=2, seq=20, seed=3)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["start_logits", "end_logits"], feeds)
    want = torch_outputs(model, "classifier", feeds)
    mask = feeds["attention_mask"].astype(bool)
    for g, w in zip(got, want, strict=True):
        assert np.abs(g - w)[mask].max() <= 1e-4


def test_bad_answer_start_is_one_error_line_naming_file_and_question(
    run: dict, tmp_path: Path
) -> None:
    data = tmp_path / "bad"
    data.mkdir()
    doc = json.loads((run["data"] / "train.json").read_text(encoding="utf-8"))
    qa = doc["data"][0]["paragraphs"][3]["qas"][0]
    qa["answers"][0]["answer_start"] += 1
    (data / "train.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    args = ["--model", run["base"], "--data-dir", data, "--device", "cpu", "--epochs", "1"]
    r = invoke("finetune", "--task", "squad", *args, "-o", tmp_path / "o")
    one_error_line(r, f"train.json: question {qa['id']}: answer 1: answer_start")
    assert r.exit_code == 2 and not (tmp_path / "o").exists()
    r = invoke("finetune", "--task", "squad", *args, "-o", tmp_path / "o2", "--skip-bad-answers",
               "--max-seq-len", "24", "--max-query-len", "8", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["skipped_bad_answers"] == 1


def test_span_flags_are_refused_for_other_kinds(run: dict, tmp_path: Path) -> None:
    r = invoke("finetune", "--task", "chnsenticorp", "--model", run["base"], "--data-dir",
               run["data"], "-o", tmp_path / "o", "--max-answer-len", "3")  # fmt: skip
    one_error_line(r, "--max-answer-len only applies to span extraction tasks")
    r = invoke("eval", "--task", "squad", "--model", run["base"], "--data-dir", run["data"])
    one_error_line(r, "not a finetuned span extractor")


def test_a_model_dir_without_its_qa_head_is_refused(run: dict, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    cut = tmp_path / "cut"
    shutil.copytree(run["out"], cut)
    state = load_file(cut / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("qa_outputs.")},
              cut / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    r = invoke(
        "predict", "--model", cut, "--device", "cpu", input='{"question": "q", "context": "c"}\n'
    )
    assert r.exit_code == 2 and str(cut) in r.output and len(r.output.strip().splitlines()) == 1


def test_cmrc2018_submission_is_one_object_of_question_ids(run: dict, tmp_path: Path) -> None:
    """eval --submission DIR writes CMRC 2018's leaderboard file: {question_id: answer}."""
    preds, sub = tmp_path / "dev.jsonl", tmp_path / "sub"
    args = ["eval", "--task", "cmrc2018", "--model", run["out"], "--data-dir", run["data"]]
    args += ["--split", "dev", "--device", "cpu", "--json", "--submission", sub]
    r = invoke(*args, "--predictions", preds)
    assert r.exit_code == 0, r.output
    answers = json.loads((sub / "cmrc2018_predict.json").read_text(encoding="utf-8"))
    recs = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines()]
    assert answers == {rec["id"]: rec["answer"] for rec in recs} and len(answers) == 30
    again = invoke(*args)
    assert again.exit_code == 2 and "--overwrite" in again.output
