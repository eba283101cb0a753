"""Masked-LM masking shared by make-shards (static masks) and pretrain (dynamic masks).

Whole-word n-gram masking as in google-research/albert, decided over *words* (jieba words
aligned to tokens by make-shards, recorded as ``word_starts``):

1. The maskable tokens are those that are not special ([CLS], [SEP], [PAD], ...). They are
   grouped into words: a token starts a word when ``word_starts`` says so, or when it follows a
   special token. With ``whole_word=False`` every token is its own word.
2. The budget is ``min(max_predictions, max(1, round(masked_lm_prob * n_maskable)))`` tokens.
3. The words of each segment are cut into consecutive spans whose lengths n are drawn with
   p(n) ∝ 1/n, n = 1..ngram (spans never cross a [SEP]). Spans are then taken in random order
   while they fit the budget; the first span that does not fit is shortened to its leading
   words that still fit (google's "try shorter n-grams"), which is tried for a few spans more.
   Because spans are disjoint by construction there is no overlap test, so the whole batch is
   masked with a handful of vectorised NumPy operations.
4. Each chosen word gets one treatment for all its tokens: [MASK] with ``mask_prob`` (0.8), a
   random non-special token with ``random_prob`` (0.1), unchanged otherwise.
5. Labels are the plain original token ids (albert_zh stored the ``##`` variant of a
   continuation character as the label; we do not).

:func:`mask_tokens` masks one sequence; :func:`mask_batch` masks a padded batch at once and is
what the pretraining data loader calls per batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

IGNORE_INDEX = -100
"""Label value of the padding slots in :class:`MaskedBatch` (torch's default ignore_index)."""

# Spans after the first one that overflows the budget are tried, shortened, this many times.
_FILL_ROUNDS = 4


class MaskingOptions(BaseModel):
    """How many tokens to mask and how."""

    model_config = ConfigDict(extra="forbid")

    masked_lm_prob: float = Field(
        0.15, gt=0.0, le=1.0, description="Fraction of the (non-special) tokens to predict."
    )
    max_predictions: int = Field(
        20, ge=1, description="At most this many predicted tokens per sequence."
    )
    ngram: int = Field(
        3, ge=1, description="Longest n-gram of words masked together; p(n) is proportional to 1/n."
    )
    whole_word: bool = Field(
        True, description="Mask whole words (all their tokens) rather than single tokens."
    )
    mask_prob: float = Field(
        0.8, ge=0.0, le=1.0, description="Chance that a chosen word becomes [MASK]."
    )
    random_prob: float = Field(
        0.1, ge=0.0, le=1.0, description="Chance that a chosen word becomes random tokens."
    )

    @model_validator(mode="after")
    def _check_probs(self) -> MaskingOptions:
        if self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise ValueError("--mask-prob plus --random-prob must not exceed 1")
        return self

    def ngram_probs(self) -> np.ndarray:
        """p(n) for n = 1..ngram, proportional to 1/n."""
        p = 1.0 / np.arange(1, self.ngram + 1)
        return p / p.sum()


@dataclass
class MaskedBatch:
    """A masked batch: ``positions``/``labels``/``weights`` are padded to ``max_predictions``.

    Padding slots have position 0, label :data:`IGNORE_INDEX` and weight 0.
    """

    input_ids: np.ndarray  # [B, L] int32, with [MASK]/random replacements
    positions: np.ndarray  # [B, P] int32, sorted per row
    labels: np.ndarray  # [B, P] int32, the original ids
    weights: np.ndarray  # [B, P] float32, 1 for real predictions
    num_predictions: np.ndarray  # [B] int32


@lru_cache(maxsize=16)
def _replacement_ids(vocab_size: int, specials: tuple[int, ...]) -> np.ndarray:
    """The ids a "random" replacement may take: every id except the special ones."""
    allowed = np.setdiff1d(np.arange(vocab_size, dtype=np.int32), np.asarray(specials, np.int32))
    if allowed.size == 0:
        raise ValueError("vocab has no non-special tokens to use as random replacements")
    return allowed


def _special_mask(ids: np.ndarray, special_ids: Iterable[int]) -> np.ndarray:
    specials = np.fromiter(special_ids, dtype=np.int64)
    if specials.size == 0:
        return np.zeros(ids.shape, dtype=bool)
    return np.isin(ids, specials)


def _select_words(
    word_tokens: np.ndarray,
    seg_first: np.ndarray,
    n_words: np.ndarray,
    budget: np.ndarray,
    rng: np.random.Generator,
    opts: MaskingOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose whole words to mask for each row.

    ``word_tokens[b, w]``: tokens in word w of row b (0 past ``n_words[b]``); ``seg_first``
    marks the first word of each segment. Returns ``(chosen [B, W] bool, span_id [B, W])``;
    span ids let tests check the n-gram length distribution.
    """
    B, W = word_tokens.shape
    rows = np.arange(B)
    valid = np.arange(W)[None, :] < n_words[:, None]  # [B, W]

    # Cut words into consecutive spans with lengths ~ p(n); a segment start always starts one.
    lengths = rng.choice(np.arange(1, opts.ngram + 1), size=(B, W), p=opts.ngram_probs())
    starts_at = np.cumsum(lengths, axis=1) - lengths  # [B, W] span start word indexes
    span_start = np.zeros((B, W), dtype=bool)
    inside = starts_at < W
    span_start[np.broadcast_to(rows[:, None], (B, W))[inside], starts_at[inside]] = True
    span_start |= seg_first
    span_start &= valid
    span_id = np.cumsum(span_start, axis=1) - 1  # [B, W]
    n_spans = span_start.sum(axis=1)
    S = int(n_spans.max()) if B else 0
    if S == 0:
        return np.zeros((B, W), dtype=bool), span_id

    # Tokens per span, via one bincount over (row, span) keys.
    flat = (rows[:, None] * S + np.clip(span_id, 0, S - 1))[valid]
    span_tok = np.bincount(flat, weights=word_tokens[valid], minlength=B * S).reshape(B, S)
    span_valid = np.arange(S)[None, :] < n_spans[:, None]

    # Take spans in random order while the running token count fits the budget.
    keys = rng.random((B, S))
    keys[~span_valid] = np.inf
    order = np.argsort(keys, axis=1, kind="stable")  # [B, S]
    tok_sorted = np.take_along_axis(span_tok, order, axis=1)
    fits = (np.cumsum(tok_sorted, axis=1) <= budget[:, None]) & np.take_along_axis(
        span_valid, order, axis=1
    )
    n_taken = fits.sum(axis=1)  # spans have >= 1 token, so the fitting ones are a prefix
    taken = np.zeros((B, S), dtype=bool)
    taken[np.nonzero(fits)[0], order[fits]] = True
    chosen = np.take_along_axis(taken, np.clip(span_id, 0, S - 1), axis=1) & valid
    left = budget - (tok_sorted * fits).sum(axis=1)

    # Shorten the next spans in the random order to their leading words that still fit:
    # in_span_cum[b, w] = tokens from the start of w's span through word w.
    word_cum = np.cumsum(word_tokens, axis=1)
    first_word = np.maximum.accumulate(np.where(span_start, np.arange(W)[None, :], 0), axis=1)
    before_span = np.take_along_axis(word_cum - word_tokens, first_word, axis=1)
    in_span_cum = word_cum - before_span
    for k in range(_FILL_ROUNDS):
        idx = n_taken + k
        active = (idx < n_spans) & (left > 0)
        if not active.any():
            break
        cand = order[rows, np.minimum(idx, S - 1)]  # [B] span tried in this round
        add = (span_id == cand[:, None]) & (in_span_cum <= left[:, None]) & valid
        add &= active[:, None]
        chosen |= add
        left = left - (word_tokens * add).sum(axis=1)
    return chosen, span_id


def mask_batch(
    input_ids: np.ndarray,
    word_starts: np.ndarray,
    rng: np.random.Generator,
    opts: MaskingOptions,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
) -> MaskedBatch:
    """Mask a padded batch ``[B, L]`` (pad with a special id, ``word_starts`` False there)."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be 2-D [batch, length], got shape {ids.shape}")
    ws = np.asarray(word_starts, dtype=bool)
    if ws.shape != ids.shape:
        raise ValueError(f"word_starts shape {ws.shape} differs from input_ids {ids.shape}")
    B, L = ids.shape
    P = opts.max_predictions
    specials = tuple(sorted({int(s) for s in special_ids}))
    cand = ~_special_mask(ids, specials)  # [B, L] maskable tokens

    # Group maskable tokens into words; a token after a special token always starts one.
    prev_cand = np.zeros_like(cand)
    prev_cand[:, 1:] = cand[:, :-1]
    starts = cand & ((ws if opts.whole_word else True) | ~prev_cand)
    word_of = np.cumsum(starts, axis=1) - 1  # [B, L] word index of each token
    n_words = starts.sum(axis=1)
    W = int(n_words.max()) if B else 0

    n_cand = cand.sum(axis=1)
    budget = np.minimum(P, np.maximum(1, np.rint(n_cand * opts.masked_lm_prob))).astype(np.int64)
    budget[n_cand == 0] = 0

    new_ids = ids.astype(np.int32, copy=True)
    positions = np.zeros((B, P), dtype=np.int32)
    labels = np.full((B, P), IGNORE_INDEX, dtype=np.int32)
    weights = np.zeros((B, P), dtype=np.float32)
    if W == 0:
        return MaskedBatch(new_ids, positions, labels, weights, np.zeros(B, dtype=np.int32))

    rows = np.arange(B)
    word_idx = np.clip(word_of, 0, W - 1)
    flat = (rows[:, None] * W + word_idx)[cand]
    word_tokens = np.bincount(flat, minlength=B * W).reshape(B, W)
    seg_first = np.zeros((B, W), dtype=bool)
    first = starts & ~prev_cand
    seg_first[np.nonzero(first)[0], word_of[first]] = True

    chosen, _ = _select_words(word_tokens, seg_first, n_words, budget, rng, opts)

    # One 80/10/10 draw per word, shared by all its tokens.
    u = rng.random((B, W))
    masked = cand & np.take_along_axis(chosen, word_idx, axis=1)
    tok_u = np.take_along_axis(u, word_idx, axis=1)
    to_mask = masked & (tok_u < opts.mask_prob)
    to_random = masked & (tok_u >= opts.mask_prob) & (tok_u < opts.mask_prob + opts.random_prob)
    new_ids[to_mask] = mask_id
    n_random = int(to_random.sum())
    if n_random:
        pool = _replacement_ids(int(vocab_size), specials)
        new_ids[to_random] = pool[rng.integers(0, pool.size, size=n_random)]

    r, c = np.nonzero(masked)  # row-major, so positions come out sorted within a row
    slot = (np.cumsum(masked, axis=1) - 1)[r, c]
    positions[r, slot] = c
    labels[r, slot] = ids[r, c]
    weights[r, slot] = 1.0
    return MaskedBatch(new_ids, positions, labels, weights, masked.sum(axis=1).astype(np.int32))


def mask_tokens(
    input_ids: np.ndarray,
    word_starts: np.ndarray,
    rng: np.random.Generator,
    opts: MaskingOptions,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask one sequence; returns ``(new_ids, positions, labels)`` (positions sorted)."""
    ids = np.asarray(input_ids)
    if ids.ndim != 1:
        raise ValueError(f"input_ids must be 1-D, got shape {ids.shape}")
    out = mask_batch(
        ids[None, :],
        np.asarray(word_starts, dtype=bool)[None, :],
        rng,
        opts,
        vocab_size=vocab_size,
        mask_id=mask_id,
        special_ids=special_ids,
    )
    n = int(out.num_predictions[0])
    return out.input_ids[0], out.positions[0, :n].copy(), out.labels[0, :n].copy()
