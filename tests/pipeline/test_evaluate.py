"""eval on a task split: metrics match a hand computation from the written predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from albertzh.errors import ConfigError, InputError, ModelDirError
from albertzh.pipeline import evaluate as ev
from albertzh.pipeline import finetune as ft
from albertzh.pipeline.evaluate import EvalConfig
from tests.pipeline.test_finetune import cfg_for, make_model_dir, make_senti_data


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ev")
    base = make_model_dir(root / "base")
    data = make_senti_data(root / "data", n_train=64, n_dev=30, seed=3)
    # Two epochs only: a half-trained model, so predictions are not all right.
    ft.run(cfg_for(base, data, root / "out", epochs=2, max_train_examples=64))
    return {"base": base, "data": data, "out": root / "out"}


def test_metrics_match_hand_computation(tmp_path: Path, model: dict) -> None:
    preds = tmp_path / "p" / "dev.jsonl"
    s = ev.run(
        EvalConfig(
            task="chnsenticorp",
            model=model["out"],
            data_dir=model["data"],
            predictions=preds,
            device="cpu",
            batch_size=7,
        )
    )
    rows = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines()]
    gold = [
        line.split("\t")[0]
        for line in (model["data"] / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    ]
    assert len(rows) == len(gold) == s.figures["rows"] == 30
    assert [r["line"] for r in rows] == list(range(2, 32))  # input order, file line numbers
    pred = [r["label"] for r in rows]
    for r in rows:
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    acc = sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)
    assert s.figures["accuracy"] == pytest.approx(acc, abs=1e-6)
    f1s = []
    for c in ("0", "1"):
        tp = sum(p == c and g == c for p, g in zip(pred, gold, strict=True))
        prec = tp / max(1, pred.count(c))
        rec = tp / max(1, gold.count(c))
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        assert s.to_dict()["per_class"][c]["precision"] == pytest.approx(prec)
        assert s.to_dict()["per_class"][c]["recall"] == pytest.approx(rec)
    assert s.figures["macro_f1"] == pytest.approx(sum(f1s) / 2, abs=1e-6)
    nll = -sum(math.log(r["probabilities"][g]) for r, g in zip(rows, gold, strict=True)) / 30
    assert s.figures["loss"] == pytest.approx(nll, abs=1e-3)
    assert "per_class" not in s.figures  # only in the JSON form


def test_unlabelled_split_gives_predictions_only(tmp_path: Path, model: dict) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "test.tsv").write_text("text_a\n房间很好的\n价格太贵\n服务不错\n", encoding="utf-8")
    preds = tmp_path / "test.jsonl"
    s = ev.run(
        EvalConfig(
            task="chnsenticorp",
            split="test",
            model=model["out"],
            data_dir=data,
            predictions=preds,
            device="cpu",
        )
    )
    assert s.figures["labelled"] is False and "accuracy" not in s.figures
    rows = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 4] and all(r["label"] in ("0", "1") for r in rows)


def test_model_and_task_must_agree(tmp_path: Path, model: dict) -> None:
    with pytest.raises(ConfigError, match="labels"):
        ev.run(EvalConfig(task="ocnli", model=model["out"], data_dir=model["data"], device="cpu"))
    with pytest.raises(ModelDirError, match="not a finetuned classifier"):
        ev.run(
            EvalConfig(
                task="chnsenticorp", model=model["base"], data_dir=model["data"], device="cpu"
            )
        )
    with pytest.raises(InputError, match="no test file"):
        ev.run(
            EvalConfig(
                task="chnsenticorp",
                split="test",
                model=model["out"],
                data_dir=model["data"],
                device="cpu",
            )
        )


def test_generic_eval_uses_model_labels(tmp_path: Path, model: dict) -> None:
    data = tmp_path / "g"
    data.mkdir()
    (data / "dev.jsonl").write_text(
        '{"s": "房间很好的", "y": 1}\n{"s": "价格太贵", "y": 0}\n{"s": "早餐", "y": 7}\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError, match=r"dev.jsonl: line 3: unknown label '7'"):
        ev.run(
            EvalConfig(
                task="generic",
                text_a="s",
                label="y",
                model=model["out"],
                data_dir=data,
                device="cpu",
            )
        )


def test_config_needs_task_or_shards() -> None:
    with pytest.raises(ValueError, match="--task and --data-dir"):
        EvalConfig(model=Path("m"))
    with pytest.raises(ValueError, match="--shards excludes"):
        EvalConfig(model=Path("m"), shards=Path("s"), task="lcqmc")
