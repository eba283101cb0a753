"""``benchmarks/pretraining_gain.py``: run naming, per-arm lr choice on dev, results files that
gather tasks, and the report table (the finetuning runs themselves are faked)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.benchmark_module import load_benchmark
from tests.train.test_instances import TINY_MODEL


@pytest.fixture(scope="module")
def gain():  # noqa: ANN201
    return load_benchmark("pretraining_gain")


def args(work: Path, **kw) -> argparse.Namespace:  # noqa: ANN003
    base = dict(
        work=work, name="A", split="dev", tasks=["tnews"], seeds=2, labels=None,
        lrs_pretrained=[3e-4, 1e-3], lrs_random=[1e-3], epochs=3, batch_size=32, max_seq_len=128,
        dropout=None, arms=["pretrained", "random"], jobs=1, threads=None,
    )  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_variant_names(gain, tmp_path: Path) -> None:
    assert gain._variant(args(tmp_path)) == ""
    assert gain._variant(args(tmp_path, labels=250, epochs=40)) == "-n250-e40"
    assert gain._variant(args(tmp_path, labels=250, dropout=0.1, epochs=40)) == "-n250-d0.1-e40"


def test_lr_chosen_on_dev_and_tasks_gathered_in_one_file(
    gain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    dev = {  # (task, arm, lr) -> dev accuracy per seed
        ("tnews", "pretrained", 3e-4): [0.20, 0.22], ("tnews", "pretrained", 1e-3): [0.30, 0.28],
        ("tnews", "random", 1e-3): [0.19, 0.21],
        ("ocnli", "pretrained", 3e-4): [0.45, 0.47], ("ocnli", "pretrained", 1e-3): [0.40, 0.41],
        ("ocnli", "random", 1e-3): [0.38, 0.46],
    }  # fmt: skip

    def fake_finetune(work, name, task, arm, lr, seed, a):  # noqa: ANN001, ANN202
        return (task, arm, lr, seed)

    monkeypatch.setattr(gain, "_finetune", fake_finetune)
    monkeypatch.setattr(gain, "_dev_score", lambda run: dev[run[:3]][run[3]])
    gain.finetune(args(tmp_path, tasks=["tnews"]))
    gain.finetune(args(tmp_path, tasks=["ocnli"]))  # a second call adds its task to the file
    res = json.loads((tmp_path / "results-A-dev.json").read_text())
    assert set(res["tasks"]) == {"tnews", "ocnli"} and res["epochs"] == 3
    tn, oc = res["tasks"]["tnews"], res["tasks"]["ocnli"]
    assert tn["pretrained"]["lr"] == 1e-3 and oc["pretrained"]["lr"] == 3e-4  # best dev mean
    assert tn["gain_points"] == pytest.approx(9.0) and tn["every_pretrained_above_every_random"]
    assert oc["gain_points"] == pytest.approx(4.0) and not oc["every_pretrained_above_every_random"]
    capsys.readouterr()
    gain.report(argparse.Namespace(results=[tmp_path / "results-A-dev.json"]))
    out = capsys.readouterr().out
    assert "| A | tnews | all | 3 | dev | 0.2900 (min 0.2800, max 0.3000) lr 0.001 |" in out
    assert "| +9.00 | yes |" in out and "| +4.00 | no |" in out


def _tiny_pretraining_model(seed: int):  # noqa: ANN202
    """The tests' tiny ALBERT (TINY_MODEL) with pretraining heads, drawn with ``seed``."""
    import torch

    from albertzh.model import AlbertForPreTraining
    from albertzh.model.config import AlbertConfig

    torch.manual_seed(seed)
    return AlbertForPreTraining(AlbertConfig(**TINY_MODEL))


def test_reinit_replaces_only_the_parts_asked_for(gain, tmp_path: Path) -> None:
    """`reinit --parts embeddings` keeps every encoder/head tensor and draws the embeddings
    afresh (N(0, initializer_range), LayerNorm 1/0), the same draw for the same seed."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from albertzh.model import AlbertForPreTraining

    model = _tiny_pretraining_model(123)
    cfg = model.config
    with torch.no_grad():  # a "pretrained" model: nothing at its init values
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.save_pretrained(tmp_path / "pre-P")
    ns = argparse.Namespace(work=tmp_path, name="P", parts=["embeddings"], seed=0)
    gain.reinit(argparse.Namespace(**vars(ns), as_name="Q"))
    gain.reinit(argparse.Namespace(**vars(ns), as_name="Q2"))
    old, new = (load_file(tmp_path / f"pre-{n}" / "model.safetensors") for n in ("P", "Q"))
    assert set(old) == set(new)
    prefixes = gain.REINIT_PARTS["embeddings"]
    for k in old:
        changed = not torch.equal(old[k], new[k])
        assert changed == k.startswith(prefixes), k
    emb = new["albert.embeddings.word_embeddings.weight"]
    assert abs(float(emb.std()) - cfg.initializer_range) < 0.005
    ones = torch.ones(cfg.embedding_size)
    assert torch.equal(new["albert.embeddings.LayerNorm.weight"], ones)
    again = load_file(tmp_path / "pre-Q2" / "model.safetensors")
    assert all(torch.equal(new[k], again[k]) for k in new)
    # the copy is a model directory that loads, and the config came along
    AlbertForPreTraining.from_pretrained(tmp_path / "pre-Q")
    with pytest.raises(SystemExit, match="exists"):
        gain.reinit(argparse.Namespace(**vars(ns), as_name="Q"))
    with pytest.raises(SystemExit) as exc:
        gain.main(["reinit", "-w", str(tmp_path), "--name", "P", "--as", "R", "--parts", "heads"])
    assert exc.value.code == 2 and not (tmp_path / "pre-R").exists()


def test_scale_embeddings_keeps_the_function(gain, tmp_path: Path) -> None:
    """The LayerNorm over the summed tables cancels the factor: same hidden states, smaller
    tables, every other tensor untouched."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from albertzh.model import AlbertModel

    model = _tiny_pretraining_model(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embeddings" in name and "LayerNorm" not in name:
                p.mul_(6.0)  # pretrained-sized tables (std ~0.12)
    model.save_pretrained(tmp_path / "pre-P")
    gain.main(["scale-embeddings", "-w", str(tmp_path), "--name", "P", "--as", "S", "--factor",
               "0.2"])  # fmt: skip
    old, new = (load_file(tmp_path / f"pre-{n}" / "model.safetensors") for n in ("P", "S"))
    for k in old:
        want = old[k] * 0.2 if k in gain.EMBEDDING_TABLES else old[k]
        assert torch.equal(new[k], want), k
    ids = torch.randint(1, model.config.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    a, b = (AlbertModel.from_pretrained(tmp_path / f"pre-{n}").eval() for n in ("P", "S"))
    with torch.no_grad():
        ha = a(ids, attention_mask=mask).last_hidden_state
        hb = b(ids, attention_mask=mask).last_hidden_state
    assert (ha - hb).abs().max() < 1e-4
    with pytest.raises(SystemExit) as exc:
        gain.main(["scale-embeddings", "-w", str(tmp_path), "--name", "P", "--as", "T",
                   "--factor", "0"])  # fmt: skip
    assert exc.value.code == 2 and not (tmp_path / "pre-T").exists()
