"""AlbertConfig: validation naming the field, HF config.json round trips, presets and sizes."""

from __future__ import annotations

import json

import pytest
import torch

from albertzh.errors import ConfigError
from albertzh.model import PRESETS, AlbertConfig, AlbertForPreTraining, AlbertModel

# albert_zh's release plan (headline sizes) and the exact counts with the 21128 vocab.
RELEASE_PLAN = {"base": 12e6, "large": 18e6, "xlarge": 59e6, "xxlarge": 233e6}
EXACT_PRETRAINING = {
    "tiny": 4_142_594,
    "small": 4_813_706,
    "base": 10_669_322,
    "large": 16_702_986,
    "xlarge": 57_877_002,
    "xxlarge": 222_013_962,
}


def test_preset_sizes_match_albert_zh() -> None:
    cfg = AlbertConfig.preset("base")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (768, 12, 12)
    assert (cfg.intermediate_size, cfg.embedding_size, cfg.vocab_size) == (3072, 128, 21128)
    assert AlbertConfig.preset("tiny").hidden_size == 312
    assert AlbertConfig.preset("xxlarge", vocab_size=30000).num_attention_heads == 64
    assert AlbertConfig.preset("tiny", num_hidden_layers=2).num_hidden_layers == 2


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_counts_exact_and_on_meta(name: str) -> None:
    cfg = AlbertConfig.preset(name)
    with torch.device("meta"):  # no memory: xxlarge would be ~900 MB
        model = AlbertForPreTraining(cfg)
        base = AlbertModel(cfg)
    assert model.num_parameters() == cfg.num_parameters("pretraining") == EXACT_PRETRAINING[name]
    assert base.num_parameters() == cfg.num_parameters()


@pytest.mark.parametrize("name", list(RELEASE_PLAN))
def test_parameter_counts_near_release_plan(name: str) -> None:
    # The plan's figures are the ALBERT paper's (30k vocab); 21128 tokens are ~1.1M fewer.
    count = AlbertConfig.preset(name).num_parameters("pretraining")
    assert abs(count - RELEASE_PLAN[name]) / RELEASE_PLAN[name] < 0.12
    count_30k = AlbertConfig.preset(name, vocab_size=30000).num_parameters("pretraining")
    assert abs(count_30k - RELEASE_PLAN[name]) / RELEASE_PLAN[name] < 0.05


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        (dict(hidden_size=100, num_attention_heads=12), "hidden_size 100 must be divisible"),
        (dict(num_hidden_groups=5, num_hidden_layers=4), "num_hidden_groups 5 must be <="),
        (dict(hidden_act="swiglu"), "hidden_act 'swiglu'"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(num_labels=3, id2label={0: "a", 1: "b"}), "id2label has 2 entries"),
        (dict(problem_type="ranking"), "problem_type"),
        (dict(pad_token_id=50, vocab_size=10), "pad_token_id 50"),
        (dict(hiden_size=10), "hiden_size"),
    ],
)
def test_bad_config_names_the_field(fields: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match="AlbertConfig") as exc:
        AlbertConfig(**fields)
    assert needle in str(exc.value)


def test_unknown_preset_and_override() -> None:
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        AlbertConfig.preset("huge")
    with pytest.raises(ConfigError, match="hidden_sise"):
        AlbertConfig.preset("tiny", hidden_sise=10)
    with pytest.raises(ConfigError, match="num_attention_heads"):
        AlbertConfig.preset("tiny", num_attention_heads=7)


def test_json_round_trip_and_hf_reads_it(tmp_path) -> None:
    cfg = AlbertConfig.preset(
        "tiny", vocab_size=500, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}
    )
    path = tmp_path / "config.json"
    cfg.to_json(path, architectures=["AlbertForSequenceClassification"])
    data = json.loads(path.read_text())
    assert data["model_type"] == "albert"
    assert data["architectures"] == ["AlbertForSequenceClassification"]
    assert data["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    back = AlbertConfig.from_json(tmp_path)  # a directory works too
    assert back == cfg
    transformers = pytest.importorskip("transformers")
    hf = transformers.AlbertConfig.from_pretrained(tmp_path)
    assert hf.num_labels == 3 and hf.id2label[2] == "pos" and hf.label2id["neu"] == 1
    assert hf.hidden_size == 312 and hf.vocab_size == 500 and hf.hidden_act == "gelu_new"


def test_reads_hf_written_config(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AlbertConfig(
        vocab_size=77,
        hidden_size=48,
        num_attention_heads=4,
        intermediate_size=96,
        num_hidden_layers=3,
        hidden_act="relu",
        problem_type="regression",
        num_labels=1,
    )
    hf.save_pretrained(tmp_path)
    cfg = AlbertConfig.from_json(tmp_path / "config.json")
    assert (cfg.vocab_size, cfg.hidden_size, cfg.hidden_act) == (77, 48, "relu")
    assert cfg.num_labels == 1 and cfg.problem_type == "regression"
    assert cfg.id2label is None  # HF's generic LABEL_i names stay implicit
    # Fields HF left out take HF's defaults.
    assert cfg.embedding_size == 128 and cfg.layer_norm_eps == 1e-12


def test_from_json_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        AlbertConfig.from_json(tmp_path / "nope.json")
    bad = tmp_path / "config.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        AlbertConfig.from_json(bad)
    bad.write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="model_type is 'bert'"):
        AlbertConfig.from_json(bad)
    bad.write_text(json.dumps({"position_embedding_type": "relative_key"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="position_embedding_type 'relative_key'"):
        AlbertConfig.from_json(bad)
    bad.write_text(json.dumps({"hidden_size": 100, "num_attention_heads": 12}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.json: hidden_size 100"):
        AlbertConfig.from_json(bad)


def test_unknown_keys_are_refused_naming_the_closest_field(tmp_path) -> None:
    """A typo must not leave a field at its default (hiden_size trained a hidden-4096 model)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hiden_size": 32, "num_attention_heads": 2}), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"unknown key 'hiden_size' \(did you mean 'hidden_size'\?\)"
    ):
        AlbertConfig.from_json(path)
    with pytest.raises(ConfigError, match=r"'num_hiden_layers' \(did you mean 'num_hidden_layers'"):
        AlbertConfig.from_hf_dict({"num_hiden_layers": 2})
    with pytest.raises(ConfigError, match="unknown key 'zzz'$"):  # nothing close: no suggestion
        AlbertConfig.from_hf_dict({"zzz": 1})
    with pytest.raises(ConfigError, match="did you mean 'hidden_size'"):
        AlbertConfig.preset("tiny", hiden_size=64)
    with pytest.raises(ConfigError, match="did you mean 'num_labels'"):
        AlbertConfig.preset("tiny").replace(num_label=3)


def test_keys_transformers_writes_are_accepted() -> None:
    """Bookkeeping of transformers 4.x/5.x, Google's variant keys at their no-op values and the
    BERT pooler keys of converted albert_zh configs load; other variant values are refused."""
    written = {
        **AlbertConfig.preset("tiny").to_hf_dict(["AlbertForMaskedLM"]),
        "transformers_version": "4.40.0",
        "torch_dtype": "float32",
        "output_past": True,
        "gradient_checkpointing": False,
        "chunk_size_feed_forward": 0,
        "is_decoder": False,
        "num_beams": 1,
        "use_cache": True,
        "pruned_heads": {},
        "down_scale_factor": 1,
        "gap_size": 0,
        "net_structure_type": 0,
        "num_memory_blocks": 0,
        "layers_to_keep": [],
        "directionality": "bidi",
        "pooler_type": "first_token_transform",
        "position_embedding_type": "absolute",
    }
    assert AlbertConfig.from_hf_dict(written) == AlbertConfig.preset("tiny")
    with pytest.raises(ConfigError, match="net_structure_type 1 is not supported"):
        AlbertConfig.from_hf_dict({**written, "net_structure_type": 1})
    with pytest.raises(ConfigError, match="pruned_heads"):
        AlbertConfig.from_hf_dict({**written, "pruned_heads": {"0": [1]}})


def test_every_key_transformers_writes_is_accepted() -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AlbertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    written = hf.to_dict()
    cfg = AlbertConfig.from_hf_dict(written)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (32, 2, 64)


def test_replace_changes_labels() -> None:
    cfg = AlbertConfig.preset("tiny").replace(num_labels=1, problem_type="regression")
    assert cfg.num_labels == 1 and cfg.labels() == ["LABEL_0"]
    with pytest.raises(ConfigError, match="nope"):
        cfg.replace(nope=1)
    named = cfg.replace(id2label={0: "a", 1: "b", 2: "c"}, problem_type=None)
    assert named.num_labels == 3 and named.label2id == {"a": 0, "b": 1, "c": 2}
    assert named.replace(num_labels=2).id2label is None  # stale names dropped
