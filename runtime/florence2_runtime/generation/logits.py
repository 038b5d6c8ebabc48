"""Logit filters (transformers' logits processors), ``log_softmax`` and ``top_k`` as transformers computes them.

Pure functions and small frozen classes on numpy arrays: scores float32 [N, V], tokens int64 [N, T].
Two kinds of filter: the masking ones (:class:`NoRepeatNGram`, :class:`MinNewTokens`) only set scores
to -inf; the forcing ones (:class:`ForcedBOS`, :class:`ForcedEOS`) replace every row at one decoder
length, so beam search asks :func:`forced_token` instead of materialising those rows.
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
    name = "forced_bos_token_id"

    def forces(self, length: int) -> bool:
        """Does this filter replace the rows of sequences of ``length`` tokens?"""
        return length == 1

    def apply(self, tokens: np.ndarray, scores: np.ndarray) -> None:
        if self.forces(tokens.shape[1]):
            _force(scores, self.token_id, self.name)


@dataclass(frozen=True)
class ForcedEOS:
    """At length ``max_length - 1`` every score becomes -inf except ``token_id``, which becomes 0."""

    max_length: int
    token_id: int
    name = "forced_eos_token_id"

    def forces(self, length: int) -> bool:
        """Does this filter replace the rows of sequences of ``length`` tokens?"""
        return length == self.max_length - 1

    def apply(self, tokens: np.ndarray, scores: np.ndarray) -> None:
        if self.forces(tokens.shape[1]):
            _force(scores, self.token_id, self.name)


def _force(scores: np.ndarray, token_id: int, name: str) -> None:
    _check_forced(token_id, scores.shape[1], name)
    scores[:] = NEG_INF
    scores[:, token_id] = 0.0


def _check_forced(token_id: int, vocab: int, name: str) -> None:
    if token_id >= vocab:
        raise ValueError(f"{name} {token_id} is outside the vocabulary of {vocab} logits")


FORCING = (ForcedBOS, ForcedEOS)  # the filters that replace whole rows; the others only mask


def forced_token(filters: list[LogitFilter], length: int, vocab: int) -> int | None:
    """The token every row is forced to at decoder ``length`` (the last forcing filter wins, as its rows
    overwrite the others'), or None. Raises ``ValueError`` if that token is outside the ``vocab`` logits."""
    token = None
    for f in filters:
        if isinstance(f, FORCING) and f.forces(length):
            _check_forced(f.token_id, vocab, f.name)
            token = f.token_id
    return token


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
    shifted, log_total = shifted_log_total(logits, lanes)
    return np.subtract(shifted, log_total[:, None], out=shifted)


def shifted_log_total(
    logits: np.ndarray, lanes: int = TORCH_CPU_LANES, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, V] -> (``x - max`` float32 [N, V], ``log(sum(exp(x - max)))`` float32 [N]).

    ``log_softmax`` is their difference; beam search subtracts only on the rows' few candidates.
    out: where to write ``x - max`` (float32 [N, V], e.g. a view into a wider buffer); returned.
    """
    x = np.asarray(logits, dtype=np.float32)
    shifted = np.subtract(x, x.max(axis=1, keepdims=True), out=out)
    v = shifted.shape[1]
    if v < lanes:  # torch adds the few values one by one
        e = _exp_rounded(shifted)
        total = e[:, 0].copy()
        for i in range(1, v):
            total += e[:, i]
    else:
        total = _lane_sums(shifted, lanes)
    log_total = np.log(total.astype(np.float64)).astype(np.float32)
    return shifted, log_total


def _exp_rounded(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """exp in float64, rounded to float32; numpy casts in small buffers: no float64 temporaries."""
    if out is None:
        out = np.empty_like(x)
    return np.exp(x, out=out, dtype=np.float64, casting="same_kind")


def _lane_sums(shifted: np.ndarray, lanes: int) -> np.ndarray:
    """float32 [N, V] -> sum(exp) [N]: one running float32 sum per lane (columns ``i, i + lanes, ...``),
    then the lanes reduced pairwise (lane i with lane i + half).

    The exponentials are written chunk-major ([V / lanes, N, lanes], the last chunk zero-padded), so that
    the running sums are one ``np.add.reduce`` over the first axis whose inner loop spans every row's
    lanes: the same additions in the same order as summing each row's [V / lanes, lanes] view, ~3x faster.
    """
    n, v = shifted.shape
    full, rest = divmod(v, lanes)
    e = np.empty((full + (rest > 0), n, lanes), dtype=np.float32)
    _exp_rounded(shifted[:, : full * lanes].reshape(n, full, lanes), out=e[:full].transpose(1, 0, 2))
    if rest:
        e[full] = 0.0
        _exp_rounded(shifted[:, full * lanes :], out=e[full, :, :rest])
    acc = np.add.reduce(e, axis=0)  # [N, lanes], chunk after chunk
    while acc.shape[1] > 1:
        half = acc.shape[1] // 2
        acc = acc[:, :half] + acc[:, half:]
    return acc[:, 0]


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
