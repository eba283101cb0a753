"""Multiple choice end to end on a 2-layer toy model: reading (C3 and JSON lines), encoding,
finetune, eval, predict, transformers parity of the saved head, ONNX export, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from albertzh.data import choice as C
from albertzh.data import tasks as T
from albertzh.errors import InputError
from albertzh.train import choice as MC
from tests.cli.conftest import one_error_line, root, runner
from tests.pipeline.test_finetune import NEG, POS, TOPIC, make_model_dir


def invoke(*args: object, input: str | None = None):  # noqa: ANN201
    return runner.invoke(root, [str(a) for a in args], input=input)


def question(rng: random.Random, qid: str) -> dict:
    """2-4 options, exactly one of them a praise word (the answer)."""
    n = rng.randint(2, 4)
    options = [rng.choice(POS), *rng.sample(NEG, n - 1)]
    rng.shuffle(options)
    right = next(i for i, o in enumerate(options) if o in POS)
    context = "".join(rng.sample(TOPIC, 2)) + "的" + rng.choice(POS + NEG)
    return {"id": qid, "context": context, "question": "问", "choices": options, "label": right}


def make_mc_data(path: Path, seed: int = 0) -> Path:
    """train (160) / dev (40) / test (5, unlabelled) JSON lines of the generic ``mc`` task."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 160), ("dev", 40), ("test", 5)):
        rows = [question(rng, f"{split}-{i}") for i in range(n)]
        if split == "test":
            rows = [{k: v for k, v in r.items() if k != "label"} for r in rows]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (path / f"{split}.json").write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("mc")
    base = make_model_dir(tmp / "base")
    data = make_mc_data(tmp / "data")
    out = tmp / "out"
    r = invoke(
        "finetune", "--task", "mc", "--model", base, "--data-dir", data, "-o", out,
        "--lr", "3e-3", "--epochs", "4", "--batch-size", "16", "--max-seq-len", "16",
        "--device", "cpu", "--seed", "1", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return {"tmp": tmp, "base": base, "data": data, "out": out, "summary": json.loads(r.stdout)}


# --------------------------------------------------------------------------- reading


def write_c3(path: Path, docs: list) -> Path:
    path.write_text(json.dumps(docs, ensure_ascii=False), encoding="utf-8")
    return path


def test_c3_layout_reads_questions_with_ids_and_answers(tmp_path: Path) -> None:
    docs = [
        [
            ["男：你好", "女：你好"],
            [{"question": "谁?", "choice": ["男", "女"], "answer": "女"}],
            "d1",
        ],
        [["文"], [{"question": "q", "choice": ["a", "b", "c"], "answer": "a"}] * 2, "d2"],
    ]
    qs = C.read_choices(write_c3(tmp_path / "dev.json", docs), "c3", require_labels=True)
    assert [(q.id, q.label, len(q.choices)) for q in qs] == [
        ("d1-0", 1, 2),
        ("d2-0", 0, 3),
        ("d2-1", 0, 3),
    ]
    assert qs[0].context == "男：你好\n女：你好" and qs[0].line == 1
    # CLUE's test files: per-question ids, no answers.
    test = [[["文"], [{"question": "q", "choice": ["a", "b"], "id": 7}], "d"]]
    (q,) = C.read_choices(write_c3(tmp_path / "test.json", test), "c3")
    assert (q.id, q.label) == (7, None)  # as the file gives it


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"question": "q", "choices": [], "label": 0}, "line 1: no options"),
        ({"question": "q", "label": 0}, "line 1: no options"),
        ({"question": "q", "choices": ["a"], "label": 0}, "only 1 option"),
        ({"question": "q", "choices": ["a", "b"], "label": 2}, "label 2 out of range"),
        ({"question": "q", "choices": ["a", "b"], "answer": "c"}, "answer 'c' is not one"),
    ],
)
def test_bad_questions_name_the_file_and_line(tmp_path: Path, obj: dict, message: str) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(obj) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        C.read_choices(path, "jsonl")
    assert str(info.value).startswith(str(path))


def test_c3_bad_answer_names_the_document_and_question(tmp_path: Path) -> None:
    docs = [[["文"], [{"question": "q", "choice": ["a", "b"], "answer": "z"}], "d9"]]
    with pytest.raises(InputError, match=r"document 1 \(id d9\), question 1: answer 'z'"):
        C.read_choices(write_c3(tmp_path / "train.json", docs), "c3")


def test_real_c3_dev_reads(c3_dir: Path) -> None:
    task = T.get_task("c3")
    qs = C.read_choices(T.split_file(task, c3_dir, "dev"), task.fmt, require_labels=True)
    assert len(qs) > 300 and {len(q.choices) for q in qs} <= {2, 3, 4}
    assert all(q.label is not None and 0 <= q.label < len(q.choices) for q in qs)


# --------------------------------------------------------------------------- encoding


class CharTok:
    cls_id, sep_id, pad_id = 2, 3, 0

    class _Enc:
        def __init__(self, ids: list[int]) -> None:
            self.ids = ids

    def encode(self, text: str) -> _Enc:
        return self._Enc([10 + ord(c) % 50 for c in text])


def test_long_context_is_cut_never_the_option() -> None:
    tok = CharTok()
    ids, types = MC.encode_option(tok, "一" * 50, "问题", "选项甲", max_len=16)
    assert len(ids) == len(types) == 16
    option = tok.encode("问题选项甲").ids
    assert ids[-6:-1] == option and ids[-1] == tok.sep_id and ids[0] == tok.cls_id
    assert types == [0] * 10 + [1] * 6
    # Question + option longer than the room: the question loses its start, the option stays.
    ids, _ = MC.encode_option(tok, "文", "问" * 20, "选项", max_len=10)
    assert ids[-3:-1] == tok.encode("选项").ids and len(ids) == 10


def test_padding_options_are_left_out_of_the_softmax() -> None:
    from albertzh.model import AlbertConfig, AlbertForMultipleChoice

    torch.manual_seed(0)
    cfg = AlbertConfig(
        vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=16, max_position_embeddings=32,
    )  # fmt: skip
    model = AlbertForMultipleChoice(cfg).eval()
    encoded = [[([2, 5, 3, 6, 3], [0, 0, 0, 1, 1])] * 2, [([2, 7, 3], [0, 0, 0])] * 4]
    batch = MC.collate_choices(encoded, [0, 1], pad_id=0)
    assert batch["input_ids"].shape == (2, 4, 5)
    assert MC.choice_mask(batch).tolist() == [[True, True, False, False], [True] * 4]
    logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    labels = torch.tensor([1, 0])
    loss = model.compute_loss(logits.logits, labels, MC.choice_mask(batch))
    first = torch.nn.functional.cross_entropy(logits.logits[:1, :2], labels[:1])
    second = torch.nn.functional.cross_entropy(logits.logits[1:], labels[1:])
    assert torch.allclose(loss, (first + second) / 2, atol=1e-6)
    got = MC.choice_logits(model, encoded, pad_id=0, batch_size=2)
    assert [g.shape for g in got] == [(2,), (4,)]
    np.testing.assert_allclose(got[0], logits.logits[0, :2].detach().numpy(), atol=1e-5)


# --------------------------------------------------------------------------- finetune, eval, predict


def test_finetune_learns_and_writes_a_multiple_choice_dir(run: dict) -> None:
    s, out = run["summary"], run["out"]
    assert s["task"] == "mc" and s["train_examples"] == 160 and s["dev_examples"] == 40
    assert s["stopped"] == "completed" and s["best_dev_accuracy"] >= 0.9
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["AlbertForMultipleChoice"]
    meta = json.loads((out / "albertzh.json").read_text())
    assert meta["kind"] == "multiple_choice" and meta["max_seq_len"] == 16
    report = json.loads((out / "metrics.json").read_text())
    assert report["metric"] == "accuracy"


def test_transformers_loads_the_head_with_the_same_logits(run: dict) -> None:
    transformers = pytest.importorskip("transformers")
    chooser = MC.load_chooser(run["out"], device="cpu")
    hf, info = transformers.AlbertForMultipleChoice.from_pretrained(
        run["out"], output_loading_info=True
    )
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    qs = [C.ChoiceExample("房间的很好", "问", ("很好", "很差", "失望"), None, 0, "x")]
    batch = MC.collate_choices(MC.encode_questions(chooser.tokenizer, qs, 16), [0], 0)
    with torch.no_grad():
        ours = chooser.model(**batch).logits
        theirs = hf.eval()(**batch).logits
    assert ours.shape == (1, 3)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_eval_json_and_predictions(run: dict, tmp_path: Path) -> None:
    preds = tmp_path / "dev.jsonl"
    r = invoke(
        "eval", "--task", "mc", "--model", run["out"], "--data-dir", run["data"], "--split",
        "dev", "--predictions", preds, "--batch-size", "7", "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["rows"] == 40 and s["labelled"]
    assert s["accuracy"] == pytest.approx(run["summary"]["best_dev_accuracy"], abs=1e-6)
    recs = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines()]
    assert len(recs) == 40 and recs[0]["id"] == "dev-0"
    assert sum(r["label"] == r["gold"] for r in recs) / 40 == pytest.approx(s["accuracy"])
    assert all(len(r["scores"]) == len(r["probabilities"]) for r in recs)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in recs)
    # Again without --overwrite: refused, the file kept.
    again = invoke(
        "eval", "--task", "mc", "--model", run["out"], "--data-dir", run["data"],
        "--predictions", preds, "--device", "cpu",
    )  # fmt: skip
    assert again.exit_code == 2 and "--overwrite" in one_error_line(again)


def test_eval_unlabelled_test_split_gives_predictions_only(run: dict, tmp_path: Path) -> None:
    r = invoke(
        "eval", "--task", "mc", "--model", run["out"], "--data-dir", run["data"], "--split",
        "test", "--predictions", tmp_path / "p.jsonl", "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["labelled"] is False and "accuracy" not in s and s["rows"] == 5


def test_predict_prints_the_pick_and_every_option_score(run: dict) -> None:
    lines = [
        {"context": "房间的很好", "question": "问", "choices": ["很差", "很好"]},
        {
            "context": "服务",
            "question": "问",
            "choices": ["失望", "讨厌", "喜欢", "太脏"],
            "id": "q",
        },
    ]
    text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    r = invoke("predict", "--model", run["out"], "--device", "cpu", "-q", input=text)
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [r["answer"] for r in recs] == ["很好", "喜欢"]
    assert [len(r["scores"]) for r in recs] == [2, 4] and recs[1]["id"] == "q"


def test_predict_bad_line_is_one_error(run: dict) -> None:
    r = invoke("predict", "--model", run["out"], "--device", "cpu", input='{"question": "q"}\n')
    assert r.exit_code == 2
    assert "<stdin>: line 1: no options" in one_error_line(r)


def test_export_onnx_matches_pytorch(run: dict, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from albertzh.pipeline import export

    s = export.run(export.ExportConfig(model=run["out"], output=tmp_path / "onnx"))
    assert s.figures["outputs"] == ["logits"]
    assert s.figures["onnxruntime_max_abs_diff"] <= 1e-4
    from albertzh.model.onnx import ort_session

    sess = ort_session(tmp_path / "onnx" / "model.onnx")
    assert [len(i.shape) for i in sess.get_inputs()] == [3, 3, 3]


def test_c3_test_split_gives_the_clue_submission_file(run: dict, tmp_path: Path) -> None:
    qs = [{"question": "问", "choice": ["很差", "很好", "失望"], "id": 5}]
    docs = [[["房间的很好"], qs, "d1"], [["服务"], [{**qs[0], "id": 6}], "d2"]]
    (tmp_path / "data").mkdir()
    write_c3(tmp_path / "data" / "test1.1.json", docs)
    r = invoke(
        "eval", "--task", "c3", "--model", run["out"], "--data-dir", tmp_path / "data",
        "--split", "test", "--submission", tmp_path / "sub", "--device", "cpu",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "sub" / "c311_predict.json").read_text("utf-8").splitlines()
    recs = [json.loads(x) for x in lines]
    assert [r["id"] for r in recs] == [5, 6] and all(r["label"] in (0, 1, 2) for r in recs)
    assert set(recs[0]) == {"id", "label"}
