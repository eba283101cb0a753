"""Bring albert_zh TensorFlow checkpoints in, and move models between albertzh, HF and TF.

Two TF variable layouts exist among the albert_zh releases:

- ``google`` (``*_google`` configs, Google's ALBERT code): E-wide embeddings, then
  ``bert/encoder/embedding_hidden_mapping_in`` (E -> H), layers under
  ``bert/encoder/transformer/group_g/inner_group_k/``. This is HuggingFace's layout, so the
  converted directory loads in ``transformers`` too.
- ``brightmart`` (``albert_config_{tiny,base,large,xlarge,xxlarge}.json``): the word embeddings
  are projected E -> H by ``bert/embeddings/word_embeddings_2`` (no bias) *before* H-wide
  position/type embeddings and LayerNorm; one shared BERT-named layer under
  ``bert/encoder/layer_shared/``; post- or pre-LayerNorm (``ln_type``); the MLM decoder is tied
  to both embedding matrices. albertzh models it with ``embedding_layout="brightmart"``;
  transformers has no equivalent.

TF dense kernels are ``[in, out]`` and are transposed into torch's ``[out, in]``; LayerNorm
``gamma``/``beta`` become ``weight``/``bias``. Optimizer slots and ``global_step`` are skipped;
any other variable that maps nowhere, or any expected one that is absent, is an error that
lists the names.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from albertzh.errors import ConfigError, InputError, ModelDirError, VocabMismatchError
from albertzh.model.config import (
    ALBERT_ZH_POOLER_KEYS,
    AlbertConfig,
    read_json_object,
    unknown_keys_error,
)

Layout = Literal["google", "brightmart"]
Head = Literal["pretraining", "classifier"]

SKIPPED_SUFFIXES = ("/adam_m", "/adam_v", "/lamb_m", "/lamb_v")
SKIPPED_NAMES = ("global_step",)

# albert_config.json keys that carry nothing the converted model needs (pooler_* describe an
# unused pooler variant); anything else unknown is an error rather than silently ignored.
_IGNORED_TF_KEYS = {
    *ALBERT_ZH_POOLER_KEYS,
    "initializer_range",
    "use_position_embeddings",
}
# Keys of Google's config whose non-default values select model variants albertzh lacks.
_REQUIRED_DEFAULTS = {"net_structure_type": 0, "gap_size": 0, "num_memory_blocks": 0}
_REQUIRED_DEFAULTS_DOWN = {"down_scale_factor": 1}
_CONFIG_KEYS = {
    "vocab_size",
    "embedding_size",
    "hidden_size",
    "num_hidden_layers",
    "num_hidden_groups",
    "inner_group_num",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "ln_type",
}


@dataclass(frozen=True)
class VarMap:
    """One TF variable <-> one torch parameter (HF key, ``albert.``-prefixed)."""

    tf: str
    hf: str
    transpose: bool = False


def _short(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def is_skipped(name: str) -> bool:
    """Optimizer slots and bookkeeping that a model does not need."""
    return name in SKIPPED_NAMES or name.endswith(SKIPPED_SUFFIXES)


# --------------------------------------------------------------------------- layouts


def _dense(tf: str, hf: str) -> list[VarMap]:
    return [VarMap(f"{tf}/kernel", f"{hf}.weight", True), VarMap(f"{tf}/bias", f"{hf}.bias")]


def _norm(tf: str, hf: str) -> list[VarMap]:
    return [VarMap(f"{tf}/gamma", f"{hf}.weight"), VarMap(f"{tf}/beta", f"{hf}.bias")]


def _heads(config: AlbertConfig, heads: set[str]) -> list[VarMap]:
    out: list[VarMap] = []
    if "pretraining" in heads:
        out += _dense("cls/predictions/transform/dense", "predictions.dense")
        out += _norm("cls/predictions/transform/LayerNorm", "predictions.LayerNorm")
        out.append(VarMap("cls/predictions/output_bias", "predictions.bias"))
        # [2, H] used with transpose_b: already torch's [out, in]
        out.append(
            VarMap("cls/seq_relationship/output_weights", "sop_classifier.classifier.weight")
        )
        out.append(VarMap("cls/seq_relationship/output_bias", "sop_classifier.classifier.bias"))
    if "classifier" in heads:  # run_classifier.py's output layer, [num_labels, H]
        out.append(VarMap("output_weights", "classifier.weight"))
        out.append(VarMap("output_bias", "classifier.bias"))
    return out


def google_map(
    config: AlbertConfig, heads: set[str], groups: list[int] | None = None
) -> list[VarMap]:
    """Variable map of Google's ALBERT layout (``groups``: TF group numbers, in order)."""
    groups = groups if groups is not None else list(range(config.num_hidden_groups))
    out = [
        VarMap("bert/embeddings/word_embeddings", "albert.embeddings.word_embeddings.weight"),
        VarMap(
            "bert/embeddings/token_type_embeddings",
            "albert.embeddings.token_type_embeddings.weight",
        ),
        VarMap(
            "bert/embeddings/position_embeddings", "albert.embeddings.position_embeddings.weight"
        ),
        *_norm("bert/embeddings/LayerNorm", "albert.embeddings.LayerNorm"),
        *_dense(
            "bert/encoder/embedding_hidden_mapping_in",
            "albert.encoder.embedding_hidden_mapping_in",
        ),
    ]
    for g, tf_group in enumerate(groups):
        for k in range(config.inner_group_num):
            tf = f"bert/encoder/transformer/group_{tf_group}/inner_group_{k}"
            hf = f"albert.encoder.albert_layer_groups.{g}.albert_layers.{k}"
            for part in ("query", "key", "value"):
                out += _dense(f"{tf}/attention_1/self/{part}", f"{hf}.attention.{part}")
            out += _dense(f"{tf}/attention_1/output/dense", f"{hf}.attention.dense")
            out += _norm(f"{tf}/LayerNorm", f"{hf}.attention.LayerNorm")
            out += _dense(f"{tf}/ffn_1/intermediate/dense", f"{hf}.ffn")
            out += _dense(f"{tf}/ffn_1/intermediate/output/dense", f"{hf}.ffn_output")
            out += _norm(f"{tf}/LayerNorm_1", f"{hf}.full_layer_layer_norm")
    out += _dense("bert/pooler/dense", "albert.pooler")
    return out + _heads(config, heads)


def brightmart_map(config: AlbertConfig, heads: set[str]) -> list[VarMap]:
    """Variable map of brightmart's albert_zh layout (one shared BERT-style layer)."""
    tf = "bert/encoder/layer_shared"
    hf = "albert.encoder.albert_layer_groups.0.albert_layers.0"
    out = [
        VarMap("bert/embeddings/word_embeddings", "albert.embeddings.word_embeddings.weight"),
        # [E, H] used as x @ W: torch Linear(E, H) wants [H, E]
        VarMap(
            "bert/embeddings/word_embeddings_2", "albert.embeddings.word_embeddings_2.weight", True
        ),
        VarMap(
            "bert/embeddings/token_type_embeddings",
            "albert.embeddings.token_type_embeddings.weight",
        ),
        VarMap(
            "bert/embeddings/position_embeddings", "albert.embeddings.position_embeddings.weight"
        ),
        *_norm("bert/embeddings/LayerNorm", "albert.embeddings.LayerNorm"),
    ]
    for part in ("query", "key", "value"):
        out += _dense(f"{tf}/attention/self/{part}", f"{hf}.attention.{part}")
    out += _dense(f"{tf}/attention/output/dense", f"{hf}.attention.dense")
    # postln: after attention / after the FFN; preln: before them -- same variables either way.
    out += _norm(f"{tf}/attention/output/LayerNorm", f"{hf}.attention.LayerNorm")
    out += _dense(f"{tf}/intermediate/dense", f"{hf}.ffn")
    out += _dense(f"{tf}/output/dense", f"{hf}.ffn_output")
    out += _norm(f"{tf}/output/LayerNorm", f"{hf}.full_layer_layer_norm")
    out += _dense("bert/pooler/dense", "albert.pooler")
    return out + _heads(config, heads)


def detect_layout(names: list[str] | set[str], source: str = "checkpoint") -> Layout:
    """Which albert_zh layout a set of TF variable names is."""
    if any(n.startswith("bert/encoder/transformer/") for n in names):
        return "google"
    if any(n.startswith("bert/encoder/layer_shared/") for n in names):
        return "brightmart"
    if any(n.startswith("bert/encoder/layer_") for n in names):
        raise InputError(
            f"{source}: BERT-style unshared layers (bert/encoder/layer_N) are not an ALBERT layout"
        )
    raise InputError(f"{source}: no ALBERT encoder variables (bert/encoder/...) found")


def detect_heads(names: list[str] | set[str]) -> set[str]:
    heads = set()
    if any(n.startswith("cls/") and not is_skipped(n) for n in names):
        heads.add("pretraining")
    if "output_weights" in names or "output_bias" in names:
        heads.add("classifier")
    return heads


def tf_groups(config: AlbertConfig, num_groups: int) -> list[int]:
    """TF group numbers that Google's code creates: layer i uses int(i / L * G)."""
    L = config.num_hidden_layers
    return sorted({int(i / L * num_groups) for i in range(L)})


# --------------------------------------------------------------------------- config


def config_from_tf_json(
    path: Path,
    *,
    ln_type: str | None = None,
    layout: Layout | None = None,
    num_labels: int | None = None,
) -> tuple[AlbertConfig, int]:
    """An :class:`AlbertConfig` from an albert_zh ``albert_config*.json``.

    Returns the config and the number of TF groups the checkpoint uses (Google's configs may
    name more groups than layers; only the used ones exist and they are renumbered 0..G-1).
    TF's ``gelu`` is the tanh approximation, i.e. HF's ``gelu_new``.
    """
    path = Path(path)
    data = read_json_object(path)
    known = _CONFIG_KEYS | _IGNORED_TF_KEYS | set(_REQUIRED_DEFAULTS) | {"down_scale_factor"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise unknown_keys_error(unknown, known, str(path))
    for key, want in {**_REQUIRED_DEFAULTS, **_REQUIRED_DEFAULTS_DOWN}.items():
        if key in data and data[key] != want:
            raise ConfigError(f"{path}: {key}={data[key]} is not supported (only {want})")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        if key not in data:
            raise ConfigError(f"{path}: missing field {key}")
    fields: dict[str, Any] = {k: v for k, v in data.items() if k in _CONFIG_KEYS}
    act = fields.get("hidden_act", "gelu")
    fields["hidden_act"] = "gelu_new" if act == "gelu" else act
    fields.setdefault("intermediate_size", 4 * fields["hidden_size"])
    fields.setdefault("embedding_size", 128)
    fields.setdefault("max_position_embeddings", 512)
    fields.setdefault("type_vocab_size", 2)
    fields.setdefault("hidden_dropout_prob", 0.1)
    fields.setdefault("attention_probs_dropout_prob", 0.1)
    file_ln = fields.pop("ln_type", None)
    ln = ln_type or file_ln or "postln"
    if ln not in ("postln", "preln"):
        raise ConfigError(f"{path}: ln_type {ln!r} must be postln or preln")
    groups = int(fields.get("num_hidden_groups", 1))
    if layout == "brightmart":
        fields["num_hidden_groups"], fields["inner_group_num"] = 1, 1
        fields["embedding_layout"] = "brightmart"
        fields["ln_type"] = ln
    elif ln != "postln":
        raise ConfigError(f"{path}: ln_type {ln} exists only in the brightmart layout")
    else:
        used = len(
            {
                int(i / fields["num_hidden_layers"] * groups)
                for i in range(fields["num_hidden_layers"])
            }
        )
        fields["num_hidden_groups"] = min(groups, used)
    if num_labels is not None:
        fields["num_labels"] = num_labels
    try:
        config = AlbertConfig(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {str(exc).removeprefix('AlbertConfig: ')}") from exc
    return config, groups


def config_to_tf_json(config: AlbertConfig) -> dict[str, Any]:
    """The albert_zh-style ``albert_config.json`` for a config (inverse of the above)."""
    act = {"gelu_new": "gelu", "gelu_fast": "gelu", "gelu_pytorch_tanh": "gelu"}.get(
        config.hidden_act, config.hidden_act
    )
    out: dict[str, Any] = {
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "embedding_size": config.embedding_size,
        "hidden_act": act,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers,
        "type_vocab_size": config.type_vocab_size,
        "vocab_size": config.vocab_size,
        "initializer_range": config.initializer_range,
    }
    if layout_of(config) == "brightmart":
        out["ln_type"] = ln_of(config)
    else:
        out["num_hidden_groups"] = config.num_hidden_groups
        out["inner_group_num"] = config.inner_group_num
    return out


def layout_of(config: AlbertConfig) -> Layout:
    return getattr(config, "embedding_layout", "google")


def ln_of(config: AlbertConfig) -> str:
    return getattr(config, "ln_type", "postln")


# --------------------------------------------------------------------------- tensors


@dataclass
class TFConversion:
    """The result of mapping TF variables onto torch parameters."""

    state: dict[str, np.ndarray]  # HF keys (albert.-prefixed) -> arrays in torch orientation
    layout: Layout
    heads: set[str]
    skipped: list[str]


def tf_to_state(
    tensors: Mapping[str, np.ndarray],
    config: AlbertConfig,
    *,
    layout: Layout,
    groups: int | None = None,
    source: str = "checkpoint",
) -> TFConversion:
    """Map TF variables onto HF-named parameters; every variable must be used exactly once."""
    names = set(tensors)
    heads = detect_heads(names)
    if layout == "google":
        tf_g = groups or config.num_hidden_groups
        used = tf_groups(config, tf_g)
        # Google's code picks group int(i / L * G); albertzh (like HF) int(i / (L / G')). Both
        # must send every layer to the same weights.
        L, rank = config.num_hidden_layers, {g: k for k, g in enumerate(used)}
        theirs = [rank[int(i / L * tf_g)] for i in range(L)]
        ours = [int(i / (L / config.num_hidden_groups)) for i in range(L)]
        if theirs != ours:
            raise InputError(
                f"{source}: layer-to-group assignment {theirs} cannot be expressed as {ours}"
            )
        mapping = google_map(config, heads, used)
    else:
        mapping = brightmart_map(config, heads)
    expected = {m.tf for m in mapping}
    skipped = sorted(n for n in names if is_skipped(n))
    unmapped = sorted(names - expected - set(skipped))
    missing = sorted(expected - names)
    problems = []
    if unmapped:
        problems.append(f"unmapped variable(s) {_short(unmapped)}")
    if missing:
        problems.append(f"missing variable(s) {_short(missing)}")
    if problems:
        raise InputError(f"{source}: {layout} layout: " + "; ".join(problems))
    state = {}
    for m in mapping:
        arr = np.asarray(tensors[m.tf])
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        state[m.hf] = np.ascontiguousarray(arr.T if m.transpose else arr)
    return TFConversion(state=state, layout=layout, heads=heads, skipped=skipped)


def state_to_tf(state: Mapping[str, Any], config: AlbertConfig) -> dict[str, np.ndarray]:
    """Map HF-named parameters (``albert.``-prefixed) back onto albert_zh TF variable names."""
    heads = set()
    if any(k.startswith("predictions.") for k in state):
        heads.add("pretraining")
    if any(k.startswith("classifier.") for k in state):
        heads.add("classifier")
    layout = layout_of(config)
    mapping = google_map(config, heads) if layout == "google" else brightmart_map(config, heads)
    out = {}
    for m in mapping:
        value = state[m.hf]
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        out[m.tf] = np.ascontiguousarray(arr.T if m.transpose else arr).astype(np.float32)
    return out


# --------------------------------------------------------------------------- models


def model_class(heads: set[str]) -> type:
    """The albertzh model class that holds exactly these heads."""
    from albertzh.model import AlbertForPreTraining, AlbertForSequenceClassification, AlbertModel

    if heads == {"pretraining", "classifier"}:
        raise InputError("checkpoint has both pretraining (cls/...) and classifier variables")
    if "classifier" in heads:
        return AlbertForSequenceClassification
    if "pretraining" in heads:
        return AlbertForPreTraining
    return AlbertModel


def build_model(config: AlbertConfig, state: Mapping[str, np.ndarray], heads: set[str]) -> Any:
    """An albertzh model with these HF-named weights loaded (strictly: every key must match)."""
    import torch

    cls = model_class(heads)
    model = cls(config, init=False)
    bare = not hasattr(model, "albert")
    tensors = {
        (k.removeprefix("albert.") if bare else k): torch.from_numpy(np.array(v))
        for k, v in state.items()
    }
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(own)
        if k in tensors and tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch (checkpoint vs config) {_short(shapes, 4)}")
        raise InputError("weights do not fit the config: " + "; ".join(parts))
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model


def load_vocab(vocab: Path, config: AlbertConfig) -> Any:
    """The tokenizer of a vocab file or directory, checked against the model's vocab size."""
    from albertzh.tokenizer import load_tokenizer

    tok = load_tokenizer(vocab)
    if tok.vocab_size != config.vocab_size:
        raise VocabMismatchError(
            f"{vocab}: {tok.vocab_size} tokens but the model config says vocab_size "
            f"{config.vocab_size}"
        )
    return tok


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse a non-empty output directory unless ``overwrite`` (replaced only on success)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(f"{path}: output directory is not empty (use --overwrite)")


def replace_dir(new: Path, path: Path) -> None:
    """Move the finished directory ``new`` to ``path``, replacing what was there."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
    new.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_tf(model: Any, tokenizer: Any, out: Path) -> Path:
    """Write ``model.ckpt`` + ``albert_config.json`` (+ ``vocab.txt``) in albert_zh's form."""
    from albertzh.model.tf_checkpoint import write_checkpoint

    state = model.state_dict()
    if not hasattr(model, "albert"):
        state = {f"albert.{k}": v for k, v in state.items()}
    tensors = state_to_tf(state, model.config)
    out.mkdir(parents=True)
    write_checkpoint(out / "model.ckpt", tensors)
    (out / "albert_config.json").write_text(
        json.dumps(config_to_tf_json(model.config), indent=2) + "\n", encoding="utf-8"
    )
    if tokenizer is not None:
        tokenizer.save(out)
    return out


def load_model_dir(path: Path) -> Any:
    """Load an albertzh/HF model dir as the class its config names (its heads kept)."""
    from albertzh.model import AlbertForPreTraining, AlbertForSequenceClassification, AlbertModel
    from albertzh.model.io import CONFIG_FILE

    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ModelDirError(f"{path}: no {CONFIG_FILE} (not a model directory)")
    try:
        archs = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("architectures")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path / CONFIG_FILE}: not valid JSON: {exc}") from exc
    arch = (archs or ["AlbertForPreTraining"])[0]
    classes: dict[str, Any] = {
        "AlbertForPreTraining": AlbertForPreTraining,
        "AlbertForMaskedLM": AlbertForPreTraining,
        "AlbertForSequenceClassification": AlbertForSequenceClassification,
        "AlbertModel": AlbertModel,
    }
    if arch not in classes:
        raise ModelDirError(f"{path / CONFIG_FILE}: architecture {arch} is not supported")
    if arch == "AlbertForMaskedLM":
        return _load_masked_lm(path)
    model = classes[arch].from_pretrained(path)
    model.eval()
    return model


def _load_masked_lm(path: Path) -> Any:
    """An HF ``AlbertForMaskedLM`` dir (e.g. the albert_chinese_* family) as a pretraining model.

    Such checkpoints may lack the pooler (transformers builds MaskedLM without it) and always
    lack the SOP head; those start from the usual init and are listed in ``load_info``.
    """
    import torch

    from albertzh.model import AlbertForPreTraining
    from albertzh.model.io import read_state_dict

    config = AlbertConfig.from_json(path / "config.json")
    state = dict(read_state_dict(path))
    if "predictions.bias" not in state and "predictions.decoder.bias" in state:
        state["predictions.bias"] = state["predictions.decoder.bias"]
    for key in ("predictions.decoder.weight", "predictions.decoder.bias"):
        state.pop(key, None)
    state = {k: v for k, v in state.items() if not k.endswith(("position_ids", "token_type_ids"))}
    torch.manual_seed(0)
    model = AlbertForPreTraining(config)  # fresh init for what the checkpoint lacks
    own = model.state_dict()
    optional = ("albert.pooler.", "sop_classifier.")
    missing = sorted(k for k in own if k not in state and not k.startswith(optional))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        raise ModelDirError(
            f"{path}: weights do not match AlbertForMaskedLM: missing {_short(missing)}; "
            f"unexpected {_short(unexpected)}; shape mismatch {_short(shapes)}"
        )
    model.load_state_dict(state, strict=False)
    fresh = sorted(
        {k.split(".")[0] if k.startswith("sop") else "pooler" for k in own if k not in state}
    )
    model.load_info = {"initialized": fresh, "ignored": []}
    model.eval()
    return model
