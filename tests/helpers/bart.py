"""The generation reference of tests/parity: a tiny random BART behind the runtime's ``Inference`` protocol.

Florence-2's language model is a BART. :func:`tiny_bart` has peaked, context-dependent logits, so beams
diverge, n-grams repeat and, with a biased EOS logit, sequences finish early; :class:`TorchInference` runs
it for the runtime's ``generate`` (HF's own cache and ``reorder_cache``). :data:`GRID` is the settings the
parity tests sweep: every (beams, batch, max_new_tokens, early_stopping), the rest drawn by a seed.
Needs torch and transformers.
"""

from __future__ import annotations

import functools
import itertools
import random
from typing import Any

import numpy as np
import torch
from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig
from transformers.modeling_outputs import BaseModelOutput

from florence2_export.toy.tiny import GENERATION_CONFIG
from florence2_runtime.generation import DecodingOptions, generate

FLORENCE_GENERATION = GENERATION_CONFIG  # the transformers-native Florence-2 generation_config.json
BOS, PAD, EOS = 0, 1, 2
VOCAB = 300
INIT_STD = 0.15  # weights 7x BART's default: the encoder input matters and greedy paths repeat n-grams
LOGIT_STD = 0.8  # lm_head weight std: peaked (top probability ~0.6) but not one-hot distributions
BIAS_STD = 1.5  # final_logits_bias: a context-free preference for some tokens


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
