"""``benchmarks/task_kinds.py`` end to end on the shared NER and C3 data, two steps per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import SHARED_DATA, shared_path

ROOT = Path(__file__).resolve().parents[1]


def test_runs_both_arms_and_prints_the_table(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    vocab = shared_path("vocab/bert_chinese_vocab.txt")
    shared_path("tasks/msra_ner/train.tsv")
    shared_path("tasks/c3/train.json")
    from albertzh.model import AlbertConfig, AlbertForPreTraining
    from albertzh.tokenizer import load_tokenizer

    model = tmp_path / "model"
    model.mkdir()
    (model / "vocab.txt").write_bytes(vocab.read_bytes())
    tok = load_tokenizer(model)
    cfg = AlbertConfig(
        vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    AlbertForPreTraining(cfg).save_pretrained(model, tokenizer=tok)
    work = tmp_path / "work"
    env = {**os.environ, "ALBERTZH_SHARED_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "task_kinds.py"), "run", "-w", str(work),
           "--model", str(model), "--tasks", "msra_ner,c3", "--seeds", "1", "--steps", "2"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((work / "results.json").read_text())
    assert set(results["tasks"]) == {"msra_ner", "c3"}
    for task, metric in (("msra_ner", "f1"), ("c3", "accuracy")):
        res = results["tasks"][task]
        for arm in ("pretrained", "random"):
            (rec,) = res[arm]
            assert rec["steps"] == 2 and rec["seconds"] > 0 and 0 <= rec["dev"][metric] <= 1
        assert res["hf_max_abs_diff"] < 1e-4  # transformers reads the finetuned dir alike
    assert "| msra_ner | f1 |" in r.stdout and "| c3 | accuracy |" in r.stdout
    bad = subprocess.run(cmd[:2] + ["run", "-w", str(work), "--model", str(model), "--tasks", "x"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "--tasks: unknown x" in bad.stderr
