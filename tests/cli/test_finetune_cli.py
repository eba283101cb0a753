"""finetune / eval / predict through the CLI: every flag, JSON output, stdin, exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from tests.cli.conftest import one_error_line, root, runner
from tests.pipeline.test_finetune import make_model_dir, make_senti_data


def invoke(*args: object, input: str | None = None):  # noqa: ANN201
    return runner.invoke(root, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    base = make_model_dir(tmp / "base")
    data = make_senti_data(tmp / "data", n_train=160, n_dev=40, seed=5)
    out = tmp / "out"
    r = invoke(
        "finetune", "--task", "chnsenticorp", "--model", base, "--data-dir", data, "-o", out,
        "--lr", "2e-3", "--epochs", "2", "--batch-size", "16", "--max-seq-len", "16",
        "--warmup-ratio", "0.25", "--weight-decay", "0.05", "--dropout", "0.05", "--seed", "3",
        "--metric", "macro_f1", "--eval-batch-size", "5", "--log-every", "1", "--device", "cpu",
        "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return {"base": base, "data": data, "out": out, "summary": json.loads(r.stdout), "tmp": tmp}  # type: ignore[dict-item]


def test_finetune_flags_reach_the_run(run: dict) -> None:
    s, out = run["summary"], run["out"]
    assert s["stage"] == "finetune" and s["train_examples"] == 160 and s["steps"] == 20
    assert 0 <= s["best_dev_macro_f1"] <= 1 and "best_dev_accuracy" in s
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_dropout_prob"] == cfg["classifier_dropout_prob"] == 0.05
    meta = json.loads((out / "albertzh.json").read_text())
    assert meta["max_seq_len"] == 16
    assert meta["config"]["weight_decay"] == 0.05 and meta["config"]["seed"] == 3
    assert json.loads((out / "metrics.json").read_text())["metric"] == "macro_f1"
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["split"] == "train"]
    # 20 steps, warmup 5: lr rises linearly to 2e-3, then decays linearly to 0
    assert len(train) == 20 and train[0]["lr"] == pytest.approx(2e-3 / 5)
    assert train[4]["lr"] == pytest.approx(2e-3)
    assert train[-1]["lr"] == pytest.approx(2e-3 * 1 / 15)


def test_seed_and_max_train_examples(run: dict) -> None:
    outs = []
    for i, seed in enumerate((1, 1, 2)):
        out = run["tmp"] / f"seed{i}"
        r = invoke(
            "finetune", "--task", "chnsenticorp", "--model", run["base"], "--data-dir", run["data"],
            "-o", out, "--steps", "2", "--batch-size", "8", "--max-train-examples", "24",
            "--seed", seed, "--device", "cpu", "--random-init", "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["train_examples"] == 24
        outs.append(load_file(out / "model.safetensors")["classifier.weight"].numpy())
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_eval_json_has_per_class_and_predictions(run: dict) -> None:
    preds = run["tmp"] / "preds.jsonl"
    r = invoke(
        "eval", "--task", "chnsenticorp", "--split", "dev", "--model", run["out"],
        "--data-dir", run["data"], "--predictions", preds, "--batch-size", "3", "--device", "cpu",
        "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert set(s["per_class"]) == {"0", "1"} and s["rows"] == 40
    assert {"precision", "recall", "f1", "support"} <= set(s["per_class"]["1"])
    best = json.loads((run["out"] / "metrics.json").read_text())["best"]
    assert s["accuracy"] == pytest.approx(best["accuracy"], abs=1e-6)  # --eval-batch-size 5 agreed
    assert len(preds.read_text().splitlines()) == 40
    r = invoke(
        "eval", "--task", "chnsenticorp", "--model", run["out"], "--data-dir", run["data"],
        "--device", "cpu", "--precision", "fp32",
    )  # fmt: skip
    assert r.exit_code == 0 and "accuracy" in r.stdout and "per_class" not in r.stdout


def test_predict_stdin_file_and_options(run: dict) -> None:
    lines = ["房间很好的", "价格太贵", "服务\t不错", "早餐差劲"]
    r = invoke("predict", "--model", run["out"], "-q", input="\n".join(lines) + "\n")
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 4 and r.stderr == ""
    assert all(set(x) == {"label", "probabilities"} for x in recs)
    assert all(x["label"] == max(x["probabilities"], key=x["probabilities"].get) for x in recs)
    # a file, other batch size, --with-text, -o: same predictions
    src = run["tmp"] / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dest = run["tmp"] / "out.jsonl"
    r = invoke(
        "predict", src, "--model", run["out"], "--batch-size", "3", "--with-text", "-o", dest
    )
    assert r.exit_code == 0, r.output
    assert "4 rows" in r.stderr and r.stdout == ""
    recs2 = [json.loads(x) for x in dest.read_text().splitlines()]
    assert [x["label"] for x in recs2] == [x["label"] for x in recs]
    assert recs2[2]["text_a"] == "服务" and recs2[2]["text_b"] == "不错"
    assert "text_b" not in recs2[0]
    for a, b in zip(recs, recs2, strict=True):
        for k in a["probabilities"]:
            assert a["probabilities"][k] == pytest.approx(b["probabilities"][k], abs=1e-5)


def test_predict_config_print_config_and_json(run: dict) -> None:
    src = run["tmp"] / "in2.txt"
    src.write_text("房间很好的\n价格太贵\n", encoding="utf-8")
    cfg = run["tmp"] / "predict.yaml"
    cfg.write_text(f"model: {run['out']}\nbatch_size: 1\nwith_text: true\n", encoding="utf-8")
    r = invoke("predict", src, "--config", cfg, "--batch-size", "2", "--print-config")
    assert r.exit_code == 0, r.output
    resolved = json.loads(r.stdout)
    assert resolved["batch_size"] == 2 and resolved["with_text"] is True  # the flag wins
    assert resolved["input"] == str(src) and resolved["model"] == str(run["out"])
    # --json: the summary is the one JSON object on stdout, the predictions are in the file
    dest = run["tmp"] / "out2.jsonl"
    r = invoke("predict", src, "--config", cfg, "-o", dest, "--json")
    assert r.exit_code == 0, r.output
    (line,) = r.stdout.splitlines()
    summary = json.loads(line)
    assert summary["stage"] == "predict" and summary["rows"] == 2 and r.stderr == ""
    texts = [json.loads(x)["text_a"] for x in dest.read_text().splitlines()]
    assert texts == ["房间很好的", "价格太贵"]
    # --json while the predictions go to stdout (-o -, the default): one line, exit 2, no output
    r = invoke("predict", "--config", cfg, "--json", input="好\n")
    one_error_line(r, "--json", "-o -", "-o FILE")
    assert r.stdout == ""


def test_predict_max_seq_len_truncates(run: dict) -> None:
    # --max-seq-len 3 keeps [CLS] + the first token + [SEP]: both texts start with 好
    text = "好\n好差劲太脏\n"
    full = invoke("predict", "--model", run["out"], "-q", input=text)
    cut = invoke("predict", "--model", run["out"], "--max-seq-len", "3", "-q", input=text)
    assert full.exit_code == cut.exit_code == 0, full.output + cut.output
    a, b = (json.loads(x) for x in full.stdout.splitlines())
    assert a != b
    a, b = (json.loads(x) for x in cut.stdout.splitlines())
    assert a == b


def test_bad_inputs_exit_2_with_one_line(run: dict, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("label\ttext_a\n1\t好\n0\t差\n")
    (bad / "dev.tsv").write_text("label\ttext_a\n1\t好\n0\n")
    cases = [
        (
            ["finetune", "--task", "chnsenticorp", "--model", run["base"], "--data-dir", bad,
             "-o", tmp_path / "o", "--device", "cpu"],
            "dev.tsv: line 3: missing",
        ),
        (
            ["finetune", "--task", "lcqmc", "--model", run["base"], "--data-dir", bad,
             "-o", tmp_path / "o2"],
            "train.tsv: line 1: missing column 'text_b'",
        ),
        (["eval", "--task", "chnsenticorp", "--model", tmp_path / "nope", "--data-dir", bad], "nope"),
        (["eval", "--model", run["out"]], "--task and --data-dir"),
        (["predict", tmp_path / "missing.txt", "--model", run["out"]], "missing.txt: input file not found"),
        (["predict", "--model", run["base"]], "not a finetuned classifier"),
        (["predict", "--model", run["out"], "--precision", "fp16", "--device", "cpu"], "fp16"),
        (
            ["finetune", "--task", "chnsenticorp", "--model", run["base"], "--data-dir",
             run["data"], "-o", tmp_path / "o3", "--device", "cpu", "--precision", "fp16"],
            "--precision fp16",
        ),
    ]  # fmt: skip
    for args, needle in cases:
        r = invoke(*args, input="好\n")
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.stderr, (needle, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_eval_shards_calls_pretrain_evaluation(run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    pretrain = pytest.importorskip("albertzh.train.pretraining")
    seen = {}

    def fake(model, data_dir, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.update(kw, data_dir=data_dir, vocab=model.config.vocab_size)
        return {"mlm_accuracy": 0.25, "sop_accuracy": 0.5, "instances": 3}

    monkeypatch.setattr(pretrain, "evaluate_pretraining", fake)
    r = invoke(
        "eval", "--shards", run["tmp"], "--model", run["base"], "--max-batches", "2", "--json"
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["mlm_accuracy"] == 0.25 and s["instances"] == 3
    assert seen["max_batches"] == 2 and seen["data_dir"] == run["tmp"]


@pytest.mark.slow
def test_eval_shards_end_to_end(tmp_path: Path) -> None:
    """clean -> segment -> make-shards on real news text, then eval --shards on a toy model."""
    from albertzh.tokenizer import load_tokenizer
    from tests.conftest import shared_path

    news = shared_path("corpus/news_zh_sample.txt")
    vocab = shared_path("vocab/bert_chinese_vocab.txt")
    steps = [
        ["clean", news, "-o", tmp_path / "docs"],
        ["segment", tmp_path / "docs", "-o", tmp_path / "words"],
        ["make-shards", tmp_path / "words", "--vocab", vocab, "-o", tmp_path / "shards",
         "--max-seq-len", "64"],
    ]  # fmt: skip
    for args in steps:
        r = invoke(*args)
        assert r.exit_code == 0, r.output
    model = make_model_dir(tmp_path / "m", seed=None, vocab=vocab, layers=1)
    tok = load_tokenizer(model)
    r = invoke("eval", "--shards", tmp_path / "shards", "--model", model, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["instances"] > 0 and 0 <= s["mlm_accuracy"] <= 0.05  # random weights
    assert s["mlm_loss"] == pytest.approx(np.log(tok.vocab_size), rel=0.1)
    assert 0.3 <= s["sop_accuracy"] <= 0.7


def test_predict_binary_stdin_is_one_line(run: dict) -> None:
    r = runner.invoke(
        root, ["predict", "--model", str(run["out"])], input=b"\xe5\xa5\xbd\n\xff\xfe\x00\x01\n"
    )
    one_error_line(r, "<stdin>: line 2: not valid UTF-8")
