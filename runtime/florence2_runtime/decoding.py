"""Greedy and beam-search generation for an encoder-decoder model, with numpy only.

Reproduces the token ids of transformers 5.23 ``generate()`` (``_sample`` with ``do_sample=False`` and
``_beam_search``) for the options Florence-2 uses. The model is reached through the :class:`Inference`
protocol; everything here is bookkeeping on numpy arrays.

Layout: ``N = batch * num_beams`` rows, the beams of one batch item contiguous (item 0 beams 0..k-1, then
item 1, ...), as transformers expands its inputs with ``repeat_interleave``. Every sequence starts with
``decoder_start_token_id`` (the decoder prompt, length 1); ``max_length = 1 + max_new_tokens``.

Facts from transformers that the code below depends on:

- Logits processors, in this order: no-repeat-ngram, min-length / min-new-tokens (both only set EOS to
  -inf), forced BOS (at length 1), forced EOS (at ``max_length - 1``). The forced ones replace the whole
  row by -inf with 0 at their token, so forced EOS wins over forced BOS when ``max_new_tokens == 1``, and
  both win over the EOS suppression of ``min_new_tokens``.
- Greedy: processors on the raw float32 logits, first argmax; finished rows get ``pad_token_id``; the
  loop ends when every row has emitted EOS or at ``max_length``.
- Beam search: float32 ``log_softmax`` first, processors on the log-probabilities, add the running beam
  scores, top ``2 * num_beams`` over ``num_beams * vocab``. Placeholders are ``-1e9`` (not -inf) and
  masks are *added* as ``-1e9`` multiples in float32, so their rounding is reproduced as is.
- Only the first ``num_beams`` of those candidates may finish (EOS or ``max_length``); a finished
  hypothesis scores ``sum_logprobs / generated_len ** length_penalty`` where ``generated_len`` counts the
  new tokens, forced BOS and EOS included, the decoder start token excluded.
- Beam search stops when no item can improve (``early_stopping`` heuristics), when every item of the
  batch holds ``num_beams`` finished hypotheses (``early_stopping=True``) or at ``max_length``. Its output
  is the best finished hypothesis per item, cut to the longest of them and right-padded with
  ``pad_token_id`` (``eos_token_id`` if pad is 0, a transformers quirk; -1 without EOS).
- Cache reorders: skipped when the source rows are the identity (always after the forced-BOS step) and
  after the last step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, Mapping, NamedTuple, Protocol

import numpy as np

from .errors import Florence2Error, brief

__all__ = [
    "BeamSearchDecoder",
    "DecodingOptions",
    "ForcedBOS",
    "ForcedEOS",
    "GreedyDecoder",
    "Inference",
    "LogitFilter",
    "MinNewTokens",
    "NoRepeatNGram",
    "Step",
    "build_logit_filters",
    "generate",
    "log_softmax",
    "top_k",
]

PROMPT_LENGTH = 1  # the decoder prompt is [decoder_start_token_id]
DEFAULT_MAX_NEW_TOKENS = 20  # transformers: max_length defaults to 20 + prompt length when nothing sets it
NEG_INF = np.float32(-np.inf)
PLACEHOLDER = np.float32(-1.0e9)  # transformers' "very negative" score for empty and masked beams

# torch's CPU log_softmax sums exp(x - max) in SIMD lanes (16 floats with AVX-512, 8 with AVX2), then
# reduces the lanes pairwise. Summing in the same order makes the normaliser match torch bit for bit in
# most rows; exp and log are computed in float64 and rounded, which matches torch's Sleef versions
# more often than numpy's float32 ones do. A residual 1-ulp difference in a few percent of rows remains.
TORCH_CPU_LANES = 16


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
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        _check_int("min_new_tokens", self.min_new_tokens, minimum=0)
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) is larger than max_new_tokens "
                             f"({self.max_new_tokens})")
        _check_int("num_beams", self.num_beams, minimum=1)
        _check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, minimum=0)
        es = self.early_stopping
        if not (es is True or es is False or (isinstance(es, str) and es == "never")):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        _check_length_penalty(self.length_penalty, self.max_length if self.num_beams > 1 else None)
        _check_int("decoder_start_token_id", self.decoder_start_token_id, minimum=0)
        for name in _OPTIONAL_IDS:
            _check_int(name, getattr(self, name), minimum=0, optional=True)
        if self.eos_token_id is not None and self.pad_token_id is None:
            raise ValueError("pad_token_id is required when eos_token_id is set (it fills finished rows)")

    @classmethod
    def from_generation_config(cls, config: Mapping[str, Any], **overrides: Any) -> "DecodingOptions":
        """Options from a ``generation_config.json`` dict and ``generate()``-style keyword overrides.

        Follows transformers: overrides win (``None`` unsets), ``max_new_tokens`` wins over ``max_length``
        (total length, prompt included), with neither the limit is 20 new tokens; ``min_new_tokens`` wins
        over ``min_length``; ``decoder_start_token_id`` falls back to ``bos_token_id`` and ``pad_token_id``
        to ``eos_token_id``. Unknown overrides, and settings this module cannot reproduce (sampling,
        several EOS ids, ...), raise ``ValueError``. Other config keys (metadata) are ignored.
        """
        for name in overrides:
            if name not in _OPTION_NAMES | _LENGTH_NAMES | _IGNORED_SETTINGS | _NEUTRAL_SETTINGS.keys():
                raise ValueError(f"unknown generation option {brief(name)}; supported: "
                                 f"{', '.join(sorted(_OPTION_NAMES | _LENGTH_NAMES))}")
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
                _check_int("max_length", max_length, minimum=PROMPT_LENGTH + 1)
                values["max_new_tokens"] = max_length - PROMPT_LENGTH
        if "min_new_tokens" not in values and merged.get("min_length") is not None:
            _check_int("min_length", merged["min_length"], minimum=0)
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


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
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
        raise ValueError(f"length_penalty={brief(lp)} is too large in size for max length {max_length}: "
                         f"length ** length_penalty overflows float32; use a value in [-{bound:.1f}, {bound:.1f}]")


def _single_id(name: str, value: Any) -> Any:
    """transformers allows a list of EOS ids; a one-element list is the same as the id."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"{name}={value!r}: only a single id is supported")
        return value[0]
    return value


class Inference(Protocol):
    """The model side of decoding: next-token logits with a KV cache kept by the implementation."""

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens int64 [N, T] (the whole sequences so far) -> next-token logits float32 [N, V].

        Implementations keep a cache of past positions and feed only ``tokens[:, cached:]``.
        """
        ...

    def rearrange_kv_cache(self, source_indices: np.ndarray) -> None:
        """Make cache row ``i`` a copy of row ``source_indices[i]`` (int64 [N]) before the next step.

        Skippable when the indices are the identity: :func:`generate` then does not call it (nor after
        the last step), and greedy search never does. Sources stay within a batch item's beams.
        """
        ...


class LogitFilter(Protocol):
    """One of transformers' logits processors."""

    def apply(self, tokens: np.ndarray, scores: np.ndarray) -> None:
        """tokens int64 [N, T], scores float32 [N, V] modified in place."""
        ...


@dataclass(frozen=True)
class NoRepeatNGram:
    """Ban each token that would complete an n-gram already in the row (``NoRepeatNGramLogitsProcessor``).

    The whole decoder sequence counts, the decoder start token included. Stateless: each step compares the
    last ``n - 1`` tokens against every window, ``O(N * T * (n - 1))`` vectorised work, so beam reordering
    needs no bookkeeping of its own.
    """

    size: int

    def apply(self, tokens: np.ndarray, scores: np.ndarray) -> None:
        n, (rows, length) = self.size, tokens.shape
        if length < n:
            return
        windows = length - n + 1  # n-grams present: starts 0 .. length - n
        matches = np.ones((rows, windows), dtype=bool)
        for j in range(n - 1):  # window's j-th token equals the j-th token of the current (n-1)-suffix
            matches &= tokens[:, j : j + windows] == tokens[:, length - n + 1 + j, None]
        row, start = np.nonzero(matches)
        banned = tokens[row, start + n - 1]
        inside = banned < scores.shape[1]  # ids past the logits width cannot be generated anyway
        scores[row[inside], banned[inside]] = NEG_INF


@dataclass(frozen=True)
class MinNewTokens:
    """EOS gets -inf while fewer than ``min_new_tokens`` tokens follow the prompt."""

    prompt_length: int
    min_new_tokens: int
    eos_token_id: int

    def apply(self, tokens: np.ndarray, scores: np.ndarray) -> None:
        if tokens.shape[1] - self.prompt_length < self.min_new_tokens and self.eos_token_id < scores.shape[1]:
            scores[:, self.eos_token_id] = NEG_INF


@dataclass(frozen=True)
class ForcedBOS:
    """At length 1 every score becomes -inf except ``token_id``, which becomes 0."""

    token_id: int

    def apply(self, tokens: np.ndarray, scores: np.ndarray) -> None:
        if tokens.shape[1] == 1:
            _force(scores, self.token_id, "forced_bos_token_id")


@dataclass(frozen=True)
class ForcedEOS:
    """At length ``max_length - 1`` every score becomes -inf except ``token_id``, which becomes 0."""

    max_length: int
    token_id: int

    def apply(self, tokens: np.ndarray, scores: np.ndarray) -> None:
        if tokens.shape[1] == self.max_length - 1:
            _force(scores, self.token_id, "forced_eos_token_id")


def _force(scores: np.ndarray, token_id: int, name: str) -> None:
    if token_id >= scores.shape[1]:
        raise ValueError(f"{name} {token_id} is outside the vocabulary of {scores.shape[1]} logits")
    scores[:] = NEG_INF
    scores[:, token_id] = 0.0


def build_logit_filters(options: DecodingOptions) -> list[LogitFilter]:
    """The processors transformers' ``_get_logits_processor`` builds for these options, in its order."""
    filters: list[LogitFilter] = []
    if options.no_repeat_ngram_size > 0:
        filters.append(NoRepeatNGram(options.no_repeat_ngram_size))
    if options.min_new_tokens > 0 and options.eos_token_id is not None:
        filters.append(MinNewTokens(PROMPT_LENGTH, options.min_new_tokens, options.eos_token_id))
    if options.forced_bos_token_id is not None:
        filters.append(ForcedBOS(options.forced_bos_token_id))
    if options.forced_eos_token_id is not None:
        filters.append(ForcedEOS(options.max_length, options.forced_eos_token_id))
    return filters


def log_softmax(logits: np.ndarray, lanes: int = TORCH_CPU_LANES) -> np.ndarray:
    """float32 [N, V] -> float32 [N, V]: ``x - max - log(sum(exp(x - max)))`` in torch's CPU order."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.empty_like(shifted)
    # exp in float64, rounded to float32; numpy casts in small buffers: no [N, V] float64 temporaries
    np.exp(shifted, out=e, dtype=np.float64, casting="same_kind")
    n, v = e.shape
    if v < lanes:  # torch adds the few values one by one
        total = e[:, 0].copy()
        for i in range(1, v):
            total += e[:, i]
    else:
        if v % lanes:
            e = np.concatenate([e, np.zeros((n, lanes - v % lanes), np.float32)], axis=1)
        acc = np.add.reduce(e.reshape(n, -1, lanes), axis=1)  # one running float32 sum per lane
        while acc.shape[1] > 1:  # pairwise lane reduction: lane i with lane i + half
            half = acc.shape[1] // 2
            acc = acc[:, :half] + acc[:, half:]
        total = acc[:, 0]
    log_total = np.log(total.astype(np.float64)).astype(np.float32)
    return np.subtract(shifted, log_total[:, None], out=shifted)


def top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """values [R, C] -> (the k largest per row, descending [R, k], their column indices int64 [R, k]).

    Ties go to the lower column index. torch.topk on CPU (std::partial_sort / nth_element) leaves the
    order of equal values unspecified; in beam search exact ties only occur between the -1e9 placeholder
    beams, -inf (forbidden) candidates and -1e9-masked slots, none of which can become the returned
    hypothesis, so the choice does not change the output.
    """
    rows, cols = values.shape
    if cols <= 8 * k:
        index = np.argsort(-values, axis=1, kind="stable")[:, :k]
    else:  # partition to the k-th largest, then sort only what is at least that large
        kth = np.partition(values, cols - k, axis=1)[:, cols - k]
        index = np.empty((rows, k), dtype=np.int64)
        for r in range(rows):
            candidates = np.flatnonzero(values[r] >= kth[r])
            index[r] = candidates[np.argsort(-values[r, candidates], kind="stable")[:k]]
    return np.take_along_axis(values, index, axis=1), index.astype(np.int64)


class Step(NamedTuple):
    """What a decoder's ``update`` returns."""

    tokens: np.ndarray  # int64 [N, T + 1]: the sequences to feed next
    source_indices: np.ndarray | None  # int64 [N]: cache row each new row continues; None: unchanged
    done: bool  # no further step is needed


class GreedyDecoder:
    """Greedy search as transformers' ``_sample`` with ``do_sample=False``."""

    def __init__(self, options: DecodingOptions, batch_size: int):
        self.options = options
        self.filters = build_logit_filters(options)
        self.unfinished = np.ones(batch_size, dtype=bool)
        self.batch_size = batch_size

    def initial_tokens(self) -> np.ndarray:
        return np.full((self.batch_size, PROMPT_LENGTH), self.options.decoder_start_token_id, dtype=np.int64)

    def update(self, tokens: np.ndarray, logits: np.ndarray) -> Step:
        """tokens [B, T], logits [B, V] -> the sequences with one more token."""
        opts = self.options
        scores = np.array(logits, dtype=np.float32)  # a copy: filters work in place
        for f in self.filters:
            f.apply(tokens, scores)
        next_tokens = scores.argmax(axis=1).astype(np.int64)  # first maximum, as torch.argmax
        if opts.eos_token_id is not None:
            next_tokens = np.where(self.unfinished, next_tokens, opts.pad_token_id)
            self.unfinished &= next_tokens != opts.eos_token_id
        tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
        done = tokens.shape[1] >= opts.max_length or not self.unfinished.any()
        return Step(tokens, None, done)

    def finalize(self, tokens: np.ndarray) -> np.ndarray:
        """The last ``update``'s tokens are the output: int64 [B, L]."""
        return tokens


class BeamSearchDecoder:
    """Beam search as transformers' ``_beam_search`` (``do_sample=False``, one returned sequence per item).

    State, per batch item ``b`` and beam slot: running sequences and their summed log-probabilities, and
    the ``num_beams`` best finished hypotheses with their length-penalised scores. Sequences are stored at
    full ``max_length`` width filled with the output pad value, as transformers does.
    """

    def __init__(self, options: DecodingOptions, batch_size: int):
        self.options = options
        self.filters = build_logit_filters(options)
        self.batch_size = b = batch_size
        self.num_beams = k = options.num_beams
        self.candidates = 2 * k  # transformers: max(2, 1 + number of EOS ids) * num_beams
        eos, pad = options.eos_token_id, options.pad_token_id
        fill = -1 if eos is None else (pad or eos)  # `pad or eos`: a pad id of 0 is replaced by EOS
        self.running = np.full((b, k, options.max_length), fill, dtype=np.int64)
        self.running[:, :, :PROMPT_LENGTH] = options.decoder_start_token_id
        self.running_scores = np.zeros((b, k), dtype=np.float32)
        self.running_scores[:, 1:] = PLACEHOLDER  # only beam 0 is live at first
        self.finished = self.running.copy()
        self.finished_scores = np.full((b, k), PLACEHOLDER, dtype=np.float32)
        self.finished_lengths = np.zeros((b, k), dtype=np.int64)  # generated tokens, EOS included
        self.is_finished = np.zeros((b, k), dtype=bool)
        self.improvable = np.ones(b, dtype=bool)  # transformers' is_early_stop_heuristic_unsatisfied
        self.cur_len = PROMPT_LENGTH

    def initial_tokens(self) -> np.ndarray:
        return self.running[:, :, : self.cur_len].reshape(-1, self.cur_len)

    def update(self, tokens: np.ndarray, logits: np.ndarray) -> Step:
        """tokens [B*k, T], logits [B*k, V] -> the running sequences with one more token."""
        opts, b, k, cur = self.options, self.batch_size, self.num_beams, self.cur_len
        log_probs = log_softmax(logits)
        for f in self.filters:
            f.apply(tokens, log_probs)
        vocab = log_probs.shape[1]
        totals = (log_probs.reshape(b, k, vocab) + self.running_scores[:, :, None]).reshape(b, k * vocab)

        # top 2k continuations over all beams of an item
        scores, flat = top_k(totals, self.candidates)
        beam, token = flat // vocab, flat % vocab
        sequences = np.take_along_axis(self.running, beam[:, :, None], axis=1)
        sequences[:, :, cur] = token
        stops = np.full(token.shape, cur + 1 >= opts.max_length)
        if opts.eos_token_id is not None:
            stops |= token == opts.eos_token_id

        # the best k that did not stop keep running
        masked = scores + stops.astype(np.float32) * PLACEHOLDER
        keep = top_k(masked, k)[1]
        self.running = np.take_along_axis(sequences, keep[:, :, None], axis=1)
        self.running_scores = np.take_along_axis(masked, keep, axis=1)
        source = (np.arange(b)[:, None] * k + np.take_along_axis(beam, keep, axis=1)).reshape(-1)

        self._update_finished(sequences, scores, stops, generated=cur + 1 - PROMPT_LENGTH)
        self.cur_len = cur = cur + 1
        self.improvable = self._early_stop_unsatisfied()
        done = not (self.improvable.any()
                    and not (self.is_finished.all() and opts.early_stopping is True)
                    and not stops.all())
        return Step(self.running[:, :, :cur].reshape(b * k, cur), source, done)

    def _update_finished(self, sequences: np.ndarray, scores: np.ndarray, stops: np.ndarray,
                         generated: int) -> None:
        """Merge the candidates among the first k that just stopped into the k best finished hypotheses."""
        k, opts = self.num_beams, self.options
        just_finished = stops.copy()
        just_finished[:, k:] = False  # only the top k candidates may finish
        penalised = scores / _length_factor(generated, opts.length_penalty)
        full = self.is_finished.all(axis=1) & (opts.early_stopping is True)
        penalised += full[:, None].astype(np.float32) * PLACEHOLDER
        penalised += (~self.improvable)[:, None].astype(np.float32) * PLACEHOLDER
        penalised += (~just_finished).astype(np.float32) * PLACEHOLDER

        merged_scores = np.concatenate([self.finished_scores, penalised], axis=1)
        best = top_k(merged_scores, k)[1]
        lengths = np.concatenate([self.finished_lengths, np.full(scores.shape, generated, np.int64)], axis=1)
        flags = np.concatenate([self.is_finished, just_finished], axis=1)
        merged = np.concatenate([self.finished, sequences], axis=1)
        self.finished = np.take_along_axis(merged, best[:, :, None], axis=1)
        self.finished_scores = np.take_along_axis(merged_scores, best, axis=1)
        self.finished_lengths = np.take_along_axis(lengths, best, axis=1)
        self.is_finished = np.take_along_axis(flags, best, axis=1)

    def _early_stop_unsatisfied(self) -> np.ndarray:
        """[B] bool: may the best running beam still beat the worst finished one (transformers' heuristic)."""
        opts = self.options
        if opts.early_stopping == "never" and opts.length_penalty > 0.0:
            best_length = opts.max_length - PROMPT_LENGTH
        else:
            best_length = self.cur_len - PROMPT_LENGTH
        best_running = self.running_scores[:, :1] / _length_factor(best_length, opts.length_penalty)
        worst = self.finished_scores.min(axis=1, keepdims=True)  # placeholders count while slots are empty
        worst_finished = np.where(self.is_finished, worst, PLACEHOLDER)
        return self.improvable & (best_running > worst_finished).any(axis=1)

    def finalize(self, tokens: np.ndarray | None = None) -> np.ndarray:
        """The best finished hypothesis per item, cut to the longest of them: int64 [B, L]."""
        best_length = PROMPT_LENGTH + int(self.finished_lengths[:, 0].max())
        return self.finished[:, 0, :best_length].copy()


def _length_factor(length: int, length_penalty: float) -> float:
    """``length ** length_penalty`` as a Python float: numpy then rounds it to float32 before dividing a
    float32 array, as torch does with a Python scalar."""
    return float(length) ** float(length_penalty)


_DECODERS = {True: GreedyDecoder, False: BeamSearchDecoder}  # keyed by "num_beams == 1"


class NonFiniteLogitsError(Florence2Error, ValueError):
    """The decoder returned NaN logits (numerical overflow in the graphs)."""


def generate(inference: Inference, batch_size: int, options: DecodingOptions) -> np.ndarray:
    """Decode ``batch_size`` items; returns int64 [batch, L] as ``model.generate()`` does.

    ``inference`` holds ``batch_size * options.num_beams`` rows (beams of an item contiguous).
    """
    _check_int("batch_size", batch_size, minimum=1)
    options.validate()
    decoder = _DECODERS[options.num_beams == 1](options, batch_size)
    rows = batch_size * options.num_beams
    identity = np.arange(rows)
    tokens = decoder.initial_tokens()
    while True:
        logits = inference.logits(tokens)
        if getattr(logits, "ndim", 0) != 2 or logits.shape[0] != rows:
            raise ValueError(f"Inference.logits returned shape {getattr(logits, 'shape', None)}, expected "
                             f"[{rows}, vocab]")
        if np.isnan(logits).any():  # ~50 us per step; silent garbage (or a crash in top-k) otherwise
            raise NonFiniteLogitsError(
                f"the model produced NaN logits at decoder length {tokens.shape[1]} (an overflow: e.g. an fp16 "
                "graph whose activations exceed the fp16 range; try the fp32 export)")
        tokens, source, done = decoder.update(tokens, logits)
        if done:  # a final cache reorder would be wasted
            return decoder.finalize(tokens)
        if source is not None and not np.array_equal(source, identity):
            inference.rearrange_kv_cache(source)
