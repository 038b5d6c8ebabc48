"""``florence2_runtime.generation`` against transformers: exact token ids of ``generate()`` and the pieces.

The reference is a tiny random ``BartForConditionalGeneration`` (``tests/helpers/bart.py``): the runtime side
runs the same torch model through a torch-backed ``Inference``; the ONNX-backed one is
tests/parity/test_end_to_end.py. The pieces without a transformers counterpart: tests/runtime/test_generation.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
)

from florence2_runtime.generation import ForcedBOS, ForcedEOS, MinNewTokens, NoRepeatNGram, log_softmax, top_k
from tests.helpers.bart import (
    BOS,
    EOS,
    FLORENCE_GENERATION,
    GRID,
    PAD,
    VOCAB,
    case_id,
    reference_ids,
    runtime_ids,
    unpack,
)

pytestmark = pytest.mark.parity

# ------------------------------------------------------------------------------------------- the grid


# the 40-token cases take seconds each: slow (the rest of the grid still covers every setting)
GRID_PARAMS = [
    pytest.param(case, marks=pytest.mark.slow) if unpack(case)[3].get("max_new_tokens") == 40 else case
    for case in GRID
]


@pytest.mark.parametrize("case", GRID_PARAMS, ids=case_id)
def test_ids_match_transformers(case):
    got, _, _ = runtime_ids(case)
    expected = reference_ids(case)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def _has_repeated_ngram(row: np.ndarray, n: int) -> bool:
    grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
    return len(grams) != len(set(grams))


def test_grid_exercises_the_interesting_paths():
    """The grid is only meaningful if early EOS, padding, repeated n-grams and forced EOS really happen."""
    early_finish = padded_rows = repeats_without_ngram = forced_eos_end = 0
    for case in GRID:
        kwargs = unpack(case)[3]
        out = reference_ids(case)
        max_length = 1 + kwargs.get("max_new_tokens", 20)
        early_finish += out.shape[1] < max_length
        for row in out:
            eos_at = np.flatnonzero(row[1:] == EOS)
            end = eos_at[0] + 2 if eos_at.size else len(row)  # the sequence proper, up to its EOS
            padded_rows += end < len(row) and bool((row[end:] == PAD).all())
            forced_eos_end += end == len(row) == max_length
            ngram = kwargs.get("no_repeat_ngram_size", FLORENCE_GENERATION["no_repeat_ngram_size"])
            if ngram == 0:
                repeats_without_ngram += _has_repeated_ngram(row[:end], 3)
            elif ngram == 3:
                assert not _has_repeated_ngram(row[:end], 3)
    counts = dict(
        early_finish=early_finish,
        padded_rows=padded_rows,
        forced_eos_end=forced_eos_end,
        repeats_without_ngram=repeats_without_ngram,
    )
    assert min(counts.values()) >= 10, counts


@pytest.mark.slow
def test_cache_reorder_skipped_when_identity():
    calls = skipped = 0
    for case in GRID[::3]:
        _, inference, options = runtime_ids(case)
        k = options.num_beams
        n = unpack(case)[2] * k
        if k == 1:
            assert inference.reorders == []
            continue
        for source in inference.reorders:
            assert source.shape == (n,)
            assert not np.array_equal(source, np.arange(n))
            np.testing.assert_array_equal(source // k, np.arange(n) // k)  # rows stay within their item
        calls += len(inference.reorders)
        skipped += inference.steps - 1 - len(inference.reorders)
    assert calls > 0 and skipped > 0


# ------------------------------------------------------------------------------------------ the pieces


def _random_rows(rng: np.random.Generator, rows: int, length: int, alphabet: int) -> np.ndarray:
    return rng.integers(0, alphabet, (rows, length)).astype(np.int64)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_matches_transformers(n):
    rng = np.random.default_rng(n)
    for length in range(1, 30):
        tokens = _random_rows(rng, 5, length, alphabet=6)  # small alphabet: many repeats
        tokens[0, :] = 7  # a constant row
        scores = rng.standard_normal((5, 12)).astype(np.float32)
        expected = NoRepeatNGramLogitsProcessor(n)(torch.from_numpy(tokens), torch.from_numpy(scores.copy()))
        NoRepeatNGram(n).apply(tokens, scores)
        np.testing.assert_array_equal(scores, expected.numpy())


def test_eos_and_forced_filters_match_transformers():
    rng = np.random.default_rng(0)
    max_length, min_new = 6, 3
    hf = [
        MinLengthLogitsProcessor(1 + min_new, EOS),
        MinNewTokensLengthLogitsProcessor(1, min_new, EOS),
        ForcedBOSTokenLogitsProcessor(BOS),
        ForcedEOSTokenLogitsProcessor(max_length, EOS),
    ]
    ours = [MinNewTokens(1, min_new, EOS), ForcedBOS(BOS), ForcedEOS(max_length, EOS)]
    for length in range(1, max_length):
        tokens = _random_rows(rng, 3, length, VOCAB)
        scores = rng.standard_normal((3, VOCAB)).astype(np.float32)
        expected = torch.from_numpy(scores.copy())
        for p in hf:
            expected = p(torch.from_numpy(tokens), expected)
        for f in ours:
            f.apply(tokens, scores)
        np.testing.assert_array_equal(scores, expected.numpy())


def test_log_softmax_is_torch_to_the_last_bit_mostly():
    rng = np.random.default_rng(0)
    for vocab in (VOCAB, 5, 51328):
        x = (rng.standard_normal((64, vocab)) * 4).astype(np.float32)
        expected = torch.log_softmax(torch.from_numpy(x), dim=-1).numpy()
        got = log_softmax(x)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
        if torch.backends.cpu.get_cpu_capability() == "AVX512":  # the lane order emulated by default
            assert (got == expected).all(axis=1).mean() >= 0.75


def test_top_k_agrees_with_torch_topk_without_ties():
    rng = np.random.default_rng(0)
    wide = rng.standard_normal((3, 5000)).astype(np.float32)
    wide[:, 100:200] = -np.inf
    for k in (2, 8):  # the partition path (ties: tests/runtime/test_generation.py)
        top, index = top_k(wide, k)
        ref = torch.topk(torch.from_numpy(wide), k)
        np.testing.assert_array_equal(top, ref.values.numpy())
        np.testing.assert_array_equal(index, ref.indices.numpy())


# --------------------------------------------------------------------------------------------- options
