"""Masking statistics: budget, whole words, n-gram lengths, 80/10/10, specials, labels."""

from __future__ import annotations

import numpy as np
import pytest

from albertzh.data.masking import (
    IGNORE_INDEX,
    MaskingOptions,
    _select_words,
    mask_batch,
    mask_tokens,
)

CLS, SEP, PAD, UNK, MASK = 2, 3, 0, 1, 4
SPECIALS = {PAD, UNK, CLS, SEP, MASK}
VOCAB = 5000


def _batch(rng: np.random.Generator, b: int = 800, length: int = 100, pad_to: int = 0):
    """Rows ``[CLS] A [SEP] B [SEP] [PAD]...`` with random words of 1-4 tokens."""
    total = max(length, pad_to)
    ids = np.full((b, total), PAD, dtype=np.int32)
    ws = np.zeros((b, total), dtype=bool)
    for r in range(b):
        n = length if not pad_to else int(rng.integers(10, length + 1))
        row = rng.integers(5, VOCAB, size=n).astype(np.int32)
        starts = np.zeros(n, dtype=bool)
        j = 0
        while j < n:
            starts[j] = True
            j += int(rng.integers(1, 5))
        sep = int(rng.integers(2, n - 2))
        row[0], row[sep], row[n - 1] = CLS, SEP, SEP
        starts[[0, sep, n - 1]] = True
        starts[sep + 1] = True
        ids[r, :n], ws[r, :n] = row, starts
    return ids, ws


def _words(ids_row: np.ndarray, ws_row: np.ndarray) -> list[list[int]]:
    words: list[list[int]] = []
    for j, (t, s) in enumerate(zip(ids_row, ws_row, strict=True)):
        if int(t) in SPECIALS:
            continue
        if s or not words or int(ids_row[j - 1]) in SPECIALS:
            words.append([j])
        else:
            words[-1].append(j)
    return words


def _run(ids, ws, seed=0, **kw):
    opts = MaskingOptions(**kw)
    return mask_batch(
        ids,
        ws,
        np.random.default_rng(seed),
        opts,
        vocab_size=VOCAB,
        mask_id=MASK,
        special_ids=SPECIALS,
    )


def test_fraction_budget_and_labels() -> None:
    rng = np.random.default_rng(1)
    ids, ws = _batch(rng, pad_to=128)
    out = _run(ids, ws, max_predictions=200)
    n_cand = (~np.isin(ids, list(SPECIALS))).sum(axis=1)
    frac = out.num_predictions.sum() / n_cand.sum()
    assert abs(frac - 0.15) < 0.01, frac
    budget = np.maximum(1, np.rint(n_cand * 0.15))
    assert (out.num_predictions <= budget).all()
    # Labels are the plain original ids; padding slots are ignored.
    for r in range(len(ids)):
        n = out.num_predictions[r]
        pos = out.positions[r, :n]
        assert (out.labels[r, :n] == ids[r, pos]).all()
        assert (np.diff(pos) > 0).all()
        assert (out.labels[r, n:] == IGNORE_INDEX).all() and (out.weights[r, n:] == 0).all()
        assert (out.weights[r, :n] == 1).all()


def test_max_predictions_caps() -> None:
    ids, ws = _batch(np.random.default_rng(2), b=300, length=128)
    out = _run(ids, ws, max_predictions=7)
    assert out.positions.shape == (300, 7)
    assert out.num_predictions.max() <= 7
    assert out.num_predictions.mean() > 6  # the budget is nearly always filled


def test_whole_word_and_per_word_treatment() -> None:
    ids, ws = _batch(np.random.default_rng(3), b=1500, length=80)
    out = _run(ids, ws, max_predictions=40)
    counts = {"mask": 0, "random": 0, "keep": 0}
    for r in range(len(ids)):
        chosen = set(out.positions[r, : out.num_predictions[r]].tolist())
        for word in _words(ids[r], ws[r]):
            hit = [j in chosen for j in word]
            assert all(hit) or not any(hit), f"row {r}: word {word} partly masked"
            if not hit[0]:
                assert (out.input_ids[r, word] == ids[r, word]).all()
                continue
            new, old = out.input_ids[r, word], ids[r, word]
            kinds = {
                "mask" if n == MASK else "keep" if n == o else "random"
                for n, o in zip(new, old, strict=True)
            }
            assert len(kinds) == 1, f"row {r}: word {word} got mixed treatment {kinds}"
            counts[kinds.pop()] += 1
    total = sum(counts.values())
    assert abs(counts["mask"] / total - 0.8) < 0.02
    assert abs(counts["random"] / total - 0.1) < 0.015
    assert abs(counts["keep"] / total - 0.1) < 0.015


def test_specials_never_masked_nor_used_as_random() -> None:
    rng = np.random.default_rng(4)
    ids, ws = _batch(rng, b=400, length=60)
    ids[:, 10:14] = UNK  # specials in the middle of text
    out = mask_batch(
        ids,
        ws,
        np.random.default_rng(0),
        MaskingOptions(mask_prob=0.0, random_prob=1.0, masked_lm_prob=0.5, max_predictions=60),
        vocab_size=VOCAB,
        mask_id=MASK,
        special_ids=SPECIALS,
    )
    masked = np.zeros(ids.shape, dtype=bool)
    for r in range(len(ids)):
        masked[r, out.positions[r, : out.num_predictions[r]]] = True
    assert not (masked & np.isin(ids, list(SPECIALS))).any()
    assert not np.isin(out.input_ids[masked], list(SPECIALS)).any()  # replacements avoid specials
    assert (out.input_ids[~masked] == ids[~masked]).all()


def test_ngram_lengths_follow_inverse_n() -> None:
    rng = np.random.default_rng(5)
    b, w = 3000, 120
    word_tokens = np.ones((b, w), dtype=np.int64)
    seg_first = np.zeros((b, w), dtype=bool)
    seg_first[:, 0] = True
    n_words = np.full(b, w)
    budget = np.full(b, 18)
    opts = MaskingOptions(ngram=3)
    chosen, span_id = _select_words(word_tokens, seg_first, n_words, budget, rng, opts)
    assert (chosen.sum(axis=1) == 18).all()
    lengths = []
    for r in range(b):
        size = np.bincount(span_id[r])
        got = np.bincount(span_id[r][chosen[r]], minlength=size.size)
        lengths += [
            int(n) for n, g in zip(size, got, strict=True) if g and g == n
        ]  # untruncated spans
    hist = np.bincount(lengths, minlength=4)[1:] / len(lengths)
    expected = np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3)
    assert np.abs(hist - expected).max() < 0.03, hist


def test_ngram_one_and_token_level_masking() -> None:
    ids, ws = _batch(np.random.default_rng(6), b=300, length=100)
    out = _run(ids, ws, whole_word=False, ngram=1, max_predictions=100)
    n_cand = (~np.isin(ids, list(SPECIALS))).sum(axis=1)
    assert (out.num_predictions == np.maximum(1, np.rint(n_cand * 0.15))).all()
    # Token-level masking does split words: some word is masked only in part.
    split = 0
    for r in range(len(ids)):
        chosen = set(out.positions[r, : out.num_predictions[r]].tolist())
        split += sum(0 < sum(j in chosen for j in wd) < len(wd) for wd in _words(ids[r], ws[r]))
    assert split > 0


def test_mask_tokens_single_sequence_deterministic() -> None:
    ids, ws = _batch(np.random.default_rng(7), b=1, length=50)
    opts = MaskingOptions()
    kw = {"vocab_size": VOCAB, "mask_id": MASK, "special_ids": SPECIALS}
    a = mask_tokens(ids[0], ws[0], np.random.default_rng(9), opts, **kw)
    b = mask_tokens(ids[0], ws[0], np.random.default_rng(9), opts, **kw)
    for x, y in zip(a, b, strict=True):
        assert (x == y).all()
    new_ids, positions, labels = a
    assert len(positions) == len(labels) == round(47 * 0.15)
    assert (labels == ids[0][positions]).all() and new_ids.shape == ids[0].shape
    c = mask_tokens(ids[0], ws[0], np.random.default_rng(10), opts, **kw)
    assert not np.array_equal(a[1], c[1])


def test_only_specials_masks_nothing() -> None:
    ids = np.array([CLS, SEP, SEP, PAD], dtype=np.int32)
    new, pos, lab = mask_tokens(
        ids,
        np.ones(4, bool),
        np.random.default_rng(0),
        MaskingOptions(),
        vocab_size=VOCAB,
        mask_id=MASK,
        special_ids=SPECIALS,
    )
    assert pos.size == 0 and lab.size == 0 and (new == ids).all()


def test_options_validation() -> None:
    with pytest.raises(ValueError, match="--mask-prob"):
        MaskingOptions(mask_prob=0.9, random_prob=0.2)
    with pytest.raises(ValueError):
        MaskingOptions(masked_lm_prob=0)
