"""Model directories: atomic save, HF/legacy layouts, fresh heads, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from albertzh.errors import AlbertzhError, ModelDirError
from albertzh.model import (
    AlbertConfig,
    AlbertForPreTraining,
    AlbertForSequenceClassification,
    AlbertModel,
    read_meta,
)
from tests.model.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**fields) -> AlbertConfig:
    return tiny_config(**{"vocab_size": 50, "intermediate_size": 24, **fields})


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class StubTokenizer:
    def save(self, directory: Path) -> Path:
        (Path(directory) / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
        return Path(directory)


class FailingTokenizer:
    def save(self, directory: Path) -> Path:
        (Path(directory) / "vocab.txt").write_text("half", encoding="utf-8")
        raise OSError("disk full")


def test_save_writes_the_model_dir_and_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    model = AlbertForPreTraining(tiny())
    meta = {"stage": "pretrain", "config": {"lr": 1e-3}, "step": 7, "metrics": {"loss": 2.5}}
    model.save_pretrained(tmp_path / "run", tokenizer=StubTokenizer(), meta=meta)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["albertzh.json", "config.json", "model.safetensors", "vocab.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temp dir left behind
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["architectures"] == ["AlbertForPreTraining"] and config["model_type"] == "albert"
    info = read_meta(tmp_path / "run")
    assert info["step"] == 7 and info["metrics"] == {"loss": 2.5} and info["stage"] == "pretrain"
    assert info["num_parameters"] == model.num_parameters()
    from safetensors import safe_open

    with safe_open(tmp_path / "run" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert "predictions.bias" in keys and not any("decoder" in k for k in keys)
    back = AlbertForPreTraining.from_pretrained(tmp_path / "run")
    assert same_state(model, back) and back.config == model.config


def test_save_into_existing_run_dir_keeps_other_files(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "step-0001").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    first = AlbertForPreTraining(tiny())
    first.save_pretrained(run)
    second = AlbertForPreTraining(tiny())
    second.save_pretrained(run, meta={"step": 2})
    assert (run / "checkpoints" / "step-0001").is_dir() and (run / "metrics.jsonl").exists()
    assert same_state(AlbertForPreTraining.from_pretrained(run), second)
    assert read_meta(run)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failed_save_leaves_nothing_half_written(tmp_path) -> None:
    model = AlbertModel(tiny())
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path / "m", tokenizer=FailingTokenizer())
    assert list(tmp_path.iterdir()) == []


def test_real_tokenizer_is_saved_beside_the_model(tmp_path) -> None:
    tokenizer_mod = pytest.importorskip("albertzh.tokenizer")
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "中", "文", "的"]
    (vocab / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    tok = tokenizer_mod.load_tokenizer(vocab)
    AlbertForSequenceClassification(tiny(vocab_size=len(tokens))).save_pretrained(
        tmp_path / "m", tokenizer=tok
    )
    assert (tmp_path / "m" / "vocab.txt").read_text(encoding="utf-8").split() == tokens
    assert (tmp_path / "m" / "config.json").exists()


def test_legacy_pytorch_model_bin_with_tied_copies(tmp_path) -> None:
    model = AlbertForPreTraining(tiny())
    state = dict(model.state_dict())
    # What older transformers wrote: the tied decoder and the position-id buffer, as a .bin.
    state["predictions.decoder.weight"] = state["albert.embeddings.word_embeddings.weight"]
    state["predictions.decoder.bias"] = state["predictions.bias"]
    state["albert.embeddings.position_ids"] = torch.arange(32)[None]
    torch.save(state, tmp_path / "pytorch_model.bin")
    model.config.to_json(tmp_path / "config.json")
    back = AlbertForPreTraining.from_pretrained(tmp_path)
    assert same_state(model, back)


def test_bare_encoder_checkpoint_into_classifier_and_pretraining(tmp_path) -> None:
    encoder = AlbertModel(tiny())
    encoder.save_pretrained(tmp_path / "enc")  # keys without "albert."
    clf = AlbertForSequenceClassification.from_pretrained(tmp_path / "enc", num_labels=4)
    assert clf.load_info == {"initialized": ["classifier"], "ignored": []}
    assert same_state(encoder, clf.albert)
    assert clf.classifier.weight.shape == (4, 16) and clf.classifier.weight.std() > 0.005
    pre = AlbertForPreTraining.from_pretrained(tmp_path / "enc")
    assert pre.load_info["initialized"] == ["predictions", "sop_classifier"]
    assert torch.equal(pre.albert.pooler.weight, encoder.pooler.weight)


def test_pretraining_dir_into_classifier_and_back_to_encoder(tmp_path) -> None:
    pre = AlbertForPreTraining(tiny())
    pre.save_pretrained(tmp_path / "pre")
    clf = AlbertForSequenceClassification.from_pretrained(
        tmp_path / "pre", num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, hidden_dropout_prob=0.1
    )
    assert clf.load_info == {
        "initialized": ["classifier"],
        "ignored": ["predictions", "sop_classifier"],
    }
    assert clf.config.hidden_dropout_prob == 0.1 and clf.config.labels() == ["a", "b", "c"]
    assert same_state(pre.albert, clf.albert)
    enc = AlbertModel.from_pretrained(tmp_path / "pre")
    assert enc.load_info["ignored"] == ["predictions", "sop_classifier"]
    assert same_state(pre.albert, enc)


def test_classifier_dir_keeps_its_head_unless_num_labels_changes(tmp_path) -> None:
    clf = AlbertForSequenceClassification(tiny(num_labels=2))
    clf.save_pretrained(tmp_path / "clf")
    again = AlbertForSequenceClassification.from_pretrained(tmp_path / "clf")
    assert again.load_info["initialized"] == [] and same_state(clf, again)
    wider = AlbertForSequenceClassification.from_pretrained(tmp_path / "clf", num_labels=5)
    assert wider.load_info["initialized"] == ["classifier"]
    assert wider.classifier.weight.shape[0] == 5
    named = AlbertForSequenceClassification(tiny(num_labels=2, id2label={0: "neg", 1: "pos"}))
    named.save_pretrained(tmp_path / "named")
    same = AlbertForSequenceClassification.from_pretrained(
        tmp_path / "named", num_labels=2, id2label={0: "neg", 1: "pos"}, hidden_dropout_prob=0.1
    )
    assert same.load_info["initialized"] == [] and same_state(named, same)
    other = AlbertForSequenceClassification.from_pretrained(
        tmp_path / "named", id2label={0: "bad", 1: "good"}
    )
    assert other.load_info["initialized"] == ["classifier"]
    assert other.config.label2id == {"bad": 0, "good": 1}


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("drop_backbone", "missing keys: albert.encoder.embedding_hidden_mapping_in.bias"),
        ("extra_backbone", "unexpected keys: albert.encoder.extra.weight"),
        ("partial_head", "only partly stored: predictions"),
        (
            "shape",
            "shape mismatch (checkpoint vs config): albert.embeddings.word_embeddings.weight (50, 8) vs (60, 8)",
        ),
    ],
)
def test_mismatched_weights_are_listed(damage: str, needle: str, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    AlbertForPreTraining(tiny()).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    overrides = {}
    if damage == "drop_backbone":
        del state["albert.encoder.embedding_hidden_mapping_in.bias"]
    elif damage == "extra_backbone":
        state["albert.encoder.extra.weight"] = torch.zeros(2)
    elif damage == "partial_head":
        del state["predictions.dense.weight"]
    else:
        overrides = {"vocab_size": 60}
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelDirError) as exc:
        AlbertForPreTraining.from_pretrained(tmp_path, **overrides)
    assert str(exc.value).startswith(str(tmp_path))
    assert needle in str(exc.value)


def test_bad_directories(tmp_path) -> None:
    with pytest.raises(ModelDirError, match="model directory not found"):
        AlbertModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelDirError, match="no config.json"):
        AlbertModel.from_pretrained(tmp_path)
    tiny().to_json(tmp_path / "config.json")
    with pytest.raises(ModelDirError, match="no weights found"):
        AlbertModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelDirError, match=r"model\.safetensors: cannot read weights"):
        AlbertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(AlbertzhError, match=r"config\.json: model_type is 'bert'"):
        AlbertModel.from_pretrained(tmp_path)


def test_bin_that_is_not_a_state_dict(tmp_path) -> None:
    tiny().to_json(tmp_path / "config.json")
    torch.save([1, 2, 3], tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelDirError, match="expected a state dict"):
        AlbertModel.from_pretrained(tmp_path)


class NotAllowed:
    pass


def test_bin_with_arbitrary_pickle_is_refused(tmp_path) -> None:
    tiny().to_json(tmp_path / "config.json")
    torch.save({"x": NotAllowed()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelDirError, match=r"pytorch_model\.bin: cannot read weights"):
        AlbertModel.from_pretrained(tmp_path)


def test_a_saved_model_gets_the_modes_of_the_umask(tmp_path) -> None:
    """Not 0700/0600 (mkdtemp, safetensors): other users can load a model albertzh wrote."""
    import os

    from albertzh.model import AlbertConfig, AlbertModel

    old = os.umask(0o022)
    try:
        AlbertModel(
            AlbertConfig(
                vocab_size=30,
                hidden_size=16,
                num_attention_heads=2,
                intermediate_size=32,
                embedding_size=8,
                num_hidden_layers=1,
            )
        ).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755
    for f in (tmp_path / "m").iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f.name
