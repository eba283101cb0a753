"""The task registry: every file format, label handling, errors naming file and line, metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from albertzh.data import tasks as T
from albertzh.errors import ConfigError, InputError
from tests.conftest import shared_path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# --------------------------------------------------------------------------- TSV tasks


@pytest.mark.parametrize("name", ["lcqmc", "bq"])
@pytest.mark.parametrize("ext", [".tsv", ".txt"])
def test_pair_tsv_with_and_without_header(tmp_path: Path, name: str, ext: str) -> None:
    _write(
        tmp_path / f"train{ext}",
        "text_a\ttext_b\tlabel\n我爱北京\t北京我爱\t1\n天气好\t吃饭了\t0\n",
    )
    _write(tmp_path / f"dev{ext}", "今天下雨\t明天下雨\t0\n")
    task = T.get_task(name)
    path, train = T.load_split(task, tmp_path, "train")
    assert path.name == f"train{ext}"
    assert [(e.text_a, e.text_b, e.label, e.line) for e in train] == [
        ("我爱北京", "北京我爱", "1", 2),
        ("天气好", "吃饭了", "0", 3),
    ]
    _, dev = T.load_split(task, tmp_path, "dev")
    assert dev[0].label == "0" and dev[0].line == 1


def test_unlabelled_test_split_gives_none_labels(tmp_path: Path) -> None:
    _write(tmp_path / "test.tsv", "问一\t问二\n问三\t问四\n")
    _, ex = T.load_split(T.get_task("lcqmc"), tmp_path, "test")
    assert [e.label for e in ex] == [None, None] and ex[1].text_b == "问四"
    with pytest.raises(InputError, match=r"test.tsv: line 1: missing label"):
        T.load_split(T.get_task("lcqmc"), tmp_path, "test", require_labels=True)


def test_unknown_label_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path / "dev.tsv", "a\tb\t1\nc\td\t2\n")
    with pytest.raises(InputError, match=r"dev.tsv: line 2: unknown label '2'"):
        T.load_split(T.get_task("lcqmc"), tmp_path, "dev")


def test_partly_labelled_file_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "dev.tsv", "a\tb\t1\nc\td\n")
    with pytest.raises(InputError, match=r"dev.tsv: line 2: missing label"):
        T.load_split(T.get_task("lcqmc"), tmp_path, "dev")


def test_missing_column_and_empty_file(tmp_path: Path) -> None:
    _write(tmp_path / "train.tsv", "label\tsentence\n1\t好\n")
    with pytest.raises(InputError, match=r"train.tsv: line 1: missing column 'text_b'"):
        T.load_split(T.get_task("lcqmc"), tmp_path, "train")
    _write(tmp_path / "dev.tsv", "\n")
    with pytest.raises(InputError, match=r"dev.tsv: empty"):
        T.load_split(T.get_task("lcqmc"), tmp_path, "dev")
    with pytest.raises(InputError, match=r"no test file for task lcqmc"):
        T.load_split(T.get_task("lcqmc"), tmp_path, "test")


def test_bad_utf8_names_line(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_bytes(b"a\tb\t1\n" + b"\xff\xfe\tx\t0\n")
    with pytest.raises(InputError, match=r"train.tsv: line 2: not valid UTF-8"):
        T.load_split(T.get_task("lcqmc"), tmp_path, "train")


def test_chnsenticorp_header_and_quotes(tmp_path: Path) -> None:
    _write(tmp_path / "train.tsv", 'label\ttext_a\n1\t房间"很"干净\n0\t太吵了\n')
    _, ex = T.load_split(T.get_task("chnsenticorp"), tmp_path, "train")
    assert [(e.label, e.text_a, e.text_b) for e in ex] == [
        ("1", '房间"很"干净', None),
        ("0", "太吵了", None),
    ]


def test_xnli_plain_and_release_layouts(tmp_path: Path) -> None:
    task = T.get_task("xnli")
    _write(tmp_path / "a" / "train.tsv", "premise\thypo\tlabel\n他来了\t他没来\tcontradictory\n")
    _, ex = T.load_split(task, tmp_path / "a", "train")
    assert ex[0].label == "contradiction" and ex[0].text_b == "他没来"
    header = "language\tgold_label\tsentence1_binary_parse\tsentence1\tsentence2\n"
    rows = (
        "en\tneutral\tx\tHe came\tHe left\nzh\tentailment\tx\t他来了\t有人来了\nzh\t-\tx\t甲\t乙\n"
    )
    _write(tmp_path / "b" / "xnli.dev.tsv", header + rows)
    _, ex = T.load_split(task, tmp_path / "b", "dev")
    assert [(e.text_a, e.label, e.line) for e in ex] == [("他来了", "entailment", 3)]


# --------------------------------------------------------------------------- CLUE JSON lines


def test_clue_nli_drops_dash_and_reads_test_without_labels(tmp_path: Path) -> None:
    rows = [
        {"sentence1": "猫在睡觉", "sentence2": "猫醒着", "label": "contradiction"},
        {"sentence1": "下雨了", "sentence2": "地湿了", "label": "-"},
        {"sentence1": "他笑了", "sentence2": "他很开心", "label": "entailment"},
    ]
    for name in ("cmnli", "ocnli"):
        _jsonl(tmp_path / name / "dev.json", rows)
        _jsonl(tmp_path / name / "test.json", [{"sentence1": "甲", "sentence2": "乙", "id": 0}])
        _, dev = T.load_split(T.get_task(name), tmp_path / name, "dev")
        assert [(e.label, e.line) for e in dev] == [("contradiction", 1), ("entailment", 3)]
        _, test = T.load_split(T.get_task(name), tmp_path / name, "test")
        assert test[0].label is None and test[0].text_b == "乙"


def test_clue_single_and_pair_tasks(tmp_path: Path) -> None:
    _jsonl(
        tmp_path / "afqmc" / "train.json",
        [{"sentence1": "花呗", "sentence2": "借呗", "label": "0"}],
    )
    _jsonl(
        tmp_path / "tnews" / "train.json",
        [{"label": "102", "label_desc": "news_entertainment", "sentence": "明星", "keywords": ""}],
    )
    _jsonl(
        tmp_path / "iflytek" / "train.json",
        [{"label": "118", "label_des": "其他", "sentence": "应用"}],
    )
    _jsonl(
        tmp_path / "csl" / "train.json",
        [{"id": 1, "abst": "本文提出", "keyword": ["神经网络", "分词"], "label": "1"}],
    )
    got = {
        name: T.load_split(T.get_task(name), tmp_path / name, "train")[1][0]
        for name in ("afqmc", "tnews", "iflytek", "csl")
    }
    assert (got["afqmc"].text_a, got["afqmc"].text_b, got["afqmc"].label) == ("花呗", "借呗", "0")
    assert (got["tnews"].text_a, got["tnews"].text_b, got["tnews"].label) == ("明星", None, "102")
    assert got["tnews"].label_desc == "news_entertainment"
    assert got["iflytek"].label == "118" and got["iflytek"].label_desc == "其他"
    assert T.label_descriptions([got["tnews"], got["iflytek"]]) == {
        "102": "news_entertainment",
        "118": "其他",
    }
    assert (got["csl"].text_a, got["csl"].text_b) == ("神经网络，分词", "本文提出")
    assert T.get_task("tnews").num_labels == 15 and T.get_task("iflytek").num_labels == 119


def test_json_errors_name_line(tmp_path: Path) -> None:
    _write(tmp_path / "dev.json", '{"sentence": "好", "label": "100"}\n{"sentence": \n')
    with pytest.raises(InputError, match=r"dev.json: line 2: invalid JSON"):
        T.load_split(T.get_task("tnews"), tmp_path, "dev")
    _write(tmp_path / "dev.json", '{"sentence": "好", "label": "100"}\n{"label": "101"}\n')
    with pytest.raises(InputError, match=r"dev.json: line 2: missing field 'sentence'"):
        T.load_split(T.get_task("tnews"), tmp_path, "dev")
    _write(tmp_path / "dev.json", '{"sentence": "好", "label": 105}\n')
    with pytest.raises(InputError, match=r"dev.json: line 1: unknown label '105'"):
        T.load_split(T.get_task("tnews"), tmp_path, "dev")


def test_fewclue_file_names(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train_few_all.json", [{"sentence": "球赛", "label": 103}])
    path, ex = T.load_split(T.get_task("tnews"), tmp_path, "train")
    assert path.name == "train_few_all.json" and ex[0].label == "103"


# --------------------------------------------------------------------------- generic


def test_generic_csv_tsv_jsonl(tmp_path: Path) -> None:
    task = T.get_task("generic", text_a="q", text_b="d", label="y")
    _write(tmp_path / "c" / "train.csv", 'id,q,d,y\n1,"你好,世界",再见,pos\n2,早,晚,neg\n')
    _, ex = T.load_split(task, tmp_path / "c", "train")
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [
        ("你好,世界", "再见", "pos"),
        ("早", "晚", "neg"),
    ]
    fixed = T.labels_of(task, ex, tmp_path / "c" / "train.csv")
    assert fixed.labels == ("neg", "pos") and fixed.num_labels == 2
    _write(tmp_path / "t" / "train.tsv", "y\tq\td\npos\t甲\t乙\n")
    assert T.load_split(task, tmp_path / "t", "train")[1][0].text_b == "乙"
    _jsonl(tmp_path / "j" / "train.jsonl", [{"q": "甲", "d": "乙", "y": 3}])
    assert T.load_split(task, tmp_path / "j", "train")[1][0].label == "3"
    # dev labels are checked against the labels learnt from train
    _write(tmp_path / "c" / "dev.csv", "q,d,y\n甲,乙,pos\n丙,丁,meh\n")
    with pytest.raises(InputError, match=r"dev.csv: line 3: unknown label 'meh'"):
        T.read_examples(fixed, tmp_path / "c" / "dev.csv")


def test_generic_regression_and_errors(tmp_path: Path) -> None:
    task = T.get_task("generic", text_a="s", label="score", regression=True)
    assert task.num_labels == 1 and task.metric == "pearson"
    _write(tmp_path / "train.tsv", "s\tscore\n好\t4.5\n差\t1\n")
    _, ex = T.load_split(task, tmp_path, "train")
    assert [e.label for e in ex] == [4.5, 1.0]
    _write(tmp_path / "dev.tsv", "s\tscore\n好\tfive\n")
    with pytest.raises(InputError, match=r"dev.tsv: line 2: label 'five' is not a number"):
        T.load_split(task, tmp_path, "dev")
    _write(tmp_path / "test.tsv", "text\tscore\n好\t1\n")
    with pytest.raises(InputError, match=r"test.tsv: line 1: missing column 's'"):
        T.load_split(task, tmp_path, "test")
    with pytest.raises(ConfigError, match="--text-a"):
        T.get_task("generic")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        T.get_task("nope")
    with pytest.raises(ConfigError, match="only apply to --task generic"):
        T.get_task("lcqmc", text_a="x")


def test_generic_needs_two_labels(tmp_path: Path) -> None:
    task = T.get_task("generic", text_a="s", label="y")
    _write(tmp_path / "train.tsv", "s\ty\n好\ta\n差\ta\n")
    path, ex = T.load_split(task, tmp_path, "train")
    with pytest.raises(InputError, match="at least 2 distinct labels"):
        T.labels_of(task, ex, path)


# --------------------------------------------------------------------------- shared data


def test_shared_chnsenticorp_loads() -> None:
    d = shared_path("tasks/chnsenticorp")
    _, train = T.load_split(T.get_task("chnsenticorp"), d, "train")
    _, dev = T.load_split(T.get_task("chnsenticorp"), d, "dev")
    assert len(train) == 9600 and len(dev) == 1200
    assert T.infer_labels(train) == ("0", "1")


def test_shared_ocnli_and_tnews_fewshot_load() -> None:
    d = shared_path("tasks/ocnli")
    _, dev = T.load_split(T.get_task("ocnli"), d, "dev")
    assert len(dev) == 2950 and {e.label for e in dev} == set(T.NLI_LABELS)  # 50 "-" rows dropped
    d = shared_path("tasks/tnews_fewshot")
    task = T.get_task("tnews")
    sizes = [len(T.load_split(task, d, s)[1]) for s in T.SPLITS]
    assert sizes == [1185, 1098, 2010]


# --------------------------------------------------------------------------- metrics


def test_classification_metrics_by_hand() -> None:
    # true: a a a b b c ; pred: a a b b c c
    m = T.classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    pa, ra = 2 / 2, 2 / 3
    pb, rb = 1 / 2, 1 / 2
    pc, rc = 1 / 2, 1 / 1
    f = [2 * p * r / (p + r) for p, r in ((pa, ra), (pb, rb), (pc, rc))]
    assert m["macro_f1"] == pytest.approx(sum(f) / 3)
    assert m["per_class"]["a"]["recall"] == pytest.approx(ra)
    assert m["per_class"]["c"]["precision"] == pytest.approx(pc)
    assert m["per_class"]["b"]["support"] == 2


def test_class_never_predicted_has_zero_f1() -> None:
    m = T.classification_metrics([0, 1], [0, 0], ["x", "y"])
    assert m["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_regression_metrics_by_hand() -> None:
    m = T.regression_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0])
    assert m["mse"] == pytest.approx((0 + 1 + 1 + 1) / 4)
    # spearman: ranks [1,2,3,4] vs [1,3,2,4] -> 1 - 6*2/(4*15) = 0.8
    assert m["spearman"] == pytest.approx(0.8)
    a, b = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0]
    ma, mb = 2.5, 2.75
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    expect = cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    assert m["pearson"] == pytest.approx(expect)


# --------------------------------------------------------------------------- extra fields


def test_an_extra_tsv_field_is_an_error_in_every_layout(tmp_path: Path) -> None:
    # A tab inside a text used to cut it silently (the third field was dropped).
    senti = T.get_task("chnsenticorp")
    _write(tmp_path / "a" / "train.tsv", "1\t房间很干净\n0\t太吵\t了\n")
    with pytest.raises(InputError, match=r"train.tsv: line 2: 3 tab-separated fields, the "):
        T.load_split(senti, tmp_path / "a", "train")
    # With a header the header's width counts (the chnsenticorp layout with its header).
    _write(tmp_path / "b" / "train.tsv", "label\ttext_a\n1\t好\n0\t不\t好\n")
    with pytest.raises(InputError, match=r"line 3: 3 tab-separated fields, the header \(line 1\)"):
        T.load_split(senti, tmp_path / "b", "train")
    # Positional generic fields: a row wider than the first one.
    task = T.get_task("generic", text_a="1", label="0")
    _write(tmp_path / "c" / "train.tsv", "a\t好的\nb\t不\t好\n")
    with pytest.raises(InputError, match=r"line 2: 3 tab-separated fields, line 1 has 2"):
        T.load_split(task, tmp_path / "c", "train")
    # CSV: a row with more fields than the header.
    csv_task = T.get_task("generic", text_a="q", label="y")
    _write(tmp_path / "d" / "train.csv", "q,y\n你好,pos\n你,好,neg\n")
    with pytest.raises(InputError, match=r"line 3: 3 comma-separated fields, the header"):
        T.load_split(csv_task, tmp_path / "d", "train")


def test_empty_trailing_fields_are_fine(tmp_path: Path) -> None:
    _write(tmp_path / "train.tsv", "label\ttext_a\n1\t房间很干净\t\n0\t太吵了\t \n")
    _, ex = T.load_split(T.get_task("chnsenticorp"), tmp_path, "train")
    assert [(e.label, e.text_a) for e in ex] == [("1", "房间很干净"), ("0", "太吵了")]
