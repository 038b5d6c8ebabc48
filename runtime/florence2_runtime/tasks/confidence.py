"""Confidence scores of an answer's objects: one definition, here.

**The score of an object** (a box, an OCR quad box, a polygon object, or a whole text answer) weighs two
parts of it equally, *what it says* (its label, its OCR text, the text of a text answer) and *where it is*
(its location tokens)::

    part(tokens) = exp(mean(log p(token) for token in tokens))         # geometric mean of probabilities
    score        = sqrt(part(what) * part(where))                      # both parts present
                 = part(what) or part(where)                           # only one (text answers: what)

- The tokens of a part: the generated tokens whose characters in the decoded text overlap the characters
  the post-processor read that part from (:func:`.postprocess.parse_with_spans`): a box's label and its four
  ``<loc_>`` tokens (boxes that share a phrase share its label); an OCR line's text and its eight ``<loc_>``
  tokens; a polygon object's label and its ``<loc_>`` / ``<sep>`` / ``<poly>`` tokens; every token of a text
  answer. The ``<s>`` / ``</s>`` the post-processor strips are in no part (a forced BOS or the EOS never
  counts). A label-less object (region proposals, most segmentation answers) has only its location part.
- ``log p(token)``: the token's transition score as transformers' ``compute_transition_scores`` gives it
  (:mod:`florence2_runtime.generation.scores`): the log-softmax of the processed logits for greedy search,
  the processed log-probability for beam search (the probability of the chosen token under the logit
  filters in force, e.g. no-repeat n-grams).

Why two parts: a location token is one of 1000 bins and neighbouring bins share the probability, so its
probability is small even when the box is right, and there are four of them per box against one or two label
tokens. Averaging over all tokens would let the location drown the label; each part on its own ranks worse
than both (``benchmarks/results/scores_tiny.md``: on the trained toy model the two-part score separates right
from wrong boxes best across ``<OD>``, open-vocabulary detection and grounding). The scores rank and
threshold detections; they are not calibrated probabilities (a right box of the toy model scores ~0.1).

A score is in (0, 1]; an object written by no token (an empty text) has ``None``.

``with_scores(answer, spans, offsets, logprobs)`` adds the scores to a post-processed answer:

- shape answers (boxes, quad boxes, polygons): a ``"scores"`` list parallel to the objects, in the order
  ``bboxes``, ``quad_boxes``, ``polygons`` (``<OPEN_VOCABULARY_DETECTION>``: its bboxes, then its polygons);
- text answers: ``{"text": answer, "scores": score}`` (the answer string cannot carry a key).

``without_scores(answer)`` gives the answer back as ``run`` gives it without scores; ``drop_below(answer,
min_score)`` leaves out the objects scored below ``min_score`` (with their labels and scores).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .postprocess import ObjectSpans, Span

__all__ = [
    "SCORES_KEY",
    "drop_below",
    "object_score",
    "object_scores",
    "text_and_score",
    "with_scores",
    "without_scores",
]

SCORES_KEY = "scores"
OBJECT_LISTS = ("bboxes", "quad_boxes", "polygons")  # the order of an answer's scores


def object_score(spans: ObjectSpans, offsets: np.ndarray, logprobs: np.ndarray) -> float | None:
    """The score of one object (module docstring): ``spans`` its parts' [start, end) characters of the
    decoded text; ``offsets`` int64 [T + 1] (token ``k`` wrote characters ``offsets[k]:offsets[k + 1]``);
    ``logprobs`` float32 [T], the tokens' transition scores (NaN for a token without one, e.g. the decoder
    start token: never counted)."""
    parts = [_part_logprob((spans.what,), offsets, logprobs), _part_logprob(spans.where, offsets, logprobs)]
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return math.exp(sum(present) / len(present))


def _part_logprob(spans: Sequence[Span], offsets: np.ndarray, logprobs: np.ndarray) -> float | None:
    """The mean log-probability of the tokens whose characters overlap ``spans``; None for no token."""
    starts, ends = offsets[:-1], offsets[1:]
    used = np.zeros(len(starts), dtype=bool)
    for start, end in spans:
        if end > start:
            used |= (starts < end) & (ends > start)
    values = logprobs[used & ~np.isnan(logprobs)]
    return float(np.mean(values, dtype=np.float64)) if values.size else None


def object_scores(
    spans: Sequence[ObjectSpans], offsets: np.ndarray, logprobs: np.ndarray
) -> list[float | None]:
    """:func:`object_score` of every object, in order."""
    return [object_score(s, offsets, logprobs) for s in spans]


def with_scores(answer: Any, spans: Sequence[ObjectSpans], offsets: np.ndarray, logprobs: np.ndarray) -> Any:
    """A post-processed answer with its objects' scores (see the module docstring for the shapes)."""
    scores = object_scores(spans, offsets, logprobs)
    if isinstance(answer, str):
        return {"text": answer, SCORES_KEY: scores[0] if scores else None}
    return {**answer, SCORES_KEY: scores}


def text_and_score(answer: Any) -> tuple[Any, float | None]:
    """A text task's answer with or without its score -> (the text, the score or None)."""
    if isinstance(answer, dict) and set(answer) == {"text", SCORES_KEY}:
        return answer["text"], answer[SCORES_KEY]
    return answer, None


def without_scores(answer: Any) -> Any:
    """An answer with or without scores -> the answer ``run`` gives without ``scores=True``."""
    text, _ = text_and_score(answer)
    if text is not answer:  # {"text": ..., "scores": ...}
        return text
    if isinstance(answer, Mapping) and SCORES_KEY in answer:
        return {k: v for k, v in answer.items() if k != SCORES_KEY}
    return answer


def drop_below(answer: Any, min_score: float) -> Any:
    """A scored shape answer without the objects scored below ``min_score`` (or scored None), each taking
    its label and score with it; text answers (and answers without scores) as they are. An object list's
    labels are ``<list>_labels`` where the answer has that key (open-vocabulary detection), else ``labels``."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get(SCORES_KEY), list):
        return answer
    out, kept_scores, at = dict(answer), [], 0
    for key in (k for k in OBJECT_LISTS if k in answer):
        labels_key = f"{key}_labels" if f"{key}_labels" in answer else "labels"
        items = list(answer[key])
        scores = answer[SCORES_KEY][at : at + len(items)]
        at += len(items)
        keep = [s is not None and s >= min_score for s in scores]
        out[key] = [v for v, k in zip(items, keep) if k]
        if labels_key in answer:
            out[labels_key] = [v for v, k in zip(answer[labels_key], keep) if k]
        kept_scores += [s for s, k in zip(scores, keep) if k]
    out[SCORES_KEY] = kept_scores
    return out
