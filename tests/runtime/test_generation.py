"""``florence2_runtime.generation`` on its own: decoding options, logit filters, top_k, errors of the loop.

What has a transformers counterpart (token ids of ``generate()``, each filter, ``log_softmax``) is compared
with it in tests/parity/test_generate_ids.py; beam candidates: test_candidates.py; scores: test_token_scores.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from florence2_runtime.generation import (
    DecodingOptions,
    ForcedBOS,
    ForcedEOS,
    MinNewTokens,
    NoRepeatNGram,
    build_logit_filters,
    generate,
    top_k,
)
from tests.helpers.paths import DATA

# the tiny model's generation_config.json: Florence-2's (3 beams, no repeated 3-grams, forced BOS / EOS)
FLORENCE_GENERATION = json.loads((DATA / "models" / "tiny" / "generation_config.json").read_text())
EOS = 2


def test_no_repeat_ngram_ignores_ids_outside_the_logits():
    tokens = np.array([[2, 0, 15, 2, 0]], np.int64)
    scores = np.zeros((1, 10), np.float32)
    NoRepeatNGram(3).apply(tokens, scores)  # would ban 15, which the 10 logits do not have
    assert np.isfinite(scores).all()


def test_filters_follow_transformers_order():
    options = DecodingOptions.from_generation_config(FLORENCE_GENERATION, max_new_tokens=1, min_new_tokens=1)
    kinds = [type(f) for f in build_logit_filters(options)]
    assert kinds == [NoRepeatNGram, MinNewTokens, ForcedBOS, ForcedEOS]
    scores = np.zeros((2, 5), np.float32)
    for f in build_logit_filters(options):  # length 1 == max_length - 1: forced EOS wins over forced BOS
        f.apply(np.full((2, 1), 2, np.int64), scores)
    assert (scores[:, EOS] == 0).all() and np.isneginf(np.delete(scores, EOS, axis=1)).all()


def test_top_k_sorts_descending_and_breaks_ties_by_index():
    values = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0, 3.0, -np.inf]], np.float32)
    top, index = top_k(values, 5)
    np.testing.assert_array_equal(index, [[1, 2, 5, 4, 0]])
    np.testing.assert_array_equal(top, [[3, 3, 3, 2, 1]])
    ties = np.zeros((2, 100), np.float32)
    ties[:, 40] = 1.0
    np.testing.assert_array_equal(top_k(ties, 4)[1], [[40, 0, 1, 2]] * 2)


def test_options_from_florence_generation_config():
    options = DecodingOptions.from_generation_config(FLORENCE_GENERATION)
    assert options == DecodingOptions(
        max_new_tokens=20,
        min_new_tokens=0,
        num_beams=3,
        no_repeat_ngram_size=3,
        early_stopping=True,
        length_penalty=1.0,
        decoder_start_token_id=2,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
    )
    assert options.max_length == 21  # transformers: 20 new tokens after the decoder start token


@pytest.mark.parametrize(
    "config, overrides, expected",
    [
        ({}, {"max_new_tokens": 7}, {"max_new_tokens": 7}),
        ({"max_length": 20}, {}, {"max_new_tokens": 19}),
        ({"max_length": 20}, {"max_new_tokens": 5}, {"max_new_tokens": 5}),
        ({"max_new_tokens": 5}, {"max_length": 9}, {"max_new_tokens": 5}),
        ({}, {"max_length": 9, "min_length": 4}, {"max_new_tokens": 8, "min_new_tokens": 3}),
        ({"min_length": 4}, {"min_new_tokens": 1}, {"min_new_tokens": 1}),
        ({"min_length": 0}, {}, {"min_new_tokens": 0}),
        ({}, {"forced_bos_token_id": None}, {"forced_bos_token_id": None}),
        ({"eos_token_id": [2]}, {}, {"eos_token_id": 2}),
        ({"pad_token_id": None}, {}, {"pad_token_id": 2}),
        ({"decoder_start_token_id": None}, {}, {"decoder_start_token_id": 0}),
        ({"_from_model_config": True, "transformers_version": "5.23.0", "do_sample": False}, {}, {}),
        ({}, {"use_cache": True, "num_return_sequences": 1}, {}),
    ],
)
def test_options_resolution(config, overrides, expected):
    options = DecodingOptions.from_generation_config({**FLORENCE_GENERATION, **config}, **overrides)
    for name, value in expected.items():
        assert getattr(options, name) == value, name


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"num_beams": 0}, "num_beams"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_length": 1}, "max_length"),
        ({"min_new_tokens": -1}, "min_new_tokens"),
        ({"min_new_tokens": 6, "max_new_tokens": 5}, "min_new_tokens"),
        ({"early_stopping": "sometimes"}, "early_stopping"),
        ({"early_stopping": 1}, "early_stopping"),
        ({"length_penalty": float("nan")}, "length_penalty"),
        ({"no_repeat_ngram_size": 2.0}, "no_repeat_ngram_size"),
        ({"eos_token_id": [2, 3]}, "eos_token_id"),
        ({"pad_token_id": -1}, "pad_token_id"),
        ({"do_sample": True}, "do_sample"),
        ({"num_return_sequences": 2}, "num_return_sequences"),
        ({"temprature": 0.7}, "temprature"),
        ({"decoder_start_token_id": None, "bos_token_id": None}, "decoder_start_token_id"),
    ],
)
def test_bad_options_raise_naming_the_option(overrides, name):
    with pytest.raises(ValueError, match=name):
        DecodingOptions.from_generation_config(FLORENCE_GENERATION, **overrides)


def test_options_are_frozen_and_validated_on_creation():
    options = DecodingOptions()
    with pytest.raises(AttributeError):
        options.num_beams = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="pad_token_id"):
        DecodingOptions(pad_token_id=None)
    with pytest.raises(ValueError, match="batch_size"):
        generate(None, 0, options)  # type: ignore[arg-type]


def test_generate_rejects_logits_of_the_wrong_shape():
    class Wrong:
        def logits(self, tokens):
            return np.zeros((tokens.shape[0] + 1, 10), np.float32)

        def rearrange_kv_cache(self, source_indices):
            raise AssertionError

    with pytest.raises(ValueError, match="logits"):
        generate(Wrong(), 2, DecodingOptions())


@pytest.mark.parametrize("num_beams", [1, 3])
def test_nan_logits_are_a_clear_error(num_beams):
    from florence2_runtime.generation import DecodingOptions, NonFiniteLogitsError, generate

    class NaNInference:
        def logits(self, tokens):
            return np.full((tokens.shape[0], 50), np.nan, np.float32)

        def rearrange_kv_cache(self, source):
            pass

    options = DecodingOptions(
        num_beams=num_beams, max_new_tokens=5, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2
    )
    with pytest.raises(NonFiniteLogitsError, match="NaN logits"):
        generate(NaNInference(), 2, options)
