"""Token scores as transformers returns them: ``generate(..., output_scores=True,
return_dict_in_generate=True)`` followed by ``compute_transition_scores``.

transformers keeps, per step, the processed scores of every row and token (``scores``: float32
[N, V] per step) and, for beam search, each returned token's source row (``beam_indices``).
A returned sequence can only gather the entries of the tokens that were chosen, so the decoders of
:mod:`.search` keep just those, when asked: :class:`StepScores` per step (one entry per row for greedy
search, the ``2 * num_beams`` candidates per item for beam search). :func:`transition_scores` is
``compute_transition_scores`` on them, a pure function:

- greedy: the log-softmax of the processed logits at the appended token (``normalize_logits=True``,
  as transformers' documentation shows for greedy search); rows that already finished append
  ``pad_token_id`` and get its score, as transformers' do (often -inf: forced or banned tokens);
- beam search: the processed log-probability of each token of the returned hypothesis
  (``normalize_logits=False``); positions past a hypothesis' end (``beam_indices`` -1) score 0.
  ``sequences_scores`` is the hypothesis' length-penalised sum, as transformers'.

:func:`scored_sequences` turns a :class:`GenerateOutput` into per-row generated ids with their
log-probabilities (padding removed), the input of per-object confidences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class StepScores(NamedTuple):
    """The entries of one step's scores that a returned token can gather: arrays [B, C].

    C is 1 for greedy search (row ``i``'s appended token) and ``2 * num_beams`` for beam search (the
    item's candidates); ``rows`` index the flattened ``batch * num_beams`` rows, as ``beam_indices`` do.
    """

    rows: np.ndarray  # int64: the row (beam) the entry belongs to
    tokens: np.ndarray  # int64: its token
    values: np.ndarray  # float32: its score


@dataclass(frozen=True)
class GenerateOutput:
    """What ``generate(..., return_dict_in_generate=True)`` returns (the fields this runtime has)."""

    sequences: np.ndarray  # int64 [B, L]: the token ids, as generate returns them
    transition_scores: np.ndarray | None = None  # float32 [B, L - 1]; None unless scores were asked for
    sequences_scores: np.ndarray | None = None  # float32 [B]: beam search with scores only
    beam_indices: np.ndarray | None = None  # int64 [B, L - 1], -1 past a hypothesis' end; as sequences_scores


@dataclass(frozen=True)
class ScoredSequence:
    """One row's generated tokens and their log-probabilities (the decoder start token excluded)."""

    ids: np.ndarray  # int64 [T]: generated tokens up to and including the first EOS; no padding
    logprobs: np.ndarray  # float32 [T]: each token's transition score (a log-probability, <= 0)
    score: float | None  # beam search: the sequence score (length-penalised sum); None for greedy


def transition_scores(
    sequences: np.ndarray, steps: Sequence[StepScores], beam_indices: np.ndarray | None = None
) -> np.ndarray:
    """transformers' ``compute_transition_scores(sequences, scores, beam_indices)`` on the kept entries.

    sequences int64 [B, L]; steps: one :class:`StepScores` per generation step; beam_indices int64
    [B, S] (-1 where a hypothesis had ended), None for greedy search (row ``i`` continues row ``i``).
    Returns float32 [B, S'], S' the longest hypothesis (every step for greedy): the score of
    ``sequences[i, L - S' + j]`` in row ``beam_indices[i, j]`` of step ``j``, 0 where that index is -1.
    """
    batch = sequences.shape[0]
    if beam_indices is None:
        beam_indices = np.broadcast_to(np.arange(batch, dtype=np.int64)[:, None], (batch, len(steps)))
    ended = beam_indices < 0
    length = int((~ended).sum(axis=1).max(initial=0))
    ended, wanted_rows = ended[:, :length], np.where(ended, 0, beam_indices)[:, :length]
    wanted_tokens = sequences[:, sequences.shape[1] - length :]
    if length == 0:
        return np.zeros((batch, 0), dtype=np.float32)
    rows = np.stack([step.rows for step in steps[:length]], axis=1)  # [B, S', C]
    tokens = np.stack([step.tokens for step in steps[:length]], axis=1)
    values = np.stack([step.values for step in steps[:length]], axis=1)
    hits = (rows == wanted_rows[:, :, None]) & (tokens == wanted_tokens[:, :, None])
    if not (hits.any(axis=2) | ended).all():
        raise ValueError("the step scores hold no entry for some (row, token) of the sequences")
    found = np.take_along_axis(values, hits.argmax(axis=2)[:, :, None], axis=2)[:, :, 0]
    return np.where(ended, np.float32(0.0), found).astype(np.float32)


def scored_sequences(output: GenerateOutput, eos_token_id: int | None) -> list[ScoredSequence]:
    """Per row: the generated ids after the decoder start token, cut after the first ``eos_token_id``
    (padding removed), with their transition scores. Needs ``output.transition_scores``."""
    if output.transition_scores is None:
        raise ValueError("this GenerateOutput has no transition scores: generate it with output_scores=True")
    generated = output.sequences[:, 1:]
    rows = []
    for i, (ids, logprobs) in enumerate(zip(generated, output.transition_scores)):
        hits = np.flatnonzero(ids == eos_token_id) if eos_token_id is not None else np.zeros(0, np.int64)
        end = int(hits[0]) + 1 if hits.size else len(ids)
        score = None if output.sequences_scores is None else float(output.sequences_scores[i])
        rows.append(ScoredSequence(ids[:end].copy(), logprobs[:end].copy(), score))
    return rows
