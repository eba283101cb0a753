"""The ALBERT model config: HuggingFace ``config.json`` fields, validated, with albert_zh presets.

Defaults are HuggingFace's ``AlbertConfig`` defaults so that a ``config.json`` which leaves a
field out means the same thing here as in transformers. Build new models from a preset:
``AlbertConfig.preset("base", vocab_size=21128)``.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from albertzh.errors import ConfigError
from albertzh.files import atomic_write_text, json_text

# hidden_act values the model implements (HF names). gelu_new / gelu_fast / gelu_pytorch_tanh
# are the tanh approximation (what albert_zh trained with); "gelu" is the exact erf form.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "relu", "silu", "swish")

ProblemType = Literal["regression", "single_label_classification", "multi_label_classification"]

# albert_zh sizes: (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size).
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (312, 4, 12, 1248),
    "small": (384, 6, 12, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "xlarge": (2048, 24, 32, 8192),
    "xxlarge": (4096, 12, 64, 16384),
}

# Keys albert_zh's albert_config.json carries for BERT's pooler variants (unused by ALBERT).
ALBERT_ZH_POOLER_KEYS = (
    "directionality",
    "pooler_fc_size",
    "pooler_num_attention_heads",
    "pooler_num_fc_layers",
    "pooler_size_per_head",
    "pooler_type",
)

# Keys transformers writes into (or reads from) an ALBERT config.json that shape nothing here:
# save bookkeeping, PretrainedConfig's common attributes (4.x and 5.x), the generation
# parameters older versions saved, and the BERT pooler keys of albert_zh's converted configs.
# They are accepted and dropped; any other unknown key is an error (a typo must not silently
# leave a field at its default).
_HF_BOOKKEEPING = {
    "architectures",
    "model_type",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "_name_or_path",
    "name_or_path",
    "_commit_hash",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "attn_implementation",
    "num_labels",  # folded into id2label handling below
    # PretrainedConfig's common attributes
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "cross_attention_hidden_size",
    "add_cross_attention",
    "tie_encoder_decoder",
    "finetuning_task",
    "tokenizer_class",
    "prefix",
    "sep_token_id",
    "decoder_start_token_id",
    "task_specific_params",
    "xla_device",
    "gradient_checkpointing",
    "output_past",
    "use_cache",
    # generation parameters (transformers.GenerationConfig's defaults)
    *("assistant_confidence_threshold", "assistant_lookbehind", "bad_words_ids"),
    *("begin_suppress_tokens", "diversity_penalty", "do_sample", "early_stopping"),
    *("encoder_no_repeat_ngram_size", "encoder_repetition_penalty", "epsilon_cutoff"),
    *("eta_cutoff", "exponential_decay_length_penalty", "forced_bos_token_id"),
    *("forced_eos_token_id", "length_penalty", "max_length", "min_length"),
    *("no_repeat_ngram_size", "num_assistant_tokens", "num_assistant_tokens_schedule"),
    *("num_beam_groups", "num_beams", "num_return_sequences", "output_scores"),
    *("remove_invalid_values", "repetition_penalty", "return_dict_in_generate"),
    *("suppress_tokens", "target_lookbehind", "temperature", "top_k", "top_p", "typical_p"),
    # albert_zh's configs, converted by others to HF (BERT's pooler, unused by ALBERT)
    *ALBERT_ZH_POOLER_KEYS,
}
# Keys of Google's ALBERT config (kept in HF's hub configs) and transformers' head pruning: their
# defaults change nothing; other values select models albertzh does not build.
_NO_OP_VALUES: dict[str, Any] = {
    "net_structure_type": 0,
    "gap_size": 0,
    "num_memory_blocks": 0,
    "down_scale_factor": 1,
    "layers_to_keep": [],
    "pruned_heads": {},
    "position_embedding_type": "absolute",
}


def unknown_keys_error(unknown: list[str], known: set[str] | list[str], source: str) -> ConfigError:
    """``source: unknown key 'hiden_size' (did you mean 'hidden_size'?)`` for each key."""
    parts = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        parts.append(f"{key!r}{hint}")
    noun = "key" if len(parts) == 1 else "keys"
    return ConfigError(f"{source}: unknown {noun} {', '.join(parts)}")


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in a config file; ConfigError naming the file if it is absent or not one."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _field_error(exc: ValidationError, source: str) -> ConfigError:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return ConfigError(f"{source}: " + "; ".join(parts))


class AlbertConfig(BaseModel):
    """ALBERT hyper-parameters; the field names and meanings are HuggingFace's ``AlbertConfig``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(30000, ge=1, description="Number of tokens in the vocabulary.")
    embedding_size: int = Field(128, ge=1, description="Width E of the factorized embeddings.")
    hidden_size: int = Field(4096, ge=1, description="Width H of the transformer layers.")
    num_hidden_layers: int = Field(12, ge=1, description="Number of layer applications L.")
    num_hidden_groups: int = Field(1, ge=1, description="Groups of distinct (shared) layers.")
    num_attention_heads: int = Field(64, ge=1, description="Attention heads per layer.")
    intermediate_size: int = Field(16384, ge=1, description="Width of the feed-forward layer.")
    inner_group_num: int = Field(1, ge=1, description="Distinct layers inside each group.")
    hidden_act: str = Field("gelu_new", description=f"Activation: one of {', '.join(ACTIVATIONS)}.")
    hidden_dropout_prob: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on hidden states.")
    attention_probs_dropout_prob: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on attention probabilities."
    )
    max_position_embeddings: int = Field(512, ge=1, description="Longest sequence (positions).")
    type_vocab_size: int = Field(2, ge=1, description="Number of token types (segments).")
    initializer_range: float = Field(0.02, gt=0.0, description="Std of the normal weight init.")
    layer_norm_eps: float = Field(1e-12, gt=0.0, description="LayerNorm epsilon.")
    classifier_dropout_prob: float = Field(
        0.1, ge=0.0, lt=1.0, description="Dropout before the SOP / sequence classifier."
    )
    pad_token_id: int | None = Field(
        0, description="Padding token id (its embedding gets no grad)."
    )
    bos_token_id: int | None = Field(2, description="HF field, kept for round trips.")
    eos_token_id: int | list[int] | None = Field(3, description="HF field, kept for round trips.")
    tie_word_embeddings: bool = Field(True, description="MLM decoder shares the word embeddings.")
    # brightmart's albert_zh checkpoints (see albertzh.pipeline.convert); not HF fields, so they are
    # written to config.json only when not at their defaults.
    embedding_layout: Literal["google", "brightmart"] = Field(
        "google",
        description="google: E-wide embeddings + embedding_hidden_mapping_in (HF's layout); "
        "brightmart: word embeddings projected E->H (word_embeddings_2) before H-wide "
        "position/type embeddings, MLM decoder through both (transformers cannot load it).",
    )
    ln_type: Literal["postln", "preln"] = Field(
        "postln",
        description="postln: LayerNorm after each residual; preln (brightmart layout only): "
        "before each block, no final LayerNorm.",
    )
    # Sequence classification heads.
    num_labels: int = Field(2, ge=1, description="Classifier outputs (1 = regression).")
    id2label: dict[int, str] | None = Field(None, description="Class index -> label name.")
    label2id: dict[str, int] | None = Field(None, description="Label name -> class index.")
    problem_type: ProblemType | None = Field(
        None, description="Classifier loss: regression, single- or multi-label classification."
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _field_error(exc, "AlbertConfig") from exc

    @model_validator(mode="before")
    @classmethod
    def _fill_label2id(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("id2label") and not data.get("label2id"):
            try:
                inverse = {str(v): int(k) for k, v in data["id2label"].items()}
            except (AttributeError, TypeError, ValueError):
                return data  # field validation reports it
            data = {**data, "label2id": inverse}
        return data

    @model_validator(mode="after")
    def _check(self) -> AlbertConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_hidden_groups > self.num_hidden_layers:
            raise ValueError(
                f"num_hidden_groups {self.num_hidden_groups} must be <= "
                f"num_hidden_layers {self.num_hidden_layers}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported (use one of {', '.join(ACTIVATIONS)})"
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id {self.pad_token_id} is outside vocab_size {self.vocab_size}"
            )
        if self.ln_type == "preln" and self.embedding_layout != "brightmart":
            raise ValueError("ln_type preln is supported only with embedding_layout brightmart")
        if not self.tie_word_embeddings:
            raise ValueError("tie_word_embeddings false is not supported (ALBERT ties the decoder)")
        if self.id2label is not None and len(self.id2label) != self.num_labels:
            raise ValueError(
                f"id2label has {len(self.id2label)} entries but num_labels is {self.num_labels}"
            )
        if self.id2label is not None and sorted(self.id2label) != list(range(self.num_labels)):
            raise ValueError(f"id2label keys must be 0..{self.num_labels - 1}")
        if self.label2id is not None and sorted(self.label2id.values()) != list(
            range(self.num_labels)
        ):
            raise ValueError(f"label2id values must be 0..{self.num_labels - 1}")
        return self

    # -- derived sizes --------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def labels(self) -> list[str]:
        """Label names in class-index order (``LABEL_i`` when none were given)."""
        if self.id2label is not None:
            return [self.id2label[i] for i in range(self.num_labels)]
        return [f"LABEL_{i}" for i in range(self.num_labels)]

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, vocab_size: int = 21128, **overrides: Any) -> AlbertConfig:
        """An albert_zh size (tiny, small, base, large, xlarge, xxlarge) with optional overrides."""
        if name not in PRESETS:
            raise ConfigError(f"preset: unknown size {name!r} (use one of {', '.join(PRESETS)})")
        hidden, layers, heads, inter = PRESETS[name]
        fields = dict(
            vocab_size=vocab_size,
            embedding_size=128,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=512,
            hidden_act="gelu_new",
        )
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise unknown_keys_error(unknown, set(cls.model_fields), "AlbertConfig.preset")
        fields.update(overrides)
        return cls(**fields)

    def replace(self, **overrides: Any) -> AlbertConfig:
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise unknown_keys_error(unknown, set(type(self).model_fields), "AlbertConfig")
        # Labels travel together: new names imply their count, a new count drops stale names.
        if overrides.get("id2label") is not None and "num_labels" not in overrides:
            overrides["num_labels"] = len(overrides["id2label"])
        if overrides.get("num_labels", self.num_labels) != self.num_labels:
            overrides.setdefault("id2label", None)
        if "id2label" in overrides:
            overrides.setdefault("label2id", None)
        return type(self)(**{**self.model_dump(), **overrides})

    # -- HF config.json -------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], source: str = "config.json") -> AlbertConfig:
        """Read a HuggingFace ``config.json`` dict; HF keys that do not shape ALBERT are ignored."""
        model_type = data.get("model_type", "albert")
        if model_type != "albert":
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'albert'")
        known = set(cls.model_fields) | _HF_BOOKKEEPING | set(_NO_OP_VALUES)
        unknown = [k for k in data if k not in known]
        if unknown:
            raise unknown_keys_error(unknown, known, source)
        for key, value in _NO_OP_VALUES.items():
            if key in data and data[key] != value and data[key] is not None:
                raise ConfigError(
                    f"{source}: {key} {data[key]!r} is not supported (only {value!r})"
                )
        fields = {k: v for k, v in data.items() if k in cls.model_fields}
        if fields.get("id2label") is not None:
            try:
                fields["id2label"] = {int(k): str(v) for k, v in fields["id2label"].items()}
            except (AttributeError, ValueError) as exc:
                raise ConfigError(f"{source}: id2label: keys must be integers") from exc
            fields["num_labels"] = len(fields["id2label"])
        elif "num_labels" in data:
            fields["num_labels"] = data["num_labels"]
        if (
            fields.get("label2id") is not None
            and fields.get("id2label") is not None
            and isinstance(fields["label2id"], dict)
            and sorted(fields["label2id"].values()) != sorted(fields["id2label"])
        ):
            fields["label2id"] = {v: k for k, v in fields["id2label"].items()}
        # HF's generic defaults (LABEL_0/LABEL_1) say nothing; keep them implicit.
        if fields.get("id2label") == {i: f"LABEL_{i}" for i in range(fields.get("num_labels", 2))}:
            fields["id2label"] = None
            fields["label2id"] = None
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise _field_error(exc, source) from exc
        except ConfigError as exc:
            raise ConfigError(f"{source}: {str(exc).removeprefix('AlbertConfig: ')}") from exc

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> AlbertConfig:
        """Read a ``config.json`` file (or a model directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_hf_dict(read_json_object(path), source=str(path))

    def to_hf_dict(self, architectures: list[str] | None = None) -> dict[str, Any]:
        """The ``config.json`` dict that ``transformers.AlbertConfig`` reads back unchanged."""
        out: dict[str, Any] = {}
        if architectures:
            out["architectures"] = list(architectures)
        out["model_type"] = "albert"
        data = self.model_dump()
        for key in ("num_labels", "id2label", "label2id", "problem_type"):
            data.pop(key)
        for key, default in (("embedding_layout", "google"), ("ln_type", "postln")):
            if data[key] == default:
                data.pop(key)
        out.update(data)
        # HF derives num_labels from id2label; str keys as HF writes them.
        labels = self.labels()
        out["id2label"] = {str(i): name for i, name in enumerate(labels)}
        out["label2id"] = (
            dict(self.label2id) if self.label2id else {n: i for i, n in enumerate(labels)}
        )
        if self.problem_type is not None:
            out["problem_type"] = self.problem_type
        return dict(sorted(out.items()))

    def to_json(
        self, path: str | os.PathLike[str] | None = None, architectures: list[str] | None = None
    ) -> str:
        """The HF ``config.json`` text; also written (atomically) to ``path`` when given."""
        text = json_text(self.to_hf_dict(architectures))
        if path is not None:
            atomic_write_text(path, text)
        return text

    # -- parameter count (no allocation) --------------------------------------------------
    def num_parameters(self, head: Literal["none", "pretraining", "classifier"] = "none") -> int:
        """Exact parameter count of AlbertModel (+ a head), computed from the sizes alone."""
        V, E, H, F = self.vocab_size, self.embedding_size, self.hidden_size, self.intermediate_size
        emb = (V + self.max_position_embeddings + self.type_vocab_size) * E + 2 * E
        mapping = E * H + H
        if self.embedding_layout == "brightmart":  # E -> H projection first, H-wide tables
            emb = V * E + E * H + (self.max_position_embeddings + self.type_vocab_size) * H + 2 * H
            mapping = 0
        attention = 4 * (H * H + H) + 2 * H
        ffn = (H * F + F) + (F * H + H) + 2 * H
        layers = self.num_hidden_groups * self.inner_group_num * (attention + ffn)
        pooler = H * H + H
        total = emb + mapping + layers + pooler
        if head == "pretraining" and self.embedding_layout == "brightmart":
            total += (H * H + H) + 2 * H + V + (2 * H + 2)  # H -> H dense, LayerNorm, bias, SOP
        elif head == "pretraining":
            total += (H * E + E) + 2 * E + V + (2 * H + 2)  # dense, LayerNorm, bias, SOP
        elif head == "classifier":
            total += H * self.num_labels + self.num_labels
        return total
