"""Beam search's candidate selection (``generation.candidates``) equals the plain computation bit for bit.

The reference is what the beam decoder did before the selection was made sparse: ``log_softmax`` over
every row, every filter applied to it (forced rows included), running scores added, ``top_k`` over
``num_beams * vocab`` per item. Inputs are drawn to be hard: quantised logits (exact ties), placeholder
and very negative running scores (totals that round together), banned n-grams, forced steps, tiny and
odd vocabularies. Both the fast path and its fallback must be exercised.
"""

from __future__ import annotations

import numpy as np
import pytest

from florence2_runtime.generation import candidates as cand
from florence2_runtime.generation.logits import (
    FORCING,
    TORCH_CPU_LANES,
    ForcedBOS,
    ForcedEOS,
    MinNewTokens,
    NoRepeatNGram,
    forced_token,
    log_softmax,
    top_k,
)

EOS = 2


def reference(logits, tokens, running_scores, count, filters):
    b, k = running_scores.shape
    vocab = logits.shape[1]
    log_probs = log_softmax(logits)
    for f in filters:
        f.apply(tokens, log_probs)
    totals = (log_probs.reshape(b, k, vocab) + running_scores[:, :, None]).reshape(b, k * vocab)
    scores, flat = top_k(totals, count)
    logprobs = np.take_along_axis(log_probs.reshape(b, k * vocab), flat, axis=1)
    return scores, flat // vocab, flat % vocab, logprobs


def draw_case(rng: np.random.Generator):
    b, k = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    vocab = int(rng.choice([3, 5, 17, 63, 64, 65, 130, 300, 1000, 4099]))
    length = int(rng.integers(1, 12))
    max_length = length + int(rng.integers(1, 3))
    style = rng.integers(0, 4)
    logits = rng.standard_normal((b * k, vocab)) * float(rng.choice([0.01, 1.0, 4.0, 30.0]))
    if style == 1:  # exact ties everywhere
        logits = np.round(logits)
    elif style == 2:  # a few distinct values only
        logits = rng.integers(0, 3, (b * k, vocab)).astype(np.float64)
    elif style == 3:  # one dominant token per row
        logits[np.arange(b * k), rng.integers(0, vocab, b * k)] += 20.0
    running = rng.choice(
        np.array([0.0, -0.5, -3.25, -1e9, -300.0, -7e5], np.float32),
        size=(b, k),
        p=[0.2, 0.2, 0.2, 0.2, 0.1, 0.1],
    ).astype(np.float32)
    tokens = rng.integers(0, min(vocab, 4), (b * k, length)).astype(np.int64)
    filters = [NoRepeatNGram(int(rng.integers(1, 4)))]
    if rng.random() < 0.5:
        filters.append(MinNewTokens(1, 3, EOS))
    if rng.random() < 0.3:
        filters.append(ForcedBOS(0))
    if rng.random() < 0.3:
        filters.append(ForcedEOS(max_length, EOS % vocab))
    return logits.astype(np.float32), tokens, running, 2 * k, filters


def test_candidates_equal_the_full_computation(monkeypatch):
    calls = {"few": 0, "fallback": 0, "forced": 0}
    few = cand._few_continuations

    def spy(*args):
        found = few(*args)
        calls["few"] += 1
        calls["fallback"] += found is None
        return found

    monkeypatch.setattr(cand, "_few_continuations", spy)
    rng = np.random.default_rng(0)
    for _ in range(1500):
        logits, tokens, running, count, filters = draw_case(rng)
        vocab = logits.shape[1]
        if count > running.shape[1] * vocab:
            continue
        forced = forced_token(filters, tokens.shape[1], vocab)
        calls["forced"] += forced is not None
        masks = [f for f in filters if not isinstance(f, FORCING)]
        got = cand.best_continuations(logits, tokens, running, count, masks, forced)
        expected = reference(logits, tokens.copy(), running, count, filters)
        for name, a, e in zip(cand.Candidates._fields, got, expected):
            assert a.dtype == e.dtype and a.shape == e.shape, name
            np.testing.assert_array_equal(a, e, err_msg=name)
    # both paths and forced steps really ran
    assert calls["few"] - calls["fallback"] > 300 and calls["fallback"] > 30 and calls["forced"] > 100, calls


def test_candidates_on_florence_sized_rows(monkeypatch):
    """Florence-2's 51289 logits, 3 beams, batches of 1 and 2, as decoding goes: the fast path answers."""
    few = cand._few_continuations
    fallbacks = []
    monkeypatch.setattr(cand, "_few_continuations", lambda *a: fallbacks.append(few(*a) is None) or few(*a))
    rng = np.random.default_rng(1)
    for batch in (1, 2):
        running = np.array([[0.0, -1e9, -1e9]] * batch, np.float32)
        for step in range(6):
            logits = (rng.standard_normal((3 * batch, 51289)) * 3).astype(np.float32)
            tokens = rng.integers(0, 50, (3 * batch, step + 2)).astype(np.int64)
            filters = [NoRepeatNGram(3), MinNewTokens(1, 4, EOS)]
            got = cand.best_continuations(logits, tokens, running, 6, filters, None)
            expected = reference(logits, tokens, running, 6, filters)
            for a, e in zip(got, expected):
                np.testing.assert_array_equal(a, e)
            running = got.totals[:, :3].copy()
    assert fallbacks == [False] * 12


def test_forced_token_last_filter_wins_and_is_checked():
    filters = [NoRepeatNGram(3), ForcedBOS(0), ForcedEOS(2, 2)]
    assert forced_token(filters, 1, 10) == 2  # max_length 2: EOS forced at length 1 too, and it comes last
    assert forced_token(filters[:2], 1, 10) == 0
    assert forced_token(filters, 3, 10) is None
    with pytest.raises(ValueError, match="forced_bos_token_id 12"):
        forced_token([ForcedBOS(12)], 1, 10)


def old_log_softmax(logits, lanes=TORCH_CPU_LANES):
    """The previous implementation: lanes summed on the [N, V / lanes, lanes] view."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.empty_like(shifted)
    np.exp(shifted, out=e, dtype=np.float64, casting="same_kind")
    n, v = e.shape
    if v < lanes:
        total = e[:, 0].copy()
        for i in range(1, v):
            total += e[:, i]
    else:
        if v % lanes:
            e = np.concatenate([e, np.zeros((n, lanes - v % lanes), np.float32)], axis=1)
        acc = np.add.reduce(e.reshape(n, -1, lanes), axis=1)
        while acc.shape[1] > 1:
            half = acc.shape[1] // 2
            acc = acc[:, :half] + acc[:, half:]
        total = acc[:, 0]
    return shifted - np.log(total.astype(np.float64)).astype(np.float32)[:, None]


def test_log_softmax_is_unchanged_to_the_bit():
    rng = np.random.default_rng(2)
    for rows, vocab in [(1, 51289), (3, 51289), (6, 51328), (5, 300), (2, 16), (4, 17), (3, 7), (1, 1)]:
        x = (rng.standard_normal((rows, vocab)) * rng.choice([0.1, 3.0, 40.0])).astype(np.float32)
        np.testing.assert_array_equal(log_softmax(x), old_log_softmax(x))


def test_lane_sums_run_in_sequence():
    """One running float32 sum per lane, chunk after chunk: checked against a Python loop."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 16 * 40 + 5)) * 5).astype(np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted.astype(np.float64)).astype(np.float32)
    for r in range(2):
        lanes = [np.float32(0.0)] * 16
        for i, value in enumerate(e[r]):
            lanes[i % 16] = np.float32(lanes[i % 16] + value)
        while len(lanes) > 1:
            half = len(lanes) // 2
            lanes = [np.float32(a + b) for a, b in zip(lanes[:half], lanes[half:])]
        expected = np.float32(np.log(np.float64(lanes[0])))
        assert log_softmax(x)[r, 0] == np.float32(shifted[r, 0] - expected)
