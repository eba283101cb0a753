"""NER end to end on a 2-layer toy model: finetune (MSRA TSV and CLUENER JSON), eval, predict,
transformers parity of the saved head, resume, and one-line errors for bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from albertzh.data import ner
from albertzh.pipeline import finetune as ft
from albertzh.train import loop as tr
from tests.cli.conftest import assert_help_lists, one_error_line, root, runner
from tests.pipeline.test_finetune import make_model_dir, make_senti_data

LOC = ["北京", "上海", "广州", "南京市"]
PER = ["张明", "王华", "李小明"]
ORG = ["新华社"]
FILL = list("在去了是的人说和我们今天") + ["2008年", "iPhone"]
CHARS = sorted(set("".join(LOC + PER + ORG + FILL)) - set("iPhone"))
LABEL2ID = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4, "B-ORG": 5, "I-ORG": 6}


def invoke(*args: object, input: str | None = None):  # noqa: ANN201
    return runner.invoke(root, [str(a) for a in args], input=input)


def sentence(rng: random.Random, n: int) -> tuple[list[str], list[tuple[str, int, int]]]:
    """``n`` random words as characters, and the entities as (type, start, end) in characters."""
    chars: list[str] = []
    spans = []
    for _ in range(n):
        r = rng.random()
        kind, word = (
            ("LOC", rng.choice(LOC)) if r < 0.2 else ("PER", rng.choice(PER)) if r < 0.4
            else ("ORG", rng.choice(ORG)) if r < 0.45 else ("", rng.choice(FILL))
        )  # fmt: skip
        if kind:
            spans.append((kind, len(chars), len(chars) + len(word)))
        chars += list(word)
    return chars, spans


def make_ner_data(path: Path, fmt: str = "tsv", seed: int = 0) -> Path:
    """train (200) / dev (40, two of them longer than a window) / test (unlabelled) files."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 200), ("dev", 40), ("test", 4)):
        rows = []
        for i in range(n):
            chars, spans = sentence(rng, 12 if split == "dev" and i < 2 else rng.randint(2, 6))
            if fmt == "tsv":
                tags = ner.spans_to_tags(len(chars), spans, "bio")
                rows.append(" ".join(chars) + ("" if split == "test" else "\t" + " ".join(tags)))
            else:
                text = "".join(chars)
                label: dict = {}
                for kind, s, e in spans:
                    label.setdefault(kind, {}).setdefault(text[s:e], []).append([s, e - 1])
                row = {"text": text} if split == "test" else {"text": text, "label": label}
                rows.append(json.dumps(row, ensure_ascii=False))
        header = ["text_a" if split == "test" else "text_a\tlabel"] if fmt == "tsv" else []
        name = f"{split}.tsv" if fmt == "tsv" else f"{split}.json"
        (path / name).write_text("\n".join(header + rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ner")
    vocab = tmp / "vocab.txt"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab.write_text("\n".join(specials + CHARS + ["i", "##phone", "##p"]) + "\n", "utf-8")
    base = make_model_dir(tmp / "base", vocab=vocab)
    data = make_ner_data(tmp / "data")
    (data / "label2id.json").write_text(json.dumps(LABEL2ID), encoding="utf-8")
    out = tmp / "out"
    r = invoke(
        "finetune", "--task", "msra_ner", "--model", base, "--data-dir", data, "-o", out,
        "--lr", "3e-3", "--epochs", "6", "--batch-size", "16", "--max-seq-len", "12",
        "--doc-stride", "4", "--device", "cpu", "--seed", "1", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return {"tmp": tmp, "base": base, "data": data, "out": out, "summary": json.loads(r.stdout)}


def test_finetune_learns_and_writes_a_token_classifier_dir(run: dict) -> None:
    s, out = run["summary"], run["out"]
    assert s["task"] == "msra_ner" and s["train_examples"] == 200 and s["dev_examples"] == 40
    assert s["stopped"] == "completed" and s["gold_tag_violations"] == 0
    assert s["best_dev_f1"] >= 0.9 and {"best_dev_precision", "best_dev_recall"} <= set(s)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["AlbertForTokenClassification"]
    assert cfg["label2id"] == LABEL2ID  # label2id.json's order
    meta = json.loads((out / "albertzh.json").read_text())
    assert meta["kind"] == "token_classification" and meta["labels"] == list(LABEL2ID)
    assert (meta["max_seq_len"], meta["doc_stride"], meta["tag_scheme"]) == (12, 4, "bio")
    report = json.loads((out / "metrics.json").read_text())
    assert report["metric"] == "f1"
    assert report["best"]["f1"] == pytest.approx(s["best_dev_f1"], abs=1e-6)
    assert set(report["best"]["per_type"]) == {"LOC", "PER", "ORG"}
    assert report["train"]["rows"] > 200  # long sentences are read in windows
    assert len(report["dev_history"]) == 6


def test_transformers_loads_the_head_with_the_same_logits(run: dict) -> None:
    transformers = pytest.importorskip("transformers")
    from albertzh.train.tagging import load_tagger

    tagger = load_tagger(run["out"], device="cpu")
    hf, info = transformers.AlbertForTokenClassification.from_pretrained(
        run["out"], output_loading_info=True
    )
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    rows = tagger.rows([list("张明在北京说"), list("新华社")])
    ids = torch.tensor([rows.encoded[0][0]])
    with torch.no_grad():
        ours = tagger.model(input_ids=ids).logits
        theirs = hf.eval()(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert hf.config.id2label[1] == "B-PER"


def test_eval_json_predictions_and_metrics_agree(run: dict, tmp_path: Path) -> None:
    preds = tmp_path / "dev.jsonl"
    r = invoke(
        "eval", "--task", "msra_ner", "--model", run["out"], "--data-dir", run["data"],
        "--split", "dev", "--predictions", preds, "--batch-size", "7", "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["rows"] == 40 and s["windows"] > 40 and s["labelled"]
    assert {"f1", "precision", "recall", "loss", "per_type"} <= set(s)
    assert s["f1"] == pytest.approx(run["summary"]["best_dev_f1"], abs=1e-6)
    recs = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines()]
    dev = ner.read_tagged(ner.T.get_task("msra_ner"), run["data"] / "dev.tsv", list(LABEL2ID))
    assert [x["line"] for x in recs] == [e.line for e in dev]
    m = ner.entity_metrics([e.tags for e in dev], [x["tags"] for x in recs])
    for k in ("f1", "precision", "recall"):
        assert s[k] == pytest.approx(m[k], abs=1e-6)
    assert s["per_type"] == json.loads(json.dumps(m["per_type"]))
    for e, x in zip(dev, recs, strict=True):
        assert len(x["tags"]) == len(e.units)
        assert all(e.text[y["start"] : y["end"]] == y["text"] for y in x["entities"])
    # an unlabelled split gives predictions only; --doc-stride and --max-seq-len reach the tagger
    r = invoke(
        "eval", "--task", "msra_ner", "--model", run["out"], "--data-dir", run["data"],
        "--split", "test", "--predictions", tmp_path / "test.jsonl", "--max-seq-len", "6",
        "--doc-stride", "1", "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    t = json.loads(r.stdout)
    assert not t["labelled"] and "f1" not in t and t["windows"] > t["rows"] == 4
    assert len((tmp_path / "test.jsonl").read_text().splitlines()) == 4
    r = invoke(
        "eval", "--task", "msra_ner", "--model", run["out"], "--data-dir", run["data"],
        "--predictions", preds, "--device", "cpu",
    )  # fmt: skip
    one_error_line(r, "dev.jsonl", "--overwrite")


def test_predict_entities_with_offsets_into_each_line(run: dict, tmp_path: Path) -> None:
    long = "我们今天去北京了，张明说王华在上海和广州。" * 4  # 80 characters, many windows
    lines = ["张明在北京说", "", "新华社 2008年 买了iPhone", long]
    r = invoke("predict", "--model", run["out"], "--with-text", "-q", input="\n".join(lines) + "\n")
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["text"] for x in recs] == lines
    assert recs[1]["entities"] == []
    for line, x in zip(lines, recs, strict=True):
        for e in x["entities"]:
            assert set(e) == {"type", "text", "start", "end"}
            assert line[e["start"] : e["end"]] == e["text"] and e["type"] in ("LOC", "PER", "ORG")
    assert {"type": "LOC", "text": "北京", "start": 3, "end": 5} in recs[0]["entities"]
    assert sum(e["type"] == "LOC" for e in recs[3]["entities"]) >= 6  # found across windows
    # -o FILE, --doc-stride, --max-seq-len
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = invoke("predict", src, "--model", run["out"], "-o", out, "--max-seq-len", "8",
               "--doc-stride", "2", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels"] == list(LABEL2ID)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4
    r = invoke("predict", src, "--model", run["out"], "-o", out)
    one_error_line(r, "out.jsonl")
    r = invoke("predict", src, "--model", run["out"], "--max-seq-len", "8", "--doc-stride", "7")
    one_error_line(r, "--doc-stride 7: must be 1..6")


def test_generic_ner_on_cluener_json_with_bioes(run: dict, tmp_path: Path) -> None:
    data = make_ner_data(tmp_path / "json", fmt="json", seed=2)
    out = tmp_path / "o"
    r = invoke(
        "finetune", "--task", "ner", "--model", run["base"], "--data-dir", data, "-o", out,
        "--lr", "3e-3", "--epochs", "2", "--batch-size", "16", "--max-seq-len", "16",
        "--tag-scheme", "bioes", "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    labels = json.loads((out / "albertzh.json").read_text())["labels"]
    assert labels == ["O", *(f"{p}-{k}" for k in ("LOC", "ORG", "PER") for p in "BIES")]
    assert json.loads((out / "albertzh.json").read_text())["tag_scheme"] == "bioes"
    s = invoke("eval", "--task", "ner", "--model", out, "--data-dir", data, "--json")
    assert s.exit_code == 0, s.output
    assert 0 <= json.loads(s.stdout)["f1"] <= 1
    cluener = invoke("eval", "--task", "cluener", "--model", out, "--data-dir", data, "--json")
    assert json.loads(cluener.stdout)["f1"] == json.loads(s.stdout)["f1"]


def test_resume_after_interrupt_equals_uninterrupted(
    run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cfg(out: Path, **kw: object) -> ft.FinetuneConfig:
        return ft.FinetuneConfig(
            task="msra_ner", model=run["base"], data_dir=run["data"], output=out, device="cpu",
            lr=3e-3, batch_size=32, epochs=2, max_seq_len=10, dropout=0.1,
            max_train_examples=64, **kw,
        )  # fmt: skip

    ft.run(cfg(tmp_path / "full"))
    calls = {"n": 0}

    def stop_at_3(self: tr.StopFlag) -> bool:
        calls["n"] += 1
        return calls["n"] == 3

    monkeypatch.setattr(tr.StopFlag, "check", stop_at_3)
    assert ft.run(cfg(tmp_path / "cut")).figures["interrupted_at_step"] == 3
    monkeypatch.undo()
    ft.run(cfg(tmp_path / "cut", resume=True))
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    r = invoke(
        "finetune", "--task", "msra_ner", "--model", run["base"], "--data-dir", run["data"],
        "-o", tmp_path / "cut", "--resume", "--doc-stride", "3", "--max-seq-len", "10",
        "--lr", "3e-3", "--batch-size", "32", "--epochs", "2", "--dropout", "0.1",
        "--max-train-examples", "64", "--device", "cpu",
    )  # fmt: skip
    one_error_line(r, "--doc-stride")


def test_bad_input_is_one_line_naming_file_and_line(run: dict, tmp_path: Path) -> None:
    def data(name: str, files: dict[str, str]) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f, text in files.items():
            (d / f).write_text(text, encoding="utf-8")
        return d

    ok = "text_a\tlabel\n北 京\tB-LOC I-LOC\n"
    cases = [
        (data("count", {"train.tsv": ok + "北 京 人\tB-LOC I-LOC\n"}), "msra_ner",
         "train.tsv: line 3: 2 tags for 3 characters"),
        (data("unknown", {"train.tsv": ok, "dev.tsv": ok + "张 明\tB-PER I-PER\n"}), "msra_ner",
         "dev.tsv: line 3: unknown tag 'B-PER'"),
        (data("span", {"train.json": '{"text": "北京", "label": {"LOC": {"北京": [[0, 2]]}}}\n'}),
         "ner", "train.json: line 1: entity '北京' [0, 2] is outside the text"),
        (data("l2i", {"train.tsv": ok, "label2id.json": '{"O": 0, "B-LOC": 2}'}), "msra_ner",
         "label2id.json: ids must be 0..1"),
    ]  # fmt: skip
    for d, task, needle in cases:
        out = tmp_path / f"out-{d.name}"
        r = invoke("finetune", "--task", task, "--model", run["base"], "--data-dir", d, "-o", out,
                   "--device", "cpu")  # fmt: skip
        one_error_line(r, needle)
        assert not out.exists()  # nothing written
    d = data("evalbad", {"dev.tsv": ok + "张 明\tB-DATE I-DATE\n"})
    r = invoke("eval", "--task", "msra_ner", "--model", run["out"], "--data-dir", d,
               "--predictions", d / "p.jsonl")  # fmt: skip
    one_error_line(r, "--predictions is inside the input")  # outputs stay apart from inputs
    r = invoke("eval", "--task", "msra_ner", "--model", run["out"], "--data-dir", d,
               "--predictions", tmp_path / "p.jsonl")  # fmt: skip
    one_error_line(r, "dev.tsv: line 3: unknown tag 'B-DATE'")
    assert not (tmp_path / "p.jsonl").exists()


def test_flags_and_models_of_the_wrong_kind_are_refused(run: dict, tmp_path: Path) -> None:
    senti = make_senti_data(tmp_path / "senti", n_train=8, n_dev=4)
    common = ["--model", run["base"], "-o", tmp_path / "o", "--device", "cpu"]
    r = invoke(
        "finetune", "--task", "chnsenticorp", "--data-dir", senti, "--doc-stride", "3", *common
    )
    one_error_line(r, "--doc-stride only applies to token classification")
    r = invoke(
        "finetune", "--task", "chnsenticorp", "--data-dir", senti, "--tag-scheme", "bio", *common
    )
    one_error_line(r, "--tag-scheme only applies to token classification")
    r = invoke(
        "finetune", "--task", "msra_ner", "--data-dir", run["data"], "--max-seq-len", "100", *common
    )
    one_error_line(r, "--max-seq-len 100: the model reads at most 64 tokens")
    r = invoke(
        "finetune", "--task", "msra_ner", "--data-dir", run["data"], "--metric", "accuracy", *common
    )
    one_error_line(r, "--metric: 'accuracy' is not one of f1, loss, precision, recall")
    assert not (tmp_path / "o").exists()
    r = invoke("eval", "--task", "msra_ner", "--model", run["base"], "--data-dir", run["data"])
    one_error_line(r, "not a finetuned token classifier")
    r = invoke("eval", "--task", "chnsenticorp", "--model", run["out"], "--data-dir", senti)
    one_error_line(r, "AlbertForTokenClassification model, not a finetuned classifier")
    r = invoke("eval", "--task", "chnsenticorp", "--model", run["out"], "--data-dir", senti,
               "--doc-stride", "2")  # fmt: skip
    one_error_line(r, "--doc-stride only applies to token classification")
    r = invoke("predict", "--model", run["base"], "--doc-stride", "2", input="好\n")
    one_error_line(r, "--doc-stride only applies to token classification (NER) models")
    for command, flags in (
        ("finetune", ["--doc-stride", "--tag-scheme", "msra_ner", "cluener"]),
        ("eval", ["--doc-stride", "entity-level"]),
        ("predict", ["--doc-stride", "entities"]),
    ):
        assert_help_lists(command, flags)
    r = invoke("finetune", "--task", "msra_ner", "--data-dir", run["data"], "--model", run["base"],
               "-o", run["out"], "--device", "cpu")  # fmt: skip
    assert r.exit_code == 2  # a finished run dir is not overwritten without --overwrite


def test_shared_msra_ner_finetunes_and_evaluates(
    msra_ner: Path, bert_vocab: Path, tmp_path: Path
) -> None:
    base = make_model_dir(tmp_path / "base", vocab=bert_vocab)
    out = tmp_path / "out"
    r = invoke(
        "finetune", "--task", "msra_ner", "--model", base, "--data-dir", msra_ner, "-o", out,
        "--max-train-examples", "32", "--epochs", "1", "--batch-size", "16", "--max-seq-len", "64",
        "--eval-batch-size", "128", "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["dev_examples"] == 500 and s["stopped"] == "completed" and 0 <= s["best_dev_f1"] <= 1
    assert json.loads((out / "config.json").read_text())["label2id"] == json.loads(
        (msra_ner / "label2id.json").read_text()
    )


def test_torchrun_ddp_two_processes_score_dev_across_ranks(run: dict, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [  # --standalone: torchrun picks a free port
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "albertzh", "finetune", "--task", "msra_ner", "--model", str(run["base"]),
        "--data-dir", str(run["data"]), "-o", str(out), "--epochs", "1", "--batch-size", "8",
        "--lr", "3e-3", "--max-seq-len", "12", "--device", "cpu", "--json",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    (summary,) = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    # dev windows are split over the ranks and gathered: the same F1 as one process scores
    e = invoke("eval", "--task", "msra_ner", "--model", out, "--data-dir", run["data"], "--json")
    assert e.exit_code == 0, e.output
    assert json.loads(e.stdout)["f1"] == pytest.approx(summary["best_dev_f1"], abs=1e-6)


def test_cluener_submission_keeps_the_test_files_ids(run: dict, tmp_path: Path) -> None:
    data = make_ner_data(tmp_path / "json", fmt="json", seed=3)
    texts = ["张明在北京说", "新华社报道上海", "今天"]
    rows = [{"id": i * 7, "text": t} for i, t in enumerate(texts)]
    (data / "test.json").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    sub, preds = tmp_path / "sub", tmp_path / "preds.jsonl"
    r = invoke(
        "eval", "--task", "cluener", "--model", run["out"], "--data-dir", data, "--split",
        "test", "--submission", sub, "--predictions", preds, "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["submission"] == str(sub / "cluener_predict.json")
    got = [json.loads(x) for x in (sub / "cluener_predict.json").read_text("utf-8").splitlines()]
    recs = [json.loads(x) for x in preds.read_text("utf-8").splitlines()]
    assert [g["id"] for g in got] == [0, 7, 14] == [p["id"] for p in recs]
    for g, p, text in zip(got, recs, texts, strict=True):
        spans = sorted(
            (kind, s, e + 1) for kind, ents in g["label"].items()
            for name, places in ents.items() for s, e in places if text[s : e + 1] == name
        )  # fmt: skip
        assert spans == sorted((e["type"], e["start"], e["end"]) for e in p["entities"])
    assert any(g["label"] for g in got)  # the model finds entities in these sentences
    # A test row without an id: one line, nothing written.
    (data / "test.json").write_text('{"text": "张明"}\n', encoding="utf-8")
    bad = invoke(
        "eval", "--task", "cluener", "--model", run["out"], "--data-dir", data, "--split",
        "test", "--submission", tmp_path / "sub2", "--device", "cpu",
    )  # fmt: skip
    assert bad.exit_code == 2 and "line 1: no 'id' field" in bad.output
    assert not (tmp_path / "sub2" / "cluener_predict.json").exists()
