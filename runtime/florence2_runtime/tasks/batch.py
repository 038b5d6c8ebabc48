"""Task-level generation: defaults that give full answers, one vision encoding for many prompts.

Every task-level call (``Florence2.run``, ``predict``, ``predict_regions``, ``run_tasks``, the per-task
methods of :mod:`.methods`, ``florence2 run``, the server) goes through here:

- :func:`decoding_options`: a model's generation defaults (``generation_config.json``) overridden by
  ``generate()``-style keywords, checked against the decoder's positions.
- :func:`task_generation_kwargs` / :func:`task_decoding_options`: without ``max_new_tokens`` /
  ``max_length``, generation runs up to :data:`TASK_MAX_NEW_TOKENS` (1024, what every Florence-2 model card
  passes), capped by the decoder's position table; the checkpoint's other settings (3 beams,
  no-repeat-ngram 3 for Florence-2) stay. ``Florence2.generate`` keeps transformers' bare defaults (20
  tokens): it is the token-exact mirror.
- :func:`answer_prompts`: (encoded image, task, processor text) items -> post-processed dicts. Items
  are run as batches over already-encoded images: the text encoder and the decoder see the whole batch,
  the vision encoder nothing. Each row is cut after its first EOS, so a batched answer equals the
  answer of the same prompt run alone.
- :func:`task_items`: the task list of ``run_tasks`` (strings, ``(task, text)`` / ``(task, region)``
  pairs or dicts) checked and normalised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..generation import DecodingOptions, ScoredSequence, generate, generate_scored
from ..inputs.encoded import EncodedImage
from ..inputs.image_size import ImageSize
from .confidence import SCORES_KEY, with_scores
from .postprocess import parse_type_of, parse_with_spans, post_process_generation
from .prompts import build_task_text, check_task_input, encode_prompts

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.config import RuntimeConfig
    from ..engine.interface import Engine
    from ..inputs.tokenizer import Florence2Tokenizer

__all__ = [
    "MAX_BATCH",
    "TASK_MAX_NEW_TOKENS",
    "PromptItem",
    "PromptModel",
    "TaskInput",
    "answer_prompts",
    "decoding_options",
    "merge_class_answers",
    "task_decoding_options",
    "task_generation_kwargs",
    "task_items",
    "trim_after_eos",
]

TASK_MAX_NEW_TOKENS = 1024  # the model cards' generate(max_new_tokens=1024, num_beams=3)
LENGTH_OPTIONS = ("max_new_tokens", "max_length")
MAX_BATCH = 8  # prompts per generate call: bounds the KV cache (rows = prompts * beams) of long answers


class PromptModel(Protocol):
    """What the task layer reads of a model (``Florence2``'s read-only parts)."""

    @property
    def config(self) -> RuntimeConfig: ...

    @property
    def generation_config(self) -> Mapping[str, Any]: ...

    @property
    def tokenizer(self) -> Florence2Tokenizer: ...

    @property
    def engine(self) -> Engine: ...


def decoding_options(model: PromptModel, **generation_kwargs: Any) -> DecodingOptions:
    """The model's generation defaults overridden by ``generation_kwargs`` (transformers' names); a
    ``ValueError`` when the decoder's position table cannot hold ``max_new_tokens``."""
    options = DecodingOptions.from_generation_config(model.generation_config, **generation_kwargs)
    positions = model.config.max_position_embeddings
    if options.max_length > positions:
        raise ValueError(
            f"max_new_tokens={options.max_new_tokens} is too large: the decoder has "
            f"{positions} positions, so at most {positions - 1} new tokens"
        )
    return options


def task_generation_kwargs(generation_kwargs: Mapping[str, Any], max_position_embeddings: int) -> dict:
    """``generation_kwargs`` with the task-level length default: ``max_new_tokens`` =
    min(1024, positions - 1) unless the call sets ``max_new_tokens`` or ``max_length`` itself."""
    kwargs = dict(generation_kwargs)
    if all(kwargs.get(name) is None for name in LENGTH_OPTIONS):
        kwargs.pop("max_length", None)
        kwargs["max_new_tokens"] = min(TASK_MAX_NEW_TOKENS, max_position_embeddings - 1)
    return kwargs


def task_decoding_options(model: PromptModel, **generation_kwargs: Any) -> DecodingOptions:
    """:func:`decoding_options` with the task-level length default (:func:`task_generation_kwargs`)."""
    positions = model.config.max_position_embeddings
    return decoding_options(model, **task_generation_kwargs(generation_kwargs, positions))


@dataclass(frozen=True)
class PromptItem:
    """One prompt on one encoded image: ``task`` post-processes ``prompt`` (build_task_text's output)."""

    encoded: EncodedImage
    task: str
    prompt: str


@dataclass(frozen=True)
class TaskInput:
    """One entry of a task list: a task token and its input (text or a region), if it takes one."""

    task: str
    text: str | None = None
    region: Sequence[float] | None = None

    def prompt(self, image_size: ImageSize, region_format: str = "pixels") -> str:
        return build_task_text(self.task, self.text, self.region, image_size, region_format=region_format)


def task_items(tasks: Any, region_format: str = "pixels") -> list[TaskInput]:
    """``run_tasks``' task list -> checked :class:`TaskInput` s (ValueError names the bad entry).

    Entries: ``"<OD>"``; ``("<CAPTION_TO_PHRASE_GROUNDING>", "a car")``; ``("<REGION_TO_CATEGORY>",
    (x1, y1, x2, y2))``; ``{"task": ..., "text": ..., "region": ...}``. A task may appear once (the
    answer is a dict keyed by task).
    """
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
        raise ValueError(
            f"tasks must be a list of task tokens, e.g. ['<CAPTION>', '<OD>'], got {tasks!r:.100}"
        )
    items = [_task_input(entry, i) for i, entry in enumerate(tasks)]
    if not items:
        raise ValueError("tasks is empty: give at least one task, e.g. ['<CAPTION>']")
    seen: set[str] = set()
    for i, item in enumerate(items):
        try:
            check_task_input(item.task, item.text, item.region, region_format=region_format)
        except ValueError as e:  # run() passes one task: no index to name
            raise ValueError(f"tasks[{i}]: {e}" if len(items) > 1 else str(e)) from None
        if item.task in seen:
            raise ValueError(
                f"tasks[{i}]: {item.task} is listed twice; the answer holds one entry per task "
                "(several regions: predict_regions; several classes: detect_objects(classes=...))"
            )
        seen.add(item.task)
    return items


def _task_input(entry: Any, i: int) -> TaskInput:
    if isinstance(entry, TaskInput):
        return entry
    if isinstance(entry, str):
        return TaskInput(entry)
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - {"task", "text", "region"})
        if unknown or "task" not in entry:
            raise ValueError(
                f"tasks[{i}] must have 'task' and at most 'text' or 'region', got keys {sorted(entry)}"
            )
        return TaskInput(entry["task"], entry.get("text"), entry.get("region"))
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        task, value = entry
        return (
            TaskInput(task, text=value)
            if isinstance(value, str) or value is None
            else TaskInput(task, region=value)
        )
    raise ValueError(
        f"tasks[{i}] must be a task token, a (task, text or region) pair or a dict, got {entry!r:.100}"
    )


def trim_after_eos(row: np.ndarray, eos_token_id: int | None) -> np.ndarray:
    """int64 [L] -> the row up to and including its first EOS after the start token (padding removed)."""
    if eos_token_id is None:
        return row
    hits = np.flatnonzero(row[1:] == eos_token_id)
    return row[: hits[0] + 2] if hits.size else row


def answer_prompts(
    model: PromptModel, items: Sequence[PromptItem], options: DecodingOptions, *, scores: bool = False
) -> list[dict]:
    """Every item's ``post_process_generation`` dict, equal to running it alone; batches of MAX_BATCH
    prompts over the already-encoded images (no vision encoder run here). ``scores``: each answer also
    holds its objects' confidences (:func:`.confidence.with_scores`); the answers are otherwise the same."""
    answers: list[dict] = []
    banned = model.config.banned_grounding_tokens or None
    for start in range(0, len(items), MAX_BATCH):
        batch = items[start : start + MAX_BATCH]
        features = np.stack([item.encoded.features for item in batch])  # [B, I, D]
        text_ids, text_mask = encode_prompts(model.tokenizer, model.config, [item.prompt for item in batch])
        inference = model.engine.start(features, text_ids, text_mask, options.num_beams)
        if scores:
            rows = generate_scored(inference, len(batch), options)
            answers += [_scored_answer(model, item, row, options, banned) for item, row in zip(batch, rows)]
            continue
        ids = generate(inference, len(batch), options)
        rows_ids = [trim_after_eos(row, options.eos_token_id) for row in ids] if len(batch) > 1 else list(ids)
        texts = model.tokenizer.batch_decode(rows_ids)
        answers += [
            post_process_generation(text, item.task, item.encoded.image_size, banned_grounding_tokens=banned)
            for text, item in zip(texts, batch)
        ]
    return answers


def _scored_answer(
    model: PromptModel,
    item: PromptItem,
    row: ScoredSequence,
    options: DecodingOptions,
    banned: Iterable[str] | None,
) -> dict:
    """One generated row -> ``{task: answer with scores}``: the row's text (the decoder start token, then
    the generated ids through the first EOS, as the unscored path decodes it), where each token's characters
    are, and the post-processor's spans of each object."""
    text, offsets = model.tokenizer.decode_with_offsets([options.decoder_start_token_id, *row.ids.tolist()])
    logprobs = np.concatenate([[np.nan], row.logprobs]).astype(np.float32)  # the start token has none
    answer, spans = parse_with_spans(
        text, parse_type_of(item.task), item.encoded.image_size, banned_grounding_tokens=banned
    )
    return {item.task: with_scores(answer, spans, offsets, logprobs)}


# Open-vocabulary detection answers: which list each label list belongs to.
_LABELLED = (("bboxes", "bboxes_labels"), ("polygons", "polygons_labels"))


def merge_class_answers(task: str, classes: Sequence[str], answers: Sequence[Mapping[str, Any]]) -> dict:
    """One ``{task: answer}`` per class -> one dict: every class's boxes (and polygons) in class order,
    each labelled by its class (the model's own label text may differ from the class asked for). Answers
    with scores (bboxes' then polygons') give a merged ``scores`` list in the same order."""
    merged: dict[str, list] = {key: [] for pair in _LABELLED for key in pair}
    scored = [a[task] for a in answers if SCORES_KEY in a[task]]
    per_kind: dict[str, list] = {items_key: [] for items_key, _ in _LABELLED}
    for name, answer in zip(classes, answers):
        found = answer[task]
        taken = 0
        for items_key, labels_key in _LABELLED:
            values = list(found.get(items_key, []))
            merged[items_key] += values
            merged[labels_key] += [name] * len(values)
            if SCORES_KEY in found:
                per_kind[items_key] += list(found[SCORES_KEY][taken : taken + len(values)])
            taken += len(values)
    if scored:
        merged[SCORES_KEY] = [s for items_key, _ in _LABELLED for s in per_kind[items_key]]
    return {task: merged}
