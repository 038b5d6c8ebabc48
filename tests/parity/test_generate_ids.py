"""``florence2_runtime.generation`` against transformers: exact token ids of ``generate()`` and the pieces.

The reference is a tiny random ``BartForConditionalGeneration`` (Florence-2's language model is a BART)
with peaked, context-dependent logits, so beams diverge, n-grams repeat and, with a biased EOS logit,
sequences finish early. The runtime side runs the same torch model through a torch-backed ``Inference``
(HF's own cache and ``reorder_cache``); the ONNX-backed one is tested elsewhere.
"""

from __future__ import annotations

import functools
import itertools
import random
from typing import Any

import numpy as np
import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig
from transformers.generation.logits_process import (
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
)
from transformers.modeling_outputs import BaseModelOutput

from florence2_export.toy.tiny import GENERATION_CONFIG
from florence2_runtime.generation import (
    DecodingOptions,
    ForcedBOS,
    ForcedEOS,
    MinNewTokens,
    NoRepeatNGram,
    build_logit_filters,
    generate,
    log_softmax,
    top_k,
)

FLORENCE_GENERATION = GENERATION_CONFIG  # the transformers-native Florence-2 generation_config.json
BOS, PAD, EOS = 0, 1, 2
VOCAB = 300
INIT_STD = 0.15  # weights 7x BART's default: the encoder input matters and greedy paths repeat n-grams
LOGIT_STD = 0.8  # lm_head weight std: peaked (top probability ~0.6) but not one-hot distributions
BIAS_STD = 1.5  # final_logits_bias: a context-free preference for some tokens


# ----------------------------------------------------------------------------------------- the reference


@functools.cache
def tiny_bart(seed: int, eos_bias: float) -> BartForConditionalGeneration:
    config = BartConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        init_std=INIT_STD,
    )
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, LOGIT_STD)
        model.final_logits_bias.normal_(0.0, BIAS_STD)
        model.final_logits_bias[0, EOS] += eos_bias
    model.generation_config = GenerationConfig(**FLORENCE_GENERATION)
    return model


def encoder_inputs(seed: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded encoder ids and mask, items of different lengths."""
    g = torch.Generator().manual_seed(1000 + seed)
    lengths = [9, 4, 6][:batch]
    ids = torch.randint(3, VOCAB, (batch, max(lengths)), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids.masked_fill(mask == 0, PAD), mask


class TorchInference:
    """The ``Inference`` protocol on a torch BART with HF's cache; records the cache reorders."""

    def __init__(
        self, model: BartForConditionalGeneration, ids: torch.Tensor, mask: torch.Tensor, num_beams: int
    ):
        self.model = model
        with torch.no_grad():
            hidden = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        self.encoder_outputs = BaseModelOutput(last_hidden_state=hidden.repeat_interleave(num_beams, dim=0))
        self.mask = mask.repeat_interleave(num_beams, dim=0)
        self.cache = None
        self.fed = 0
        self.steps = 0
        self.reorders: list[np.ndarray] = []

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        assert tokens.dtype == np.int64 and tokens.shape[1] == self.fed + 1
        with torch.no_grad():
            out = self.model(
                encoder_outputs=self.encoder_outputs,
                attention_mask=self.mask,
                decoder_input_ids=torch.from_numpy(tokens[:, self.fed :].copy()),
                past_key_values=self.cache,
                use_cache=True,
            )
        self.cache, self.fed = out.past_key_values, tokens.shape[1]
        self.steps += 1
        return out.logits[:, -1].float().numpy()

    def rearrange_kv_cache(self, source_indices: np.ndarray) -> None:
        assert source_indices.dtype == np.int64
        self.reorders.append(source_indices.copy())
        self.cache.reorder_cache(torch.from_numpy(source_indices))


@functools.cache
def reference_ids(case: tuple) -> np.ndarray:
    seed, eos_bias, batch, kwargs = unpack(case)
    ids, mask = encoder_inputs(seed, batch)
    with torch.no_grad():
        return tiny_bart(seed, eos_bias).generate(input_ids=ids, attention_mask=mask, **kwargs).numpy()


def runtime_ids(case: tuple) -> tuple[np.ndarray, TorchInference, DecodingOptions]:
    seed, eos_bias, batch, kwargs = unpack(case)
    options = DecodingOptions.from_generation_config(FLORENCE_GENERATION, **kwargs)
    ids, mask = encoder_inputs(seed, batch)
    inference = TorchInference(tiny_bart(seed, eos_bias), ids, mask, options.num_beams)
    return generate(inference, batch, options), inference, options


# ------------------------------------------------------------------------------------------- the grid


def make_case(seed: int, eos_bias: float, batch: int, **kwargs: Any) -> tuple:
    """Hashable (for the cache) and readable as a test id."""
    return (seed, eos_bias, batch, tuple(sorted(kwargs.items())))


def unpack(case: tuple) -> tuple[int, float, int, dict]:
    seed, eos_bias, batch, items = case
    return seed, eos_bias, batch, dict(items)


def build_grid() -> list[tuple]:
    """Every (beams, batch, max_new_tokens, early_stopping) combination, the other settings drawn by a
    seeded generator so that each value meets many others."""
    cases = []
    combos = itertools.product([1, 2, 3, 4], [1, 3], [1, 2, 5, 20, 40], [True, False, "never"])
    for i, (beams, batch, max_new, early) in enumerate(combos):
        if beams == 1 and early is not True:  # greedy ignores early_stopping and length_penalty
            continue
        draw = random.Random(i).choice
        kwargs = dict(
            num_beams=beams,
            max_new_tokens=max_new,
            early_stopping=early,
            no_repeat_ngram_size=draw((0, 3)),
            length_penalty=draw((0.5, 1.0, 2.0)),
            min_new_tokens=min(draw((0, 5)), max_new),
        )
        seed, eos_bias = draw(range(7)), draw((0.0, 6.0, 10.0, 14.0))
        cases.append(make_case(seed=seed, eos_bias=eos_bias, batch=batch, **kwargs))
    # lengths resolved from the generation config: transformers' default, max_length, min_length
    cases += [
        make_case(0, 5.0, 3),
        make_case(1, 9.0, 3, num_beams=1),
        make_case(2, 0.0, 1, max_length=7, min_length=4),
        make_case(3, 5.0, 3, num_beams=2, max_length=12, early_stopping=False),
        make_case(4, 9.0, 3, max_new_tokens=6, forced_bos_token_id=None, no_repeat_ngram_size=2),
        make_case(0, 9.0, 3, max_new_tokens=9, num_beams=4, forced_eos_token_id=None, length_penalty=-1.0),
        make_case(1, 0.0, 3, max_new_tokens=12, num_beams=3, early_stopping="never", length_penalty=0.0),
        # n-gram size 1 bans the decoder start token 2, which is also EOS
        make_case(5, 10.0, 3, max_new_tokens=10, no_repeat_ngram_size=1, length_penalty=3.0),
        # early_stopping=True: an item whose beams are all finished takes no more hypotheses
        make_case(4, 10.0, 3, max_new_tokens=40, num_beams=4, length_penalty=2.0),
        make_case(1, 14.0, 3, max_new_tokens=10, num_beams=4, length_penalty=2.0),
    ]
    return cases


GRID = build_grid()


def case_id(case: tuple) -> str:
    seed, eos_bias, batch, kwargs = unpack(case)
    short = {
        "num_beams": "k",
        "max_new_tokens": "new",
        "early_stopping": "es",
        "no_repeat_ngram_size": "ng",
        "length_penalty": "lp",
        "min_new_tokens": "min",
    }
    parts = [f"s{seed}", f"eos{eos_bias:g}", f"b{batch}"]
    parts += [f"{short.get(name, name)}={value}" for name, value in kwargs.items()]
    return "-".join(parts)


@pytest.mark.parametrize("case", GRID, ids=case_id)
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


def test_no_repeat_ngram_ignores_ids_outside_the_logits():
    tokens = np.array([[2, 0, 15, 2, 0]], np.int64)
    scores = np.zeros((1, 10), np.float32)
    NoRepeatNGram(3).apply(tokens, scores)  # would ban 15, which the 10 logits do not have
    assert np.isfinite(scores).all()


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


def test_filters_follow_transformers_order():
    options = DecodingOptions.from_generation_config(FLORENCE_GENERATION, max_new_tokens=1, min_new_tokens=1)
    kinds = [type(f) for f in build_logit_filters(options)]
    assert kinds == [NoRepeatNGram, MinNewTokens, ForcedBOS, ForcedEOS]
    scores = np.zeros((2, 5), np.float32)
    for f in build_logit_filters(options):  # length 1 == max_length - 1: forced EOS wins over forced BOS
        f.apply(np.full((2, 1), 2, np.int64), scores)
    assert (scores[:, EOS] == 0).all() and np.isneginf(np.delete(scores, EOS, axis=1)).all()


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


def test_top_k_sorts_descending_and_breaks_ties_by_index():
    values = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0, 3.0, -np.inf]], np.float32)
    top, index = top_k(values, 5)
    np.testing.assert_array_equal(index, [[1, 2, 5, 4, 0]])
    np.testing.assert_array_equal(top, [[3, 3, 3, 2, 1]])
    rng = np.random.default_rng(0)
    wide = rng.standard_normal((3, 5000)).astype(np.float32)
    wide[:, 100:200] = -np.inf
    for k in (2, 8):  # the partition path agrees with torch.topk when there are no ties
        top, index = top_k(wide, k)
        ref = torch.topk(torch.from_numpy(wide), k)
        np.testing.assert_array_equal(top, ref.values.numpy())
        np.testing.assert_array_equal(index, ref.indices.numpy())
    ties = np.zeros((2, 100), np.float32)
    ties[:, 40] = 1.0
    np.testing.assert_array_equal(top_k(ties, 4)[1], [[40, 0, 1, 2]] * 2)


# --------------------------------------------------------------------------------------------- options


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
