"""CLUE leaderboard files: ids kept from test files, ``eval --split test --submission DIR``
under CLUE's file names, and the CLUEWSC2020 reader (marked spans)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from albertzh.data import tasks as T
from albertzh.errors import InputError
from tests.cli.conftest import one_error_line, root, runner
from tests.pipeline.test_finetune import make_model_dir


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(root, [str(a) for a in args])


def make_classifier(base: Path, out: Path, labels: list[str]) -> Path:
    """A classifier dir with random weights for ``labels`` (what finetune would write)."""
    from albertzh.model import AlbertForSequenceClassification
    from albertzh.tokenizer import load_tokenizer

    model = AlbertForSequenceClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )
    model.save_pretrained(out, tokenizer=load_tokenizer(base), meta={"max_seq_len": 32})
    return out


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("clue") / "base")


@pytest.fixture(scope="module")
def tnews(base: Path) -> Path:
    return make_classifier(base, base.parent / "tnews", list(T.TNEWS_LABELS))


TNEWS_TEST = [
    {"id": 0, "sentence": "酒店的房间很好", "keywords": ""},
    {"id": 1, "sentence": "服务很差", "keywords": ""},
    {"id": 7, "sentence": "价格便宜", "keywords": ""},
]


def test_test_file_ids_are_kept_as_given(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "test.json", TNEWS_TEST)
    examples = T.read_examples(T.get_task("tnews"), path)
    assert [(e.id, e.label) for e in examples] == [(0, None), (1, None), (7, None)]


def test_eval_writes_the_clue_file_with_the_ids(tnews: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_lines(data / "test.json", TNEWS_TEST)
    sub, preds = tmp_path / "submission", tmp_path / "preds.jsonl"
    r = invoke(
        "eval", "--task", "tnews", "--model", tnews, "--data-dir", data, "--split", "test",
        "--submission", sub, "--predictions", preds, "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["submission"] == str(sub / "tnews11_predict.json") and s["labelled"] is False
    recs = [json.loads(x) for x in (sub / "tnews11_predict.json").read_text("utf-8").splitlines()]
    assert [r["id"] for r in recs] == [0, 1, 7]
    assert all(set(r) <= {"id", "label", "label_desc"} for r in recs)
    assert all(r["label"] in T.TNEWS_LABELS for r in recs)
    predictions = [json.loads(x) for x in preds.read_text("utf-8").splitlines()]
    assert [p["id"] for p in predictions] == [0, 1, 7]
    assert [p["label"] for p in predictions] == [r["label"] for r in recs]

    # Again: refused without --overwrite (the file kept), replaced with it.
    before = (sub / "tnews11_predict.json").read_bytes()
    again = ("eval", "--task", "tnews", "--model", tnews, "--data-dir", data, "--split", "test")
    r = invoke(*again, "--submission", sub, "--device", "cpu")
    assert "--overwrite" in one_error_line(r, "tnews11_predict.json")
    assert (sub / "tnews11_predict.json").read_bytes() == before
    r = invoke(*again, "--submission", sub, "--device", "cpu", "--overwrite")
    assert r.exit_code == 0, r.output


def test_rows_without_ids_are_one_error_and_nothing_written(tnews: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_lines(data / "test.json", [{"sentence": "很好"}])
    r = invoke(
        "eval", "--task", "tnews", "--model", tnews, "--data-dir", data, "--split", "test",
        "--submission", tmp_path / "sub", "--device", "cpu",
    )  # fmt: skip
    one_error_line(r, "test.json: line 1: no 'id' field")
    assert not (tmp_path / "sub" / "tnews11_predict.json").exists()


def test_submission_needs_a_clue_task_and_stays_out_of_inputs(tnews: Path, tmp_path: Path) -> None:
    r = invoke(
        "eval", "--task", "lcqmc", "--model", tnews, "--data-dir", tmp_path, "--submission",
        tmp_path / "sub",
    )  # fmt: skip
    one_error_line(r, "--submission", "lcqmc")
    r = invoke(
        "eval", "--task", "tnews", "--model", tnews, "--data-dir", tmp_path, "--submission",
        tnews,
    )  # fmt: skip
    assert r.exit_code == 2 and "Traceback" not in r.output


# --------------------------------------------------------------------------- CLUEWSC2020


def wsc(i: int, label: str | None = "true", **target: object) -> dict:
    row = {
        "id": i,
        "text": "小明把书放在桌子上，它很重。",
        "target": {"span1_text": "书", "span1_index": 3, "span2_text": "它", "span2_index": 10},
    }
    row["target"].update(target)  # type: ignore[union-attr]
    if label is not None:
        row["label"] = label
    return row


def test_wsc_rows_mark_both_spans(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dev.json", [wsc(0), wsc(1, "false")])
    task = T.get_task("cluewsc2020")
    examples = T.read_examples(task, path, require_labels=True)
    assert examples[0].text_a == "小明把_书_放在桌子上，[它]很重。"
    assert examples[0].text_b == "它指的是书"
    assert [(e.label, e.id) for e in examples] == [("true", 0), ("false", 1)]


def test_wsc_span_not_at_its_index_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dev.json", [wsc(0), wsc(1, span1_index=5)])
    with pytest.raises(
        InputError, match=r"dev.json: line 2: span1_text '书' is not at span1_index 5"
    ):
        T.read_examples(T.get_task("cluewsc2020"), path)


def test_wsc_submission(base: Path, tmp_path: Path) -> None:
    model = make_classifier(base, tmp_path / "wsc", ["true", "false"])
    data = tmp_path / "data"
    write_lines(data / "test.json", [wsc(3, None), wsc(4, None)])
    r = invoke(
        "eval", "--task", "cluewsc2020", "--model", model, "--data-dir", data, "--split",
        "test", "--submission", tmp_path / "sub", "--device", "cpu",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "sub" / "cluewsc2020_predict.json").read_text("utf-8").splitlines()
    recs = [json.loads(x) for x in lines]
    assert [r["id"] for r in recs] == [3, 4] and {r["label"] for r in recs} <= {"true", "false"}


def test_every_clue_task_has_its_file_name() -> None:
    assert T.CLUE_SUBMISSION_FILES == {
        "tnews": "tnews11_predict.json",
        "iflytek": "iflytek_predict.json",
        "ocnli": "ocnli_50k_predict.json",
        "afqmc": "afqmc_predict.json",
        "cmnli": "cmnli_predict.json",
        "csl": "csl_predict.json",
        "cluewsc2020": "cluewsc2020_predict.json",
        "c3": "c311_predict.json",
        "cmrc2018": "cmrc2018_predict.json",
        "cluener": "cluener_predict.json",
    }
    assert set(T.CLUE_SUBMISSION_FILES) <= set(T.TASKS)
