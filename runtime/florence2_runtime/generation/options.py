"""Decoding options (transformers' ``GenerationConfig`` names) and their checks.

:class:`DecodingOptions` holds what greedy and beam search need; :meth:`DecodingOptions.from_generation_config`
reads a checkpoint's ``generation_config.json`` with ``generate()``-style overrides and refuses, with a
``ValueError`` naming it, every setting :mod:`.search` cannot reproduce token for token.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..errors import brief

PROMPT_LENGTH = 1  # the decoder prompt is [decoder_start_token_id]
DEFAULT_MAX_NEW_TOKENS = 20  # transformers: max_length defaults to 20 + prompt length when nothing sets it


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode; names and meanings are those of transformers' ``GenerationConfig``.

    The defaults are transformers' global defaults with BART / Florence-2 special token ids; use
    :meth:`from_generation_config` to read a checkpoint's ``generation_config.json``.
    """

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # tokens generated after the decoder start token
    min_new_tokens: int = 0  # EOS is forbidden (-inf) until this many tokens have been generated
    num_beams: int = 1  # 1: greedy search; more: beam search
    no_repeat_ngram_size: int = 0  # >0: an n-gram of the decoder sequence (start included) occurs once
    early_stopping: bool | str = False  # beam search: True, False (heuristic) or "never"
    length_penalty: float = 1.0  # beam search: a finished score is sum_logprobs / generated_len ** this
    decoder_start_token_id: int = 2  # first token of every decoder sequence
    bos_token_id: int | None = 0  # only a fallback for decoder_start_token_id in from_generation_config
    eos_token_id: int | None = 2  # a sequence ends when it emits this token; None: never
    pad_token_id: int | None = 1  # fills finished sequences; required when eos_token_id is set
    forced_bos_token_id: int | None = None  # forced as the first generated token; None disables
    forced_eos_token_id: int | None = None  # forced as the token at max_length - 1; None disables

    def __post_init__(self) -> None:
        self.validate()

    @property
    def max_length(self) -> int:
        """Total decoder length, prompt included (transformers' ``max_length``)."""
        return PROMPT_LENGTH + self.max_new_tokens

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        check_int("min_new_tokens", self.min_new_tokens, minimum=0)
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) is larger than max_new_tokens "
                f"({self.max_new_tokens})"
            )
        check_int("num_beams", self.num_beams, minimum=1)
        check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, minimum=0)
        es = self.early_stopping
        if not (es is True or es is False or (isinstance(es, str) and es == "never")):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        _check_length_penalty(self.length_penalty, self.max_length if self.num_beams > 1 else None)
        check_int("decoder_start_token_id", self.decoder_start_token_id, minimum=0)
        for name in _OPTIONAL_IDS:
            check_int(name, getattr(self, name), minimum=0, optional=True)
        if self.eos_token_id is not None and self.pad_token_id is None:
            raise ValueError("pad_token_id is required when eos_token_id is set (it fills finished rows)")

    @classmethod
    def from_generation_config(cls, config: Mapping[str, Any], **overrides: Any) -> DecodingOptions:
        """Options from a ``generation_config.json`` dict and ``generate()``-style keyword overrides.

        Follows transformers: overrides win (``None`` unsets), ``max_new_tokens`` wins over ``max_length``
        (total length, prompt included), with neither the limit is 20 new tokens; ``min_new_tokens`` wins
        over ``min_length``; ``decoder_start_token_id`` falls back to ``bos_token_id`` and ``pad_token_id``
        to ``eos_token_id``. Unknown overrides, and settings this module cannot reproduce (sampling,
        several EOS ids, ...), raise ``ValueError``. Other config keys (metadata) are ignored.
        """
        for name in overrides:
            if name not in _OPTION_NAMES | _LENGTH_NAMES | _IGNORED_SETTINGS | _NEUTRAL_SETTINGS.keys():
                raise ValueError(
                    f"unknown generation option {brief(name)}; supported: "
                    f"{', '.join(sorted(_OPTION_NAMES | _LENGTH_NAMES))}"
                )
        merged = {**config, **overrides}
        for name, neutral in _NEUTRAL_SETTINGS.items():
            value = merged.get(name)
            if value is not None and value != neutral:
                raise ValueError(f"{name}={value!r} is not supported (only {neutral!r})")

        values = {name: merged[name] for name in _OPTION_NAMES if merged.get(name) is not None}
        for name in ("eos_token_id", "forced_eos_token_id"):
            if name in values:
                values[name] = _single_id(name, values[name])
        values.setdefault("bos_token_id", None)
        values.setdefault("eos_token_id", None)
        values.setdefault("pad_token_id", values["eos_token_id"])
        if "decoder_start_token_id" not in values:
            if values["bos_token_id"] is None:
                raise ValueError("decoder_start_token_id or bos_token_id has to be set")
            values["decoder_start_token_id"] = values["bos_token_id"]
        if "max_new_tokens" not in values:
            max_length = merged.get("max_length")
            if max_length is None:
                values["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
            else:
                check_int("max_length", max_length, minimum=PROMPT_LENGTH + 1)
                values["max_new_tokens"] = max_length - PROMPT_LENGTH
        if "min_new_tokens" not in values and merged.get("min_length") is not None:
            check_int("min_length", merged["min_length"], minimum=0)
            values["min_new_tokens"] = max(merged["min_length"] - PROMPT_LENGTH, 0)
        return cls(**values)


_OPTION_NAMES = frozenset(f.name for f in fields(DecodingOptions))
_OPTIONAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id", "forced_eos_token_id")
_LENGTH_NAMES = frozenset({"max_length", "min_length"})
_IGNORED_SETTINGS = frozenset({"use_cache"})  # accepted; no effect on the ids
# Settings with an effect on the ids that this module does not implement: accepted only at these values.
_NEUTRAL_SETTINGS: Mapping[str, Any] = {
    "do_sample": False,
    "num_return_sequences": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "guidance_scale": 1.0,
    "stop_strings": None,
    "max_time": None,
    "low_memory": False,
    "return_dict_in_generate": False,
}


def check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {brief(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_length_penalty(lp: Any, max_length: int | None) -> None:
    """A finite number; with beams (``max_length`` given), one whose ``length ** lp`` stays a finite,
    non-zero float32 for every length the beams reach (a finished score is divided by it)."""
    if isinstance(lp, bool) or not isinstance(lp, numbers.Real):
        raise ValueError(f"length_penalty must be a number, got {brief(lp)}")
    try:
        finite = math.isfinite(lp)
    except OverflowError:  # an int with hundreds of digits
        finite = False
    if not finite:
        raise ValueError(f"length_penalty must be a finite number, got {brief(lp)}")
    if max_length is None:
        return
    try:
        extreme = float(max(max_length, 2)) ** abs(float(lp))
    except OverflowError:
        extreme = math.inf
    if not extreme < float(np.finfo(np.float32).max):
        bound = math.log(float(np.finfo(np.float32).max)) / math.log(max(max_length, 2))
        raise ValueError(
            f"length_penalty={brief(lp)} is too large in size for max length {max_length}: "
            f"length ** length_penalty overflows float32; use a value in [-{bound:.1f}, {bound:.1f}]"
        )


def _single_id(name: str, value: Any) -> Any:
    """transformers allows a list of EOS ids; a one-element list is the same as the id."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"{name}={value!r}: only a single id is supported")
        return value[0]
    return value
