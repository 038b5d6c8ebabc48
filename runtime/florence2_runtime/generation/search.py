"""Greedy and beam-search generation for an encoder-decoder model, with numpy only.

Reproduces the token ids of transformers 5.23 ``generate()`` (``_sample`` with ``do_sample=False`` and
``_beam_search``) for the options Florence-2 uses. The model is reached through the :class:`Inference`
protocol; everything here is bookkeeping on numpy arrays. The options are :mod:`.options`'s
``DecodingOptions``; the logit filters, ``log_softmax`` and ``top_k`` live in :mod:`.logits`, beam
search's candidate selection in :mod:`.candidates`, token scores (``output_scores``) in :mod:`.scores`.

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
- Scores (``output_scores``): greedy keeps the processed logits of each step, beam search the processed
  log-probabilities, and ``beam_indices`` follow each hypothesis like its tokens (-1 past its end).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

import numpy as np

from ..errors import Florence2Error
from .candidates import best_continuations
from .logits import FORCING, build_logit_filters, forced_token, top_k
from .options import PROMPT_LENGTH, DecodingOptions, check_int
from .scores import GenerateOutput, ScoredSequence, StepScores, scored_sequences, transition_scores

PLACEHOLDER = np.float32(-1.0e9)  # transformers' "very negative" score for empty and masked beams


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


class Step(NamedTuple):
    """What a decoder's ``update`` returns."""

    tokens: np.ndarray  # int64 [N, T + 1]: the sequences to feed next
    source_indices: np.ndarray | None  # int64 [N]: cache row each new row continues; None: unchanged
    done: bool  # no further step is needed


class Decoder(Protocol):
    """One search strategy's state between steps (:class:`GreedyDecoder`, :class:`BeamSearchDecoder`)."""

    def initial_tokens(self) -> np.ndarray:
        """int64 [N, 1]: the decoder prompt of every row."""
        ...

    def update(self, tokens: np.ndarray, logits: np.ndarray) -> Step:
        """tokens int64 [N, T] and their next-token logits float32 [N, V] -> the next :class:`Step`."""
        ...

    def finalize(self, tokens: np.ndarray) -> GenerateOutput:
        """The output ids int64 [B, L] (and the scores, if kept), given the last ``update``'s tokens."""
        ...


class GreedyDecoder:
    """Greedy search as transformers' ``_sample`` with ``do_sample=False``.

    output_scores: keep each step's log-softmax of the processed logits at the appended token.
    """

    def __init__(self, options: DecodingOptions, batch_size: int, output_scores: bool = False):
        self.options = options
        self.filters = build_logit_filters(options)
        self.unfinished = np.ones(batch_size, dtype=bool)
        self.batch_size = batch_size
        self.steps: list[StepScores] | None = [] if output_scores else None
        self.rows = np.arange(batch_size, dtype=np.int64)[:, None]

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
        if self.steps is not None:
            chosen = _log_softmax_at(scores, next_tokens)
            self.steps.append(StepScores(self.rows, next_tokens[:, None], chosen[:, None]))
        tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
        done = tokens.shape[1] >= opts.max_length or not self.unfinished.any()
        return Step(tokens, None, done)

    def finalize(self, tokens: np.ndarray) -> GenerateOutput:
        """The last ``update``'s tokens are the output: int64 [B, L]."""
        if self.steps is None:
            return GenerateOutput(tokens)
        return GenerateOutput(tokens, transition_scores(tokens, self.steps))


def _log_softmax_at(scores: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """float32 [N, V], int64 [N] -> ``log_softmax(scores)[i, tokens[i]]`` float32 [N] (-inf rows stay
    -inf: forced and banned tokens)."""
    top = scores.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a row of -inf only: NaN, as torch
        e = np.subtract(scores, top[:, None])
        total = np.exp(e, out=e).sum(axis=1)  # float32, pairwise: ~1e-7 relative
        chosen = scores[np.arange(len(tokens)), tokens]
        return (chosen.astype(np.float64) - top - np.log(total.astype(np.float64))).astype(np.float32)


class BeamSearchDecoder:
    """Beam search as transformers' ``_beam_search`` (``do_sample=False``, one returned sequence per item).

    State, per batch item ``b`` and beam slot: running sequences (as long as the decoded prefix) and
    their summed log-probabilities, and the ``num_beams`` best finished hypotheses (at full
    ``max_length`` width, filled with the output pad value, as transformers stores them) with their
    length-penalised scores. output_scores: also keep each step's candidate log-probabilities and
    every hypothesis' ``beam_indices``.
    """

    def __init__(self, options: DecodingOptions, batch_size: int, output_scores: bool = False):
        self.options = options
        filters = build_logit_filters(options)
        self.masks = [f for f in filters if not isinstance(f, FORCING)]  # only set -inf
        self.filters = filters
        self.batch_size = b = batch_size
        self.num_beams = k = options.num_beams
        self.candidates = 2 * k  # transformers: max(2, 1 + number of EOS ids) * num_beams
        eos, pad = options.eos_token_id, options.pad_token_id
        fill = -1 if eos is None else (pad or eos)  # `pad or eos`: a pad id of 0 is replaced by EOS
        self.running = np.full((b, k, PROMPT_LENGTH), options.decoder_start_token_id, dtype=np.int64)
        self.running_scores = np.zeros((b, k), dtype=np.float32)
        self.running_scores[:, 1:] = PLACEHOLDER  # only beam 0 is live at first
        self.finished = np.full((b, k, options.max_length), fill, dtype=np.int64)
        self.finished[:, :, :PROMPT_LENGTH] = options.decoder_start_token_id
        self.finished_scores = np.full((b, k), PLACEHOLDER, dtype=np.float32)
        self.finished_lengths = np.zeros((b, k), dtype=np.int64)  # generated tokens, EOS included
        self.is_finished = np.zeros((b, k), dtype=bool)
        self.improvable = np.ones(b, dtype=bool)  # transformers' is_early_stop_heuristic_unsatisfied
        self.cur_len = PROMPT_LENGTH
        self.items = np.arange(b, dtype=np.int64)[:, None]  # indexes [B, ...] arrays item by item
        self.item_rows = self.items * k  # flat row of each item's beam 0
        self.steps: list[StepScores] | None = None
        if output_scores:  # beam indices: [B, k, generated so far] running, [B, k, max new] finished
            self.steps = []
            self.running_beams = np.zeros((b, k, 0), dtype=np.int64)
            self.finished_beams = np.full((b, k, options.max_new_tokens), -1, dtype=np.int64)

    def initial_tokens(self) -> np.ndarray:
        return self.running.reshape(-1, self.cur_len)

    def update(self, tokens: np.ndarray, logits: np.ndarray) -> Step:
        """tokens [B*k, T], logits [B*k, V] -> the running sequences with one more token."""
        opts, b, k, cur = self.options, self.batch_size, self.num_beams, self.cur_len
        forced = forced_token(self.filters, cur, logits.shape[1])
        found = best_continuations(logits, tokens, self.running_scores, self.candidates, self.masks, forced)
        scores, beam, token = found.totals, found.beams, found.tokens

        # the top 2k continuations over all beams of an item, as sequences [B, 2k, cur + 1]
        items = self.items
        sequences = np.empty((b, self.candidates, cur + 1), dtype=np.int64)
        sequences[:, :, :cur] = self.running[items, beam]
        sequences[:, :, cur] = token
        stops = np.full(token.shape, cur + 1 >= opts.max_length)
        if opts.eos_token_id is not None:
            stops |= token == opts.eos_token_id
        beams = None
        if self.steps is not None:
            self.steps.append(StepScores(self.item_rows + beam, token, found.logprobs))
            beams = np.empty((b, self.candidates, cur + 1 - PROMPT_LENGTH), dtype=np.int64)
            beams[:, :, :-1] = self.running_beams[items, beam]
            beams[:, :, -1] = self.item_rows + beam

        # the best k that did not stop keep running
        masked = scores + stops.astype(np.float32) * PLACEHOLDER
        keep = top_k(masked, k)[1]
        self.running = sequences[items, keep]
        self.running_scores = masked[items, keep]
        if beams is not None:
            self.running_beams = beams[items, keep]
        source = (self.item_rows + beam[items, keep]).reshape(-1)

        self._update_finished(sequences, beams, scores, stops, generated=cur + 1 - PROMPT_LENGTH)
        self.cur_len = cur = cur + 1
        self.improvable = self._early_stop_unsatisfied()
        done = not (
            self.improvable.any()
            and not (self.is_finished.all() and opts.early_stopping is True)
            and not stops.all()
        )
        return Step(self.running.reshape(b * k, cur), source, done)

    def _update_finished(
        self,
        sequences: np.ndarray,
        beams: np.ndarray | None,
        scores: np.ndarray,
        stops: np.ndarray,
        generated: int,
    ) -> None:
        """Merge the candidates among the first k that just stopped into the k best finished hypotheses.

        Only the first ``PROMPT_LENGTH + generated`` columns can differ between hypotheses (the rest is
        padding in all of them), so only those are merged. When no candidate can enter (each item's
        best candidate at most its worst finished score; ties keep the finished one, which comes first),
        the merge is the identity and is skipped.
        """
        k, opts = self.num_beams, self.options
        just_finished = stops.copy()
        just_finished[:, k:] = False  # only the top k candidates may finish
        if not just_finished.any() and self.finished_scores.min() >= PLACEHOLDER:
            return  # every candidate would score <= 0 + PLACEHOLDER: none can enter
        penalised = scores / _length_factor(generated, opts.length_penalty)
        full = np.logical_and(self.is_finished.all(axis=1), opts.early_stopping is True)
        penalised += full[:, None].astype(np.float32) * PLACEHOLDER
        penalised += (~self.improvable)[:, None].astype(np.float32) * PLACEHOLDER
        penalised += (~just_finished).astype(np.float32) * PLACEHOLDER
        if (penalised.max(axis=1) <= self.finished_scores.min(axis=1)).all():
            return

        merged_scores = np.concatenate([self.finished_scores, penalised], axis=1)
        best = top_k(merged_scores, k)[1]
        width = sequences.shape[2]
        lengths = np.concatenate([self.finished_lengths, np.full(scores.shape, generated, np.int64)], axis=1)
        flags = np.concatenate([self.is_finished, just_finished], axis=1)
        merged = np.concatenate([self.finished[:, :, :width], sequences], axis=1)
        items = self.items
        self.finished[:, :, :width] = merged[items, best]
        self.finished_scores = merged_scores[items, best]
        self.finished_lengths = lengths[items, best]
        self.is_finished = flags[items, best]
        if beams is not None:
            merged = np.concatenate([self.finished_beams[:, :, :generated], beams], axis=1)
            self.finished_beams[:, :, :generated] = merged[items, best]

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

    def finalize(self, tokens: np.ndarray | None = None) -> GenerateOutput:
        """The best finished hypothesis per item, cut to the longest of them: int64 [B, L]; with
        output_scores, its transition scores, score and beam indices."""
        generated = int(self.finished_lengths[:, 0].max())
        sequences = self.finished[:, 0, : PROMPT_LENGTH + generated].copy()
        if self.steps is None:
            return GenerateOutput(sequences)
        beam_indices = self.finished_beams[:, 0, :generated].copy()
        return GenerateOutput(
            sequences,
            transition_scores(sequences, self.steps, beam_indices),
            self.finished_scores[:, 0].copy(),
            beam_indices,
        )


def _length_factor(length: int, length_penalty: float) -> float:
    """``length ** length_penalty`` as a Python float: numpy then rounds it to float32 before dividing a
    float32 array, as torch does with a Python scalar."""
    return float(length) ** float(length_penalty)


_DECODERS: Mapping[bool, Callable[[DecodingOptions, int, bool], Decoder]] = {  # keyed by "num_beams == 1"
    True: GreedyDecoder,
    False: BeamSearchDecoder,
}


class NonFiniteLogitsError(Florence2Error, ValueError):
    """The decoder returned NaN logits (numerical overflow in the graphs)."""


def generate(inference: Inference, batch_size: int, options: DecodingOptions) -> np.ndarray:
    """Decode ``batch_size`` items; returns int64 [batch, L] as ``model.generate()`` does.

    ``inference`` holds ``batch_size * options.num_beams`` rows (beams of an item contiguous).
    """
    return generate_output(inference, batch_size, options).sequences


def generate_output(
    inference: Inference, batch_size: int, options: DecodingOptions, output_scores: bool = False
) -> GenerateOutput:
    """:func:`generate` as ``generate(..., return_dict_in_generate=True, output_scores=output_scores)``:
    the ids and, with ``output_scores``, the transition scores (:mod:`.scores`)."""
    check_int("batch_size", batch_size, minimum=1)
    options.validate()
    decoder = _DECODERS[options.num_beams == 1](options, batch_size, output_scores)
    rows = batch_size * options.num_beams
    identity = np.arange(rows)
    tokens = decoder.initial_tokens()
    while True:
        logits = inference.logits(tokens)
        if getattr(logits, "ndim", 0) != 2 or logits.shape[0] != rows:
            raise ValueError(
                f"Inference.logits returned shape {getattr(logits, 'shape', None)}, expected [{rows}, vocab]"
            )
        if np.isnan(logits.max()):  # max propagates NaN; silent garbage (or a crash in top-k) otherwise
            raise NonFiniteLogitsError(
                f"the model produced NaN logits at decoder length {tokens.shape[1]} (an overflow: e.g. an fp16 "
                "graph whose activations exceed the fp16 range; try the fp32 export)"
            )
        tokens, source, done = decoder.update(tokens, logits)
        if done:  # a final cache reorder would be wasted
            return decoder.finalize(tokens)
        if source is not None and not np.array_equal(source, identity):
            inference.rearrange_kv_cache(source)


def generate_scored(inference: Inference, batch_size: int, options: DecodingOptions) -> list[ScoredSequence]:
    """:func:`generate` with each row's generated ids and their log-probabilities (the transition scores of
    the returned hypothesis; decoder start token and padding removed): the task-level entry for
    per-object confidences, called where the task layer calls :func:`generate`."""
    return scored_sequences(
        generate_output(inference, batch_size, options, output_scores=True), options.eos_token_id
    )
