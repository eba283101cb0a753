"""finetune on a 2-layer toy model: learns, keeps the best dev model, HF-loadable, resumes exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from albertzh.errors import ConfigError, InputError, ModelDirError
from albertzh.pipeline import finetune as ft
from albertzh.pipeline.finetune import FinetuneConfig
from albertzh.train import loop as tr

POS = ["很好", "不错", "喜欢", "干净", "便宜", "满意"]
NEG = ["很差", "差劲", "讨厌", "太脏", "太贵", "失望"]
TOPIC = ["房间", "服务", "酒店", "价格", "早餐"]
CHARS = sorted(set("".join(POS + NEG + TOPIC) + "的了吗问一二三四"))


def make_model_dir(
    path: Path, seed: int | None = 0, vocab: Path | None = None, layers: int = 2
) -> Path:
    """An ALBERT 'pretraining' dir (2 layers by default, random weights) with a tiny char vocab,
    or a copy of ``vocab``; ``seed=None`` leaves torch's RNG as it is."""
    from albertzh.model import AlbertConfig, AlbertForPreTraining
    from albertzh.tokenizer import load_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    if vocab is None:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        (path / "vocab.txt").write_text("\n".join(specials + CHARS) + "\n", encoding="utf-8")
    else:
        (path / "vocab.txt").write_bytes(vocab.read_bytes())
    tok = load_tokenizer(path)
    cfg = AlbertConfig(
        vocab_size=tok.vocab_size,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    if seed is not None:
        torch.manual_seed(seed)
    AlbertForPreTraining(cfg).save_pretrained(path, tokenizer=tok)
    return path


def make_senti_data(path: Path, n_train: int = 160, n_dev: int = 60, seed: int = 0) -> Path:
    """chnsenticorp-format TSVs where the label is decided by a sentiment word."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = ["label\ttext_a"]
        for _ in range(n):
            y = rng.randint(0, 1)
            rows.append(f"{y}\t{rng.choice(TOPIC)}{rng.choice(POS if y else NEG)}的")
        (path / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def cfg_for(model: Path, data: Path, out: Path, **kw: object) -> FinetuneConfig:
    base = {
        "task": "chnsenticorp",
        "model": model,
        "data_dir": data,
        "output": out,
        "device": "cpu",
        "lr": 2e-3,
        "batch_size": 16,
        "epochs": 4,
        "log_every": 5,
    }
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ft")
    model = make_model_dir(root / "base")
    data = make_senti_data(root / "data")
    summary = ft.run(cfg_for(model, data, root / "out"))
    return {"base": model, "data": data, "out": root / "out", "summary": summary}  # type: ignore[dict-item]


def test_finetune_learns_and_keeps_best(trained: dict) -> None:
    out = trained["out"]
    fig = trained["summary"].figures
    assert fig["stopped"] == "completed" and fig["steps"] == 4 * 10
    assert fig["best_dev_accuracy"] >= 0.9
    report = json.loads((out / "metrics.json").read_text())
    accs = [h["accuracy"] for h in report["dev_history"]]
    assert len(accs) == 4 and report["best"]["accuracy"] == max(accs)
    assert report["best"]["step"] == fig["best_step"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {"0": "0", "1": "1"} and cfg["label2id"] == {"0": 0, "1": 1}
    assert cfg["architectures"] == ["AlbertForSequenceClassification"]
    meta = json.loads((out / "albertzh.json").read_text())
    assert meta["task"] == "chnsenticorp" and meta["max_seq_len"] == 128
    assert meta["step"] == fig["best_step"]
    assert not (out / ft.BEST_DIR).exists()
    dev_lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for r in dev_lines if r["split"] == "dev") == 4
    assert tr.Checkpointer(out).latest() is not None


def test_run_dir_weights_are_the_best_step(trained: dict) -> None:
    """The saved model re-scores dev exactly as the best evaluation did."""
    from albertzh.data.tasks import get_task, load_split, score_logits
    from albertzh.pipeline.predict import load_classifier

    clf = load_classifier(trained["out"], device="cpu")
    _, dev = load_split(get_task("chnsenticorp"), trained["data"], "dev")
    m = score_logits(clf.logits([(e.text_a, None) for e in dev], 32), dev, clf.labels, False)
    best = json.loads((trained["out"] / "metrics.json").read_text())["best"]
    assert m["accuracy"] == pytest.approx(best["accuracy"])
    assert m["loss"] == pytest.approx(best["loss"], abs=1e-5)


def test_transformers_gives_the_same_predictions(trained: dict) -> None:
    transformers = pytest.importorskip("transformers")
    from albertzh.pipeline.predict import load_classifier

    texts = ["房间很好的", "价格太贵", "服务不错吗", "早餐差劲"]
    clf = load_classifier(trained["out"], device="cpu")
    ours = clf.logits([(t, None) for t in texts], 2)
    hf = transformers.AlbertForSequenceClassification.from_pretrained(trained["out"]).eval()
    tok = transformers.BertTokenizer.from_pretrained(trained["out"])
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**enc).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert hf.config.id2label == {0: "0", 1: "1"}


def test_pretrained_encoder_is_loaded_unless_random_init(tmp_path: Path, trained: dict) -> None:
    base = load_file(trained["base"] / "model.safetensors")
    key = "albert.embeddings.word_embeddings.weight"
    for random_init, same in ((False, True), (True, False)):
        out = tmp_path / f"r{int(random_init)}"
        ft.run(
            cfg_for(
                trained["base"], trained["data"], out, steps=1, lr=1e-12, random_init=random_init
            )
        )
        got = load_file(out / "model.safetensors")
        assert torch.allclose(got[key], base[key], atol=1e-6) is same
        assert "classifier.weight" in got


def test_early_stopping_with_patience(tmp_path: Path, trained: dict) -> None:
    # lr ~ 0: dev results never change, so no evaluation after the first is an improvement.
    s = ft.run(
        cfg_for(
            trained["base"],
            trained["data"],
            tmp_path / "o",
            lr=1e-30,
            epochs=10,
            patience=2,
            max_train_examples=32,
        )
    )
    assert s.figures["stopped"] == "early_stopping"
    assert s.figures["steps"] == 3 * 2 and s.figures["best_step"] == 2


def test_resume_after_interrupt_equals_uninterrupted(
    tmp_path: Path, trained: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = {"epochs": 2, "dropout": 0.1, "batch_size": 32, "max_train_examples": 96}
    ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "full", **kw))

    calls = {"n": 0}

    def stop_at_4(self: tr.StopFlag) -> bool:
        calls["n"] += 1
        return calls["n"] == 4  # mid epoch 2 (3 steps per epoch)

    monkeypatch.setattr(tr.StopFlag, "check", stop_at_4)
    s = ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "cut", **kw))
    assert s.figures["interrupted_at_step"] == 4
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    monkeypatch.undo()
    s = ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "cut", resume=True, **kw))
    assert s.figures["steps"] == 6
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    full = [
        json.loads(x)["step"]
        for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == full


def test_generic_pair_regression(tmp_path: Path, trained: dict) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = ["q,d,score"] + [
        f"{a},{b},{i % 5}.5" for i, (a, b) in enumerate(zip(POS, NEG, strict=True))
    ]
    (data / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (data / "dev.csv").write_text("\n".join(rows[:4]) + "\n", encoding="utf-8")
    s = ft.run(
        cfg_for(
            trained["base"],
            data,
            tmp_path / "o",
            task="generic",
            text_a="q",
            text_b="d",
            label="score",
            regression=True,
            epochs=1,
            batch_size=2,
        )
    )
    assert "best_dev_pearson" in s.figures
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["problem_type"] == "regression" and len(cfg["id2label"]) == 1
    # eval finds the generic field names (and regression) in the model dir
    from albertzh.pipeline import evaluate as ev

    preds = tmp_path / "p.jsonl"
    e = ev.run(
        ev.EvalConfig(
            task="generic", model=tmp_path / "o", data_dir=data, device="cpu", predictions=preds
        )
    )
    assert e.figures["pearson"] == pytest.approx(s.figures["best_dev_pearson"], abs=1e-5)
    assert all(set(json.loads(x)) == {"line", "score"} for x in preds.read_text().splitlines())
    assert "id2label" not in cfg or len(cfg["id2label"]) == 1


def test_epoch_batches_are_disjoint_across_ranks() -> None:
    parts = [ft.epoch_batches(10, 3, epoch=1, seed=7, rank=r, world=3) for r in range(3)]
    rows = [i for p in parts for b in p for i in b]
    assert len(rows) == 9 and len(set(rows)) == 9
    assert [len(p) for p in parts] == [1, 1, 1]
    assert ft.epoch_batches(10, 3, 1, 7) == ft.epoch_batches(10, 3, 1, 7)
    assert ft.epoch_batches(10, 3, 1, 7) != ft.epoch_batches(10, 3, 2, 7)


def test_bad_inputs(tmp_path: Path, trained: dict) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("label\ttext_a\n1\t好\n0\t差\n")
    (bad / "dev.tsv").write_text("label\ttext_a\n1\t好\n2\t差\n")
    with pytest.raises(InputError, match=r"dev.tsv: line 3: unknown label '2'"):
        ft.run(cfg_for(trained["base"], bad, tmp_path / "o"))
    with pytest.raises(ConfigError, match="--metric"):
        ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "o2", metric="pearson"))
    with pytest.raises(ValueError, match="--task"):
        cfg_for(trained["base"], trained["data"], tmp_path / "o3", task="nope")


def test_bf16_autocast_on_cpu(tmp_path: Path, trained: dict) -> None:
    s = ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "o", steps=2, precision="bf16"))
    assert s.figures["steps"] == 2 and 0 <= s.figures["best_dev_accuracy"] <= 1
    meta = json.loads((tmp_path / "o" / "albertzh.json").read_text())
    assert meta["config"]["precision"] == "bf16"


def test_finetune_from_a_transformers_albert_dir(tmp_path: Path, trained: dict) -> None:
    transformers = pytest.importorskip("transformers")
    hf_dir = tmp_path / "hf"
    cfg = transformers.AlbertConfig(
        vocab_size=5 + len(CHARS),
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(1)
    transformers.AlbertForPreTraining(cfg).save_pretrained(hf_dir)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (hf_dir / "vocab.txt").write_text("\n".join(specials + CHARS) + "\n", encoding="utf-8")
    ft.run(cfg_for(hf_dir, trained["data"], tmp_path / "o", steps=3))
    hf = transformers.AlbertForSequenceClassification.from_pretrained(tmp_path / "o").eval()
    tok = transformers.BertTokenizer.from_pretrained(tmp_path / "o")
    from albertzh.pipeline.predict import load_classifier

    texts = ["房间很好的", "价格太贵了"]
    ours = load_classifier(tmp_path / "o", device="cpu").logits([(t, None) for t in texts], 8)
    with torch.no_grad():
        theirs = hf(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # the encoder really came from the HF dir
    src = load_file(hf_dir / "model.safetensors")
    got = load_file(tmp_path / "o" / "model.safetensors")
    key = "albert.embeddings.position_embeddings.weight"
    assert (got[key] - src[key]).abs().max() < 0.01  # Adam moves a weight <= ~lr per step


@pytest.mark.slow
def test_torchrun_ddp_two_processes(tmp_path: Path, trained: dict) -> None:
    import shutil
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [  # --standalone: torchrun picks a free port
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "albertzh", "finetune", "--task", "chnsenticorp", "--model", str(trained["base"]),
        "--data-dir", str(trained["data"]), "-o", str(out), "--epochs", "2", "--batch-size", "8",
        "--lr", "2e-3", "--device", "cpu", "--json",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert len(summary) == 1  # only rank 0 reports
    assert summary[0]["steps"] == 2 * 10  # 160 rows -> 80 per rank -> 10 batches of 8
    assert (out / "model.safetensors").is_file() and not (out / ft.BEST_DIR).exists()
    dev = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in dev if d["split"] == "dev"] == [10, 20]
    shutil.rmtree(out)


def test_tnews_predictions_carry_label_desc(tmp_path: Path, trained: dict) -> None:
    from albertzh.pipeline.predict import load_classifier

    data = tmp_path / "tnews"
    data.mkdir()
    rows = [
        {"label": "102", "label_desc": "news_entertainment", "sentence": "喜欢"},
        {"label": "103", "label_desc": "news_sports", "sentence": "讨厌"},
    ]
    for split in ("train", "dev"):
        (data / f"{split}.json").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    ft.run(cfg_for(trained["base"], data, tmp_path / "o", task="tnews", steps=1))
    clf = load_classifier(tmp_path / "o", device="cpu")
    assert len(clf.labels) == 15
    rec = clf.records(np.eye(15, dtype=np.float32)[[2, 3, 4]])  # argmax at 102, 103, 104
    assert [r["label"] for r in rec] == ["102", "103", "104"]
    assert [r.get("label_desc") for r in rec] == ["news_entertainment", "news_sports", None]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "rel"), [("ocnli", "ocnli"), ("tnews", "tnews_fewshot")])
def test_shared_task_finetunes_and_evaluates(tmp_path: Path, task: str, rel: str) -> None:
    """Real shared data with the BERT vocab: a couple of steps, then eval on the whole dev."""
    from albertzh.pipeline import evaluate as ev
    from tests.conftest import shared_path

    data = shared_path(f"tasks/{rel}")
    vocab = shared_path("vocab/bert_chinese_vocab.txt")
    base = make_model_dir(tmp_path / "base", seed=None, vocab=vocab, layers=1)
    out = tmp_path / "o"
    s = ft.run(cfg_for(base, data, out, task=task, steps=2, max_seq_len=48, max_train_examples=64))
    n_dev = {"ocnli": 2950, "tnews": 1098}[task]
    assert s.figures["dev_examples"] == n_dev and s.figures["steps"] == 2
    e = ev.run(ev.EvalConfig(task=task, model=out, data_dir=data, device="cpu"))
    assert e.figures["rows"] == n_dev
    assert e.figures["accuracy"] == pytest.approx(s.figures["best_dev_accuracy"], abs=1e-6)


def test_run_dir_rules_and_vocab_check(tmp_path: Path, trained: dict) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "x.txt").write_text("old")
    with pytest.raises(InputError, match="not empty"):
        ft.run(cfg_for(trained["base"], trained["data"], out, steps=1))
    with pytest.raises(InputError, match="x.txt was not written by albertzh"):
        ft.run(cfg_for(trained["base"], trained["data"], out, steps=1, overwrite=True))
    (out / "x.txt").unlink()
    (out / "metrics.json").write_text("{}")  # a finished run's file: --overwrite replaces it
    ft.run(cfg_for(trained["base"], trained["data"], out, steps=1, overwrite=True))
    assert (out / "model.safetensors").is_file() and "task" in (out / "metrics.json").read_text()
    # a vocab larger than the model's embedding table is refused before anything is written
    big = tmp_path / "big"
    big.mkdir()
    for f in ("config.json", "model.safetensors"):
        (big / f).write_bytes((trained["base"] / f).read_bytes())
    words = (trained["base"] / "vocab.txt").read_text(encoding="utf-8").split()
    (big / "vocab.txt").write_text("\n".join(words + ["新", "词"]) + "\n", encoding="utf-8")
    with pytest.raises(ModelDirError, match="vocab has"):
        ft.run(cfg_for(big, trained["data"], tmp_path / "o2", steps=1))
    assert not (tmp_path / "o2").exists()


def test_an_interrupted_finetune_says_so_and_carries_the_exit_code(
    tmp_path: Path, trained: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI exits with Summary.exit_code: 143 when stopped by SIGTERM (or by another rank's
    signal), so `finetune ... && eval ...` does not go on after a kill."""
    monkeypatch.setattr(tr.StopFlag, "check", lambda self: True)
    kw = {"epochs": 1, "batch_size": 32, "max_train_examples": 64}
    s = ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "cut", **kw))
    assert s.figures["interrupted"] is True and s.figures["signal"] == "SIGTERM"
    assert s.exit_code == 143


def test_eval_every_and_save_every(tmp_path: Path, trained: dict) -> None:
    """--eval-every/--save-every add to the epoch-end evaluation and checkpoint; a checkpoint
    carries the loop's whole state (resume reads it back)."""
    out = tmp_path / "o"
    kw = {"epochs": 2, "max_train_examples": 64, "eval_every": 3, "save_every": 3, "keep_last": 9}
    s = ft.run(cfg_for(trained["base"], trained["data"], out, **kw))
    assert s.figures["steps"] == 8  # 64 rows / 16 -> 4 steps per epoch
    report = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in report["dev_history"]] == [3, 4, 6, 8]
    assert [h["epoch"] for h in report["dev_history"]] == [0, 0, 1, 1]
    assert [step for step, _ in tr.Checkpointer(out).list()] == [3, 4, 6, 8]
    saved = json.loads((out / "checkpoints/step-00000006/state/train_state.json").read_text())
    state = saved["ranks"][0]
    assert list(state) == [
        "epoch", "group", "best", "best_step", "best_metrics", "bad_evals", "history",
    ]  # fmt: skip
    assert (state["epoch"], state["group"]) == (1, 2) and len(state["history"]) == 3
    assert state["best_step"] in [h["step"] for h in state["history"]]


def test_without_a_dev_split_the_last_model_is_kept(tmp_path: Path, trained: dict) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_bytes((trained["data"] / "train.tsv").read_bytes())
    out = tmp_path / "o"
    s = ft.run(cfg_for(trained["base"], data, out, epochs=1, max_train_examples=32))
    assert s.figures["dev_examples"] == 0 and s.figures["stopped"] == "completed"
    assert not any(k.startswith("best_") for k in s.figures)
    report = json.loads((out / "metrics.json").read_text())
    assert report["best"] is None and report["dev_history"] == [] and report["dev_file"] is None
    last = tr.Checkpointer(out).latest()
    assert last is not None
    a, b = load_file(out / "model.safetensors"), load_file(last / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interrupt_at_an_epoch_end_equals_uninterrupted(
    tmp_path: Path, trained: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped on the last step of an epoch, the run has not evaluated that epoch yet: the
    resumed run does, and ends as the uninterrupted one."""
    kw = {"epochs": 2, "dropout": 0.1, "batch_size": 32, "max_train_examples": 96}
    ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "full", **kw))
    calls = {"n": 0}

    def stop_at_3(self: tr.StopFlag) -> bool:
        calls["n"] += 1
        return calls["n"] == 3  # the last step of epoch 1 (3 steps per epoch)

    monkeypatch.setattr(tr.StopFlag, "check", stop_at_3)
    s = ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "cut", **kw))
    assert s.figures["interrupted_at_step"] == 3 and s.exit_code == 143
    monkeypatch.undo()
    s = ft.run(cfg_for(trained["base"], trained["data"], tmp_path / "cut", resume=True, **kw))
    assert s.figures["steps"] == 6 and s.figures["stopped"] == "completed"
    reports = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("full", "cut")]
    assert reports[0]["dev_history"] == reports[1]["dev_history"]
    assert reports[0]["best"] == reports[1]["best"]
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_resume_refuses_settings_the_checkpoint_fixes(trained: dict) -> None:
    """--resume --lr 0.01 went on with the old lr yet recorded the new one: now refused."""
    out = trained["out"]
    meta = (out / "albertzh.json").read_bytes()
    for kw, needles in (
        ({"lr": 1e-3}, ["--lr 0.002", "--lr 0.001"]),
        ({"optimizer": "lamb", "weight_decay": 0.1}, ["--optimizer adamw", "--weight-decay"]),
        ({"dropout": 0.3, "seed": 1}, ["--dropout", "--seed"]),
    ):
        with pytest.raises(ConfigError, match="--resume: .*step-") as exc:
            ft.run(cfg_for(trained["base"], trained["data"], out, resume=True, **kw))
        for needle in needles:
            assert needle in str(exc.value), (needle, str(exc.value))
    assert (out / "albertzh.json").read_bytes() == meta
