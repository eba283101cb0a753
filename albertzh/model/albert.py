"""ALBERT in PyTorch, in reading order: embeddings -> attention -> layer -> encoder -> heads.

Module and parameter names are HuggingFace's, so ``state_dict()`` maps 1:1 onto
``transformers.AlbertForPreTraining`` / ``AlbertForSequenceClassification`` /
``AlbertForTokenClassification`` / ``AlbertForMultipleChoice`` keys. Shapes: B batch,
T tokens, E embedding width, H hidden width, nh heads, hd head width, P masked positions,
V vocab, I intermediate width.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from albertzh.model.config import AlbertConfig


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation for a HF ``hidden_act`` name, as one fused kernel."""
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        # Same tanh approximation HF writes out op by op; one kernel is much faster on CPU.
        return functools.partial(F.gelu, approximate="tanh")
    return {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu}[name]


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    return F.dropout(x, p, training) if p > 0.0 and training else x


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


@dataclass
class AlbertModelOutput:
    last_hidden_state: torch.Tensor  # [B, T, H]
    pooler_output: torch.Tensor | None  # [B, H]; None without a pooler (token-level heads)


@dataclass
class AlbertPretrainingOutput:
    mlm_logits: torch.Tensor  # [B, P, V] at masked_positions, else [B, T, V]
    sop_logits: torch.Tensor  # [B, 2]
    # Replaced-token detection (AlbertForReplacedTokenDetection): mlm_logits are the generator's.
    rtd_logits: torch.Tensor | None = None  # [B, T] the discriminator's "replaced" logits
    rtd_labels: torch.Tensor | None = None  # [B, T] 1.0 where the generator changed the token
    # With AlbertForPreTraining.cls_bow set: the MLM head applied to the pooled [CLS].
    bow_logits: torch.Tensor | None = None  # [B, V]


@dataclass
class AlbertClassifierOutput:
    logits: torch.Tensor  # [B, num_labels]


@dataclass
class AlbertTokenClassifierOutput:
    logits: torch.Tensor  # [B, T, num_labels]


@dataclass
class AlbertMultipleChoiceOutput:
    logits: torch.Tensor  # [B, C] one score per option


@dataclass
class AlbertQuestionAnsweringOutput:
    start_logits: torch.Tensor  # [B, T]
    end_logits: torch.Tensor  # [B, T]


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class AlbertEmbeddings(nn.Module):
    """Factorized embeddings: word + token type + position tables of width E, then LayerNorm."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        E = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.word_embeddings_2 = None  # brightmart layout: E -> H before the H-wide tables
        if config.embedding_layout == "brightmart":
            self.word_embeddings_2 = nn.Linear(E, config.hidden_size, bias=False)
            E = config.hidden_size
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout_p = config.hidden_dropout_prob

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        max_len = self.position_embeddings.num_embeddings
        if input_ids.shape[1] > max_len:
            raise ValueError(f"input_ids: {T} tokens, more than max_position_embeddings {max_len}")
        x = self.word_embeddings(input_ids)  # [B, T, E]
        if self.word_embeddings_2 is not None:
            x = self.word_embeddings_2(x)  # [B, T, H] (brightmart)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # every token is segment 0
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings.weight[:T]  # [T, E] broadcast over B
        return _dropout(self.LayerNorm(x), self.dropout_p, self.training)


class AlbertAttention(nn.Module):
    """Multi-head self-attention (SDPA) with a residual and post-LayerNorm."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        H = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.dense = nn.Linear(H, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.attn_dropout_p = config.attention_probs_dropout_prob
        self.dropout_p = config.hidden_dropout_prob
        self.preln = config.ln_type == "preln"  # LayerNorm the input, not the residual sum

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Query, key and value fused into one [3H, H] projection (parameters stay separate);
        None when they are not float Linears (dynamically quantized int8 ones have no tensor
        ``.weight``): then each is applied on its own."""
        if not isinstance(self.query.weight, torch.Tensor):
            return None
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        return weight, bias

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        qkv: tuple[torch.Tensor, torch.Tensor] | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, H = x.shape
        nh, hd = self.num_heads, H // self.num_heads
        fused = qkv if qkv is not None else self.qkv_weights()
        residual = x
        if self.preln:
            x = self.LayerNorm(x)
        if fused is None:  # int8 Linears: three projections
            k, v = (m(x).view(B, T, nh, hd).transpose(1, 2) for m in (self.key, self.value))
            if rows is not None:
                x = torch.gather(x, 1, rows[:, :, None].expand(-1, -1, H))  # [B, K, H]
                if self.preln:
                    residual = torch.gather(residual, 1, rows[:, :, None].expand(-1, -1, H))
            q = self.query(x).view(B, -1, nh, hd).transpose(1, 2)
        elif rows is None:
            weight, bias = fused
            q, k, v = (
                F.linear(x, weight, bias)  # [B, T, 3H]: one matmul instead of three
                .view(B, T, 3, nh, hd)
                .permute(2, 0, 3, 1, 4)  # [3, B, nh, T, hd]
                .unbind(0)
            )
        else:
            # Only `rows` are used downstream: keys/values from every token, queries from rows.
            weight, bias = fused
            k, v = (
                F.linear(x, weight[H:], bias[H:])  # [B, T, 2H]
                .view(B, T, 2, nh, hd)
                .permute(2, 0, 3, 1, 4)  # [2, B, nh, T, hd]
                .unbind(0)
            )
            x = torch.gather(x, 1, rows[:, :, None].expand(-1, -1, H))  # [B, K, H]
            if self.preln:
                residual = torch.gather(residual, 1, rows[:, :, None].expand(-1, -1, H))
            q = F.linear(x, weight[:H], bias[:H]).view(B, -1, nh, hd).transpose(1, 2)
        p = self.attn_dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # [B, nh, K, hd]
        y = y.transpose(1, 2).reshape(B, -1, H)  # [B, K, H] (K = T without rows)
        y = _dropout(self.dense(y), self.dropout_p, self.training)
        if self.preln:
            return residual + y
        return self.LayerNorm(x + y)


class AlbertLayer(nn.Module):
    """Attention, then a feed-forward block with its own residual and post-LayerNorm."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.full_layer_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = activation(config.hidden_act)
        self.dropout_p = config.hidden_dropout_prob

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        qkv: tuple[torch.Tensor, torch.Tensor] | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.attention(x, mask, qkv, rows)  # [B, T, H], or [B, K, H] at `rows`
        if self.attention.preln:  # brightmart's pre-LN: normalise the FFN input instead
            h = self.ffn_output(self.act(self.ffn(self.full_layer_layer_norm(x))))
            return x + _dropout(h, self.dropout_p, self.training)
        h = self.ffn_output(self.act(self.ffn(x)))  # [B, T, I] -> [B, T, H]
        # Google's ALBERT drops out the FFN output before the residual (HF skips it; p=0 anyway).
        return self.full_layer_layer_norm(x + _dropout(h, self.dropout_p, self.training))


class AlbertLayerGroup(nn.Module):
    """One group of ``inner_group_num`` distinct layers, applied in turn."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        self.albert_layers = nn.ModuleList(
            AlbertLayer(config) for _ in range(config.inner_group_num)
        )


class AlbertTransformer(nn.Module):
    """E -> H mapping, then L layer applications cycling through the shared groups."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        L, G = config.num_hidden_layers, config.num_hidden_groups
        self.embedding_hidden_mapping_in = None  # brightmart: the embeddings are already H-wide
        if config.embedding_layout == "google":
            self.embedding_hidden_mapping_in = nn.Linear(config.embedding_size, config.hidden_size)
        self.albert_layer_groups = nn.ModuleList(AlbertLayerGroup(config) for _ in range(G))
        # Layer i uses group int(i / (L / G)) -- HF's formula, kept float-exact.
        self.group_of_layer = [int(i / (L / G)) for i in range(L)]

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden states [B, T, H]; only at ``rows`` ([B, K] token indices) when given."""
        if self.embedding_hidden_mapping_in is not None:
            x = self.embedding_hidden_mapping_in(x)  # [B, T, E] -> [B, T, H]
        # Layers are shared, so fuse each layer's QKV weights once per forward, not per use.
        fused = [
            [layer.attention.qkv_weights() for layer in group.albert_layers]
            for group in self.albert_layer_groups
        ]
        steps = [
            (layer, qkv)
            for g in self.group_of_layer
            for layer, qkv in zip(self.albert_layer_groups[g].albert_layers, fused[g], strict=True)
        ]
        for layer, qkv in steps[:-1]:
            x = layer(x, mask, qkv)
        # Nothing reads the other rows after the last layer: compute it only where needed.
        layer, qkv = steps[-1]
        return layer(x, mask, qkv, rows)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class AlbertPreTrainedModel(nn.Module):
    """Shared plumbing: HF-style weight init and model-directory load/save."""

    hf_architecture: ClassVar[str] = ""
    heads: ClassVar[tuple[str, ...]] = ()  # top-level modules a checkpoint may lack (new heads)

    config: AlbertConfig

    @torch.no_grad()
    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, AlbertMLMHead):
            module.bias.zero_()

    def init_weights(self, module: nn.Module | None = None) -> None:
        """HF's init: Linear/Embedding ~ N(0, initializer_range), zero biases, LayerNorm 1/0."""
        (module or self).apply(self._init_module)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **config_overrides: Any) -> Any:
        """Load a model directory (albertzh or HF: safetensors or pytorch_model.bin)."""
        from albertzh.model.io import load_model

        return load_model(cls, path, **config_overrides)

    def save_pretrained(
        self,
        path: str | os.PathLike[str],
        tokenizer: Any = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Write config.json, model.safetensors, albertzh.json (+ tokenizer files), atomically."""
        from albertzh.model.io import save_model

        save_model(self, path, tokenizer=tokenizer, meta=meta)


class AlbertModel(AlbertPreTrainedModel):
    """The encoder: embeddings, shared transformer layers, and the tanh pooler over [CLS]
    (left out with ``add_pooling_layer=False``, as HF's token-level heads do)."""

    hf_architecture = "AlbertModel"

    def __init__(
        self, config: AlbertConfig, *, init: bool = True, add_pooling_layer: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        self.embeddings = AlbertEmbeddings(config)
        self.encoder = AlbertTransformer(config)
        self.pooler = (
            nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        )
        if init:
            self.init_weights()

    def _pool(self, cls: torch.Tensor) -> torch.Tensor | None:
        return None if self.pooler is None else torch.tanh(self.pooler(cls))  # [B, H]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_positions: torch.Tensor | None = None,
    ) -> AlbertModelOutput:
        """``output_positions`` ([B, P] token indices): return hidden states only there
        ([B, P, H]), skipping the last layer's work elsewhere. The pooler still sees [CLS]."""
        x = self.embeddings(input_ids, token_type_ids)  # [B, T, E]
        # Padding mask for SDPA: True = may attend; [B, 1, 1, T] broadcasts over heads and queries.
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        if output_positions is None:
            h = self.encoder(x, mask)  # [B, T, H]
            return AlbertModelOutput(h, self._pool(h[:, 0]))  # pooled [CLS]: [B, H]
        cls = torch.zeros_like(output_positions[:, :1])
        rows = torch.cat([cls, output_positions], dim=1).long()  # [B, 1 + P]
        h = self.encoder(x, mask, rows)  # [B, 1 + P, H]
        return AlbertModelOutput(h[:, 1:], self._pool(h[:, 0]))


class AlbertMLMHead(nn.Module):
    """H -> E -> V; the E -> V decoder is the word-embedding table (tied), plus its own bias."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        # brightmart: H -> H here, then back to E through the (tied) embedding projection.
        width = (
            config.hidden_size if config.embedding_layout == "brightmart" else config.embedding_size
        )
        self.dense = nn.Linear(config.hidden_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.act = activation(config.hidden_act)

    def forward(
        self,
        h: torch.Tensor,
        decoder_weight: torch.Tensor,
        projection: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.LayerNorm(self.act(self.dense(h)))  # [B, P, H] -> [B, P, E]
        if projection is not None:  # brightmart: [B, P, H] @ [H, E] -> [B, P, E]
            h = h @ projection
        return F.linear(h, decoder_weight, self.bias)  # [B, P, V]


class AlbertSOPHead(nn.Module):
    """Sentence-order prediction from the pooled [CLS]: 0 = in order, 1 = swapped."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        self.classifier = nn.Linear(config.hidden_size, 2)
        self.dropout_p = config.classifier_dropout_prob

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(_dropout(pooled, self.dropout_p, self.training))  # [B, 2]


class AlbertForPreTraining(AlbertPreTrainedModel):
    """ALBERT with the MLM head (only at masked positions when given) and the SOP head."""

    hf_architecture = "AlbertForPreTraining"
    heads = ("predictions", "sop_classifier")

    def __init__(self, config: AlbertConfig, *, init: bool = True) -> None:
        super().__init__()
        self.config = config
        # Also predict, from the pooled [CLS] alone, the masked tokens of the sequence (the
        # bag-of-words term of `pretrain --cls-bow-weight`; no new weights: the MLM head).
        self.cls_bow = False
        self.albert = AlbertModel(config, init=False)
        self.predictions = AlbertMLMHead(config)
        self.sop_classifier = AlbertSOPHead(config)
        if init:
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
    ) -> AlbertPretrainingOutput:
        # With masked positions, the last layer and the H -> E -> V head run on P, not T, tokens.
        out = self.albert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_positions=masked_positions,
        )
        h = out.last_hidden_state  # [B, P, H] at masked_positions, else [B, T, H]
        emb = self.albert.embeddings
        projection = None if emb.word_embeddings_2 is None else emb.word_embeddings_2.weight
        mlm_logits = self.predictions(h, emb.word_embeddings.weight, projection)
        sop_logits = self.sop_classifier(out.pooler_output)
        bow_logits = None
        if self.cls_bow:
            pooled = out.pooler_output.unsqueeze(1)  # [B, 1, H]
            bow_logits = self.predictions(pooled, emb.word_embeddings.weight, projection)[:, 0]
        return AlbertPretrainingOutput(
            mlm_logits=mlm_logits, sop_logits=sop_logits, bow_logits=bow_logits
        )


class AlbertForSequenceClassification(AlbertPreTrainedModel):
    """ALBERT with a linear classifier (or regressor, num_labels=1) on the pooled [CLS]."""

    hf_architecture = "AlbertForSequenceClassification"
    heads = ("classifier",)

    def __init__(self, config: AlbertConfig, *, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.albert = AlbertModel(config, init=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.dropout_p = config.classifier_dropout_prob
        if init:
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> AlbertClassifierOutput:
        out = self.albert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        pooled = _dropout(out.pooler_output, self.dropout_p, self.training)  # [B, H]
        return AlbertClassifierOutput(logits=self.classifier(pooled))  # [B, num_labels]

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss HF uses for ``problem_type`` (inferred from num_labels / label dtype if unset)."""
        problem = self.config.problem_type
        if problem is None:
            if self.config.num_labels == 1:
                problem = "regression"
            elif not labels.is_floating_point():
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            if self.config.num_labels == 1:
                return F.mse_loss(logits.view(-1), labels.to(logits.dtype).view(-1))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            return F.cross_entropy(logits, labels.long().view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class AlbertForTokenClassification(AlbertPreTrainedModel):
    """ALBERT with a linear classifier on every token's last hidden state (NER tagging).

    No pooler, as transformers' ``AlbertForTokenClassification`` (its keys are ``albert.*``
    without ``albert.pooler.*``, and ``classifier.*``); a pretraining dir's pooler is ignored.
    """

    hf_architecture = "AlbertForTokenClassification"
    heads = ("classifier",)

    def __init__(self, config: AlbertConfig, *, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.albert = AlbertModel(config, init=False, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.dropout_p = config.classifier_dropout_prob
        if init:
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> AlbertTokenClassifierOutput:
        out = self.albert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        h = _dropout(out.last_hidden_state, self.dropout_p, self.training)  # [B, T, H]
        return AlbertTokenClassifierOutput(logits=self.classifier(h))  # [B, T, num_labels]

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the labelled tokens (label -100: [CLS], [SEP], padding, and every
        sub-token but a character's first), as HF's."""
        return F.cross_entropy(logits.flatten(0, 1), labels.long().flatten(), ignore_index=-100)


class AlbertForMultipleChoice(AlbertPreTrainedModel):
    """ALBERT scoring each option of a question: one [CLS] context [SEP] question+option [SEP]
    sequence per option, a linear layer on its pooled [CLS] gives its score (HF's layout:
    ``albert.*`` with the pooler, ``classifier.*`` with one output).

    Padding options (questions with fewer options than the batch) have an all-zero attention
    mask; :meth:`compute_loss` leaves them out of the softmax.
    """

    hf_architecture = "AlbertForMultipleChoice"
    heads = ("classifier",)
    input_axes = ("batch", "choice", "sequence")  # ONNX export: inputs are [B, C, T]

    def __init__(self, config: AlbertConfig, *, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.albert = AlbertModel(config, init=False)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.dropout_p = config.classifier_dropout_prob
        if init:
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> AlbertMultipleChoiceOutput:
        b, c, t = input_ids.shape  # [B, C, T]: C options per question

        def flat(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.reshape(b * c, t)  # [B, C, T] -> [B*C, T]

        out = self.albert(
            flat(input_ids),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
        )
        pooled = _dropout(out.pooler_output, self.dropout_p, self.training)  # [B*C, H]
        return AlbertMultipleChoiceOutput(logits=self.classifier(pooled).view(b, c))  # [B, C]

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, choice_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy over the real options (``choice_mask`` [B, C], True = a real option)."""
        if choice_mask is not None:
            logits = logits.masked_fill(~choice_mask.bool(), torch.finfo(logits.dtype).min)
        return F.cross_entropy(logits, labels.long().view(-1))


class AlbertForQuestionAnswering(AlbertPreTrainedModel):
    """ALBERT with a linear layer giving every token a start and an end logit (span extraction).

    No pooler and no dropout before ``qa_outputs``, as transformers' ``AlbertForQuestionAnswering``
    (keys ``albert.*`` without ``albert.pooler.*``, and ``qa_outputs.*`` with two outputs).
    """

    hf_architecture = "AlbertForQuestionAnswering"
    heads = ("qa_outputs",)
    onnx_outputs = ("start_logits", "end_logits")

    def __init__(self, config: AlbertConfig, *, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.albert = AlbertModel(config, init=False, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        if init:
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> AlbertQuestionAnsweringOutput:
        out = self.albert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = self.qa_outputs(out.last_hidden_state)  # [B, T, 2]
        start, end = logits.unbind(-1)  # [B, T] each
        return AlbertQuestionAnsweringOutput(start.contiguous(), end.contiguous())

    def compute_loss(
        self, out: AlbertQuestionAnsweringOutput, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """The mean of the start and end cross-entropies (position 0, [CLS]: no answer here)."""
        start = F.cross_entropy(out.start_logits.float(), starts.long())
        end = F.cross_entropy(out.end_logits.float(), ends.long())
        return (start + end) / 2


# ---------------------------------------------------------------------------------------------
# Replaced-token detection (ELECTRA, Clark et al. 2020) with an ALBERT discriminator
# ---------------------------------------------------------------------------------------------


def generator_config(config: AlbertConfig, size: float) -> AlbertConfig:
    """The generator's config: ``size`` x the heads (at least one, same head width), so
    ``size`` x the hidden and intermediate widths; embeddings and depth as the discriminator's."""
    if config.embedding_layout != "google":
        raise ValueError("replaced-token detection needs embedding_layout google")
    heads = max(1, round(config.num_attention_heads * size))
    hidden = heads * config.head_dim
    inter = max(1, round(config.intermediate_size * hidden / config.hidden_size))
    return config.replace(hidden_size=hidden, num_attention_heads=heads, intermediate_size=inter)


class AlbertGenerator(nn.Module):
    """A narrow ALBERT encoder + MLM head over the discriminator's embeddings (shared, as in
    ELECTRA): it fills the masked positions with plausible tokens."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        self.encoder = AlbertTransformer(config)  # includes its own E -> H_g mapping
        self.predictions = AlbertMLMHead(config)  # H_g -> E -> V through the shared table


class AlbertRTDHead(nn.Module):
    """Per-token "was this token replaced?" logit: H -> H -> 1 (ELECTRA's discriminator head)."""

    def __init__(self, config: AlbertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)
        self.act = activation(config.hidden_act)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(h))).squeeze(-1)  # [B, T, H] -> [B, T]


class AlbertForReplacedTokenDetection(AlbertPreTrainedModel):
    """ELECTRA-style pretraining: a small generator (MLM at the masked positions) proposes
    replacements, sampled from its output; the ALBERT encoder (the model that is kept) learns to
    tell, at every token, whether it was replaced, and SOP/NSP from [CLS].

    Saved as a normal ALBERT directory: ``albert.*`` is the encoder transformers' ``AlbertModel``
    and every albertzh/HF head class loads; ``generator.*``, ``rtd_head.*`` and
    ``sop_classifier.*`` are extra heads they ignore (pretrain keeps them to resume).
    """

    hf_architecture = "AlbertModel"
    heads = ("rtd_head", "sop_classifier", "generator")

    def __init__(
        self, config: AlbertConfig, *, init: bool = True, generator_size: float = 0.25
    ) -> None:
        super().__init__()
        self.config = config
        self.generator_config = generator_config(config, generator_size)
        self.albert = AlbertModel(config, init=False)
        self.rtd_head = AlbertRTDHead(config)
        self.sop_classifier = AlbertSOPHead(config)
        self.generator = AlbertGenerator(self.generator_config)
        if init:
            self.init_weights()

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], generator_size: float = 0.25, **config_overrides: Any
    ) -> Any:
        """Load a directory written by this class, or start RTD from any ALBERT directory
        (its encoder; a generator and heads it lacks are initialised fresh)."""
        from albertzh.model.io import load_model

        return load_model(
            functools.partial(cls, generator_size=generator_size),  # type: ignore[arg-type]
            path,
            **config_overrides,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
        masked_labels: torch.Tensor | None = None,
        ignore_index: int = -100,
    ) -> AlbertPretrainingOutput:
        if masked_positions is None or masked_labels is None:
            raise ValueError("replaced-token detection needs masked_positions and masked_labels")
        emb = self.albert.embeddings
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        # Generator: MLM over the masked input, only at the masked positions.
        g = self.generator.encoder(emb(input_ids, token_type_ids), mask, masked_positions.long())
        mlm_logits = self.generator.predictions(g, emb.word_embeddings.weight)  # [B, P, V]
        with torch.no_grad():
            real = masked_labels != ignore_index  # [B, P]
            probs = torch.softmax(mlm_logits.detach().float(), dim=-1)
            sampled = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).view_as(real)
            # Padding slots write position 0 with its own value: a no-op.
            where = torch.where(real, masked_positions, 0).long()
            keep0 = input_ids[:, :1].expand_as(masked_positions)
            original = input_ids.scatter(1, where, torch.where(real, masked_labels, keep0))
            corrupted = original.scatter(1, where, torch.where(real, sampled, keep0))
            rtd_labels = (corrupted != original).float()  # a sampled original is "not replaced"
        out = self.albert(corrupted, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return AlbertPretrainingOutput(
            mlm_logits=mlm_logits,
            sop_logits=self.sop_classifier(out.pooler_output),
            rtd_logits=self.rtd_head(out.last_hidden_state),
            rtd_labels=rtd_labels,
        )
