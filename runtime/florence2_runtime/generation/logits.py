"""Logit filters (transformers' logits processors), ``log_softmax`` and ``top_k`` as transformers computes them.

Pure functions and small frozen classes on numpy arrays: scores float32 [N, V], tokens int64 [N, T].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .options import PROMPT_LENGTH, DecodingOptions

NEG_INF = np.float32(-np.inf)

# torch's CPU log_softmax sums exp(x - max) in SIMD lanes (16 floats with AVX-512, 8 with AVX2), then
# reduces the lanes pairwise. Summing in the same order makes the normaliser match torch bit for bit in
# most rows; exp and log are computed in float64 and rounded, which matches torch's Sleef versions
# more often than numpy's float32 ones do. A residual 1-ulp difference in a few percent of rows remains.
TORCH_CPU_LANES = 16


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
