"""Beam search's top ``count`` continuations of a step, without materialising [N, V] log-probabilities.

transformers computes ``log_softmax`` over every row, applies the logits processors, adds each beam's
running score and takes ``torch.topk`` over ``num_beams * vocab`` values per batch item. The result is
the same set and order of candidates as :func:`all_continuations`, which does exactly that; the
common case costs one pass for the normaliser and a few cheap passes to find the handful of entries
that can win:

- The token log-probability ``fl(fl(x - max) - log_total)`` and the total ``fl(logprob + running)``
  are monotone (non-decreasing) in the logit ``x`` within a row, so a row's winners are among its
  largest logits. :func:`_few_continuations` keeps, per row, the logits at least as large as the
  ``(count + 1)``-th largest of ``BLOCKS`` block maxima, computes the exact totals on those only and
  proves the answer: every logit left out has a total at most that of the row's smallest kept one,
  which must be strictly below the ``count``-th best total of the item. Otherwise (rounding ties at
  the boundary, rows with almost every token banned, tiny vocabularies) it defers to
  :func:`all_continuations`.
- Forced steps (forced BOS / EOS) have one finite log-probability per row (0); the candidates are
  read off the running scores (:func:`_forced_continuations`).

Ties are broken as :func:`~.logits.top_k` does: by the lower index in the item's ``num_beams * vocab``
flattening. Masking filters (they only set -inf) are applied to ``x - max`` after the normaliser is
taken; the forcing filters are passed as the forced token (:func:`~.logits.forced_token`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .logits import NEG_INF, LogitFilter, shifted_log_total, top_k

BLOCKS = 64  # block maxima per row that bound the candidates (at least count + 1 are used)


class Candidates(NamedTuple):
    """The best ``count`` continuations of each batch item, best first: arrays [B, count]."""

    totals: np.ndarray  # float32: running score + token log-probability
    beams: np.ndarray  # int64: the beam (0 .. num_beams - 1) each continues
    tokens: np.ndarray  # int64: the appended token
    logprobs: np.ndarray  # float32: the token's processed log-probability (transformers' ``scores``)


def best_continuations(
    logits: np.ndarray,
    tokens: np.ndarray,
    running_scores: np.ndarray,
    count: int,
    masks: Sequence[LogitFilter],
    forced: int | None,
) -> Candidates:
    """logits float32 [B*k, V], tokens int64 [B*k, T], running_scores float32 [B, k] -> :class:`Candidates`.

    masks: filters that only set -inf; forced: the token every row is forced to at this step, or None.
    """
    if forced is not None:
        return _forced_continuations(running_scores, count, logits.shape[1], forced)
    n, vocab = logits.shape
    blocks = max(BLOCKS, count + 1)
    padded = np.empty((n, blocks * -(-vocab // blocks)), dtype=np.float32)
    padded[:, vocab:] = NEG_INF  # fills the last block
    shifted, log_total = shifted_log_total(logits, out=padded[:, :vocab])  # normaliser before any mask
    for f in masks:  # masked in place (-inf stays -inf after subtracting the normaliser)
        f.apply(tokens, shifted)
    found = _few_continuations(padded.reshape(n, blocks, -1), shifted, log_total, running_scores, count)
    if found is None:
        found = all_continuations(shifted, log_total, tokens, running_scores, count, masks)
    return found


def all_continuations(
    shifted: np.ndarray,
    log_total: np.ndarray,
    tokens: np.ndarray,
    running_scores: np.ndarray,
    count: int,
    masks: Sequence[LogitFilter],
) -> Candidates:
    """The reference computation on every entry: full log-probabilities, masks, totals, ``top_k``."""
    b, k = running_scores.shape
    vocab = shifted.shape[1]
    log_probs = shifted - log_total[:, None]
    for f in masks:
        f.apply(tokens, log_probs)
    flat_log_probs = log_probs.reshape(b, k * vocab)
    totals = (log_probs.reshape(b, k, vocab) + running_scores[:, :, None]).reshape(b, k * vocab)
    best, flat = top_k(totals, count)
    logprobs = np.take_along_axis(flat_log_probs, flat, axis=1)
    return Candidates(best, flat // vocab, flat % vocab, logprobs)


def _few_continuations(
    cube: np.ndarray, shifted: np.ndarray, log_total: np.ndarray, running_scores: np.ndarray, count: int
) -> Candidates | None:
    """The candidates from each row's largest (masked) logits only, or None when that cannot be proven
    exact. shifted: ``x - max`` float32 [B*k, V], -inf where masked; cube: the same memory as
    [B*k, blocks, width] blocks, -inf padded at the end."""
    b, k = running_scores.shape
    n, blocks, width = cube.shape
    vocab = shifted.shape[1]
    tops = cube.max(axis=2)
    kth = blocks - count - 1
    floor = np.partition(tops, kth, axis=1)[:, kth]  # the (count + 1)-th largest block maximum
    if not np.isfinite(floor).all():  # a row with fewer than count + 1 blocks holding an allowed token
        return None
    block_rows, block_ids = np.nonzero(tops >= floor[:, None])  # the blocks that hold candidates
    hit, offsets = np.divmod(np.flatnonzero(cube[block_rows, block_ids] >= floor[block_rows, None]), width)
    rows, cols = block_rows[hit], block_ids[hit] * width + offsets  # row-major: flat indices ascending
    logprobs = shifted[rows, cols] - log_total[rows]
    totals = logprobs + running_scores.reshape(-1)[rows]
    items, beams = np.divmod(rows, k)
    order = np.lexsort((beams * vocab + cols, -totals, items))  # by item, total descending, index
    starts = np.searchsorted(items, np.arange(b))  # items ascending; each has more than count candidates
    pick = order[starts[:, None] + np.arange(count)]  # [B, count]
    # proof: a left-out logit's total is at most its row's smallest candidate total (monotonicity)
    smallest = np.minimum.reduceat(totals, np.searchsorted(rows, np.arange(n)))  # [N]: rows ascending
    if not (smallest < np.repeat(totals[pick[:, -1]], k)).all():
        return None
    return Candidates(totals[pick], beams[pick], cols[pick], logprobs[pick])


def _forced_continuations(running_scores: np.ndarray, count: int, vocab: int, forced: int) -> Candidates:
    """Every row's log-probabilities are 0 at ``forced`` and -inf elsewhere: the finite totals are the
    running scores; -inf ties go to the lowest flat indices, so only the first ``count + k`` can win."""
    k = running_scores.shape[1]
    flat = np.union1d(np.arange(min(count + k, k * vocab)), np.arange(k) * vocab + forced)
    beams, cols = np.divmod(flat, vocab)
    is_forced = cols == forced
    totals = np.where(is_forced, running_scores[:, beams], NEG_INF).astype(np.float32)
    order = np.argsort(-totals, axis=1, kind="stable")[:, :count]
    chosen = is_forced[order]
    logprobs = np.where(chosen, np.float32(0.0), NEG_INF).astype(np.float32)
    return Candidates(np.take_along_axis(totals, order, axis=1), beams[order], cols[order], logprobs)
