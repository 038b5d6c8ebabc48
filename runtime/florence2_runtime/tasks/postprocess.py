"""Turn decoded Florence-2 text into task results, like ``Florence2Processor.post_process_generation``.

Input is ``batch_decode(ids, skip_special_tokens=False)[i]``; output is ``{task: answer}`` with the same
keys, values and Python types transformers 5.x gives, quirks included:

- a task's parser is its ``parse_type`` in the task table (:data:`.table.TASKS`); a task not in the table
  is parsed as pure text;
- the processor looks up its config keys upper-case ("PATTERN", "AREA_THRESHOLD") while the published
  config stores them lower-case, so the built-in OCR pattern and an area threshold of 0 always apply;
- a location bin ``b`` maps back to ``int((b + 0.5) * (size / 1000))`` computed in *float32* (torch
  tensors, :func:`.locations.dequantize`), which differs from float64 arithmetic for some (bin, size)
  pairs, e.g. bin 312 at 144 px;
- box labels lose their non-ASCII characters (after stripping, so spaces next to them can remain);
  OCR and polygon labels keep them;
- grounding phrases in the banned list are dropped (before the ASCII filter);
- a polygon with an odd number of coordinates loses the last one; a single location gives ``[]``;
- ``<OPEN_VOCABULARY_DETECTION>`` uses the polygon parser when the text contains ``<poly>``;
- no ``scores`` key is ever produced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..inputs.image_size import ImageSize
from .locations import BOX_BINS, LOC_BIN, LOC_TOKEN, dequantize
from .table import TASKS

__all__ = [
    "DEFAULT_BANNED_GROUNDING_TOKENS",
    "PARSE_TYPES",
    "TASK_PARSE_TYPES",
    "dequantize",
    "parse",
    "post_process_generation",
]

FALLBACK_PARSE_TYPE = "pure_text"  # of a task not in the table

# transformers' ``Florence2Processor.tasks_answer_post_processing_type``, read from the task table
TASK_PARSE_TYPES: Mapping[str, str] = MappingProxyType(
    {token: spec.parse_type for token, spec in TASKS.items()}
)

# post_processor_config["phrase_grounding"]["banned_grounding_tokens"] of the published checkpoints.
DEFAULT_BANNED_GROUNDING_TOKENS: tuple[str, ...] = (
    "it",
    "I",
    "me",
    "mine",
    "you",
    "your",
    "yours",
    "he",
    "him",
    "his",
    "she",
    "her",
    "hers",
    "they",
    "them",
    "their",
    "theirs",
    "one",
    "oneself",
    "we",
    "us",
    "our",
    "ours",
    "you",
    "your",
    "yours",
    "they",
    "them",
    "their",
    "theirs",
    "mine",
    "yours",
    "his",
    "hers",
    "its",
    "ours",
    "yours",
    "theirs",
    "myself",
    "yourself",
    "himself",
    "herself",
    "itself",
    "ourselves",
    "yourselves",
    "themselves",
    "this",
    "that",
    "these",
    "those",
    "who",
    "whom",
    "whose",
    "which",
    "what",
    "who",
    "whom",
    "whose",
    "which",
    "that",
    "all",
    "another",
    "any",
    "anybody",
    "anyone",
    "anything",
    "each",
    "everybody",
    "everyone",
    "everything",
    "few",
    "many",
    "nobody",
    "none",
    "one",
    "several",
    "some",
    "somebody",
    "someone",
    "something",
    "each other",
    "one another",
    "myself",
    "yourself",
    "himself",
    "herself",
    "itself",
    "ourselves",
    "yourselves",
    "themselves",
    "the image",
    "image",
    "images",
    "the",
    "a",
    "an",
    "a group",
    "other objects",
    "lots",
    "a set",
)

# --- token grammar of the generated text -------------------------------------------------------------
_LOC = LOC_TOKEN
_POLY_TOKENS = "|".join([_LOC, re.escape("<sep>"), re.escape("<poly>"), re.escape("</poly>")])
# a phrase = a run of non-'<' characters followed by >= 4 location (or polygon) tokens
_PHRASE_WITH_BOXES = re.compile(rf"[^<]+(?:{_LOC}){{4,}}")
_BARE_BOXES = re.compile(rf"(?:{_LOC}){{4,}}")
_PHRASE_WITH_POLYGONS = re.compile(rf"[^<]+(?:{_POLY_TOKENS}){{4,}}")
_BARE_POLYGONS = re.compile(rf"(?:{_POLY_TOKENS}){{4,}}")
# the label: everything up to the first box-ish token; '.' stops at '\n', so such phrases are dropped
_STOPS = ["<od>", "</od>", "<box>", "</box>", "<bbox>", "</bbox>", "<loc_"]
_BOX_LABEL = re.compile(r"^\s*.*?(?=" + "|".join(map(re.escape, _STOPS)) + ")")
_POLYGON_LABEL = re.compile(r"^\s*.*?(?=" + "|".join(map(re.escape, _STOPS + ["<poly>"])) + ")")
_LEADING_LOC = re.compile(rf"^{_LOC}")
_POLY_BODY = re.compile(r"<poly>(.*?)</poly>")
_POLY_RUN = re.compile(rf"((?:{_LOC})+)(?:<sep>|$)")
_OCR_LINE = re.compile(r"(.+?)" + r"<loc_(\d+)>" * 8)


@dataclass(frozen=True)
class _Context:
    image_size: ImageSize | None  # None only for pure text
    banned: frozenset[str]

    @property
    def size(self) -> ImageSize:
        """The image size of a parse type that needs one (``parse`` checked it; None only for pure text)."""
        if self.image_size is None:
            raise ValueError("this task's answer has coordinates: it needs image_size=(width, height)")
        return self.image_size


def _strip_specials(text: str) -> str:
    """Remove ``<s>``, ``</s>``, ``<pad>`` in that order (the order matters for overlapping leftovers)."""
    return text.replace("<s>", "").replace("</s>", "").replace("<pad>", "")


def _ascii(label: str) -> str:
    return label.encode("ascii", "ignore").decode("ascii")


def _boxes(phrase: str, size: ImageSize) -> list[list[int]]:
    """Every non-overlapping run of 4 ``<loc_>`` tokens -> ``[x1, y1, x2, y2]``; leftovers ignored."""
    bins = [int(b) for m in BOX_BINS.finditer(phrase) for b in m.groups()]
    flat = dequantize(bins, size)
    return [flat[i : i + 4] for i in range(0, len(flat), 4)]


def _labelled_boxes(text: str, size: ImageSize, allow_empty: bool) -> list[tuple[str, list[list[int]]]]:
    """(stripped label, boxes) per phrase; with ``allow_empty`` phrases are bare location runs."""
    finder = _BARE_BOXES if allow_empty else _PHRASE_WITH_BOXES
    found = []
    for phrase in finder.findall(_strip_specials(text)):
        label = _BOX_LABEL.search(phrase)
        if label is None:
            continue
        found.append((label.group().strip(), _boxes(phrase, size)))
    return found


# --- parsers: (text, context) -> the task's answer ---------------------------------------------------
def _pure_text(text: str, ctx: _Context) -> str:
    return text.replace("<s>", "").replace("</s>", "").strip()


def _bbox_answer(text: str, ctx: _Context, allow_empty: bool) -> dict[str, list]:
    bboxes: list[list[int]] = []
    labels: list[str] = []
    for label, boxes in _labelled_boxes(text, ctx.size, allow_empty):
        bboxes.extend(boxes)
        labels.extend([_ascii(label)] * len(boxes))
    return {"bboxes": bboxes, "labels": labels}


def _description_with_bboxes(text: str, ctx: _Context) -> dict[str, list]:
    return _bbox_answer(text, ctx, allow_empty=False)


def _bboxes(text: str, ctx: _Context) -> dict[str, list]:
    return _bbox_answer(text, ctx, allow_empty=True)


def _phrase_grounding(text: str, ctx: _Context) -> dict[str, list]:
    bboxes: list[list[int]] = []
    labels: list[str] = []
    for label, boxes in _labelled_boxes(text, ctx.size, allow_empty=False):
        if label in ctx.banned:  # checked before the ASCII filter
            continue
        bboxes.extend(boxes)
        labels.extend([_ascii(label)] * len(boxes))
    return {"bboxes": bboxes, "labels": labels}


def _ocr(text: str, ctx: _Context) -> dict[str, list]:
    quad_boxes: list[list[int]] = []
    labels: list[str] = []
    for content, *bins in _OCR_LINE.findall(_strip_specials(text)):
        quad_boxes.append(dequantize([int(b) for b in bins], ctx.size))
        labels.append(content.strip())
    return {"quad_boxes": quad_boxes, "labels": labels}


def _polygon_instances(text: str, size: ImageSize, allow_empty: bool) -> list[tuple[str, list]]:
    """(label, polygons) per phrase; each polygon is a flat ``[x, y, ...]`` list (labels keep non-ASCII)."""
    finder = _BARE_POLYGONS if allow_empty else _PHRASE_WITH_POLYGONS
    instances = []
    for phrase in finder.findall(_strip_specials(text)):
        label = _POLYGON_LABEL.search(_LEADING_LOC.sub("", phrase, count=1))
        if label is None:
            continue
        bodies = _POLY_BODY.findall(phrase) if "<poly>" in phrase and "</poly>" in phrase else [phrase]
        for body in bodies:
            runs = _POLY_RUN.findall(body)
            if not runs:
                continue
            polygons = []
            for run in runs:
                bins = [int(b) for b in LOC_BIN.findall(run)]
                polygons.append(dequantize(bins[: len(bins) // 2 * 2], size))
            instances.append((label.group().strip(), polygons))
    return instances


def _polygon_answer(text: str, ctx: _Context, allow_empty: bool) -> dict[str, list]:
    found = _polygon_instances(text, ctx.size, allow_empty)
    return {"polygons": [p for _, p in found], "labels": [label for label, _ in found]}


def _polygons(text: str, ctx: _Context) -> dict[str, list]:
    return _polygon_answer(text, ctx, allow_empty=True)


def _description_with_polygons(text: str, ctx: _Context) -> dict[str, list]:
    return _polygon_answer(text, ctx, allow_empty=False)


def _bboxes_or_polygons(text: str, ctx: _Context) -> dict[str, list]:
    answer: dict[str, list] = {"bboxes": [], "bboxes_labels": [], "polygons": [], "polygons_labels": []}
    if "<poly>" in text:
        found = _polygon_instances(text, ctx.size, allow_empty=False)
        answer["polygons"] = [p for _, p in found]
        answer["polygons_labels"] = [label for label, _ in found]
    else:
        boxed = _bbox_answer(text, ctx, allow_empty=False)
        answer["bboxes"], answer["bboxes_labels"] = boxed["bboxes"], boxed["labels"]
    return answer


_Parser = Callable[[str, _Context], Any]
PARSE_TYPES: Mapping[str, _Parser] = MappingProxyType(
    {
        "pure_text": _pure_text,
        "ocr": _ocr,
        "phrase_grounding": _phrase_grounding,
        "description_with_bboxes": _description_with_bboxes,
        "description_with_polygons": _description_with_polygons,
        "polygons": _polygons,
        "bboxes": _bboxes,
        "description_with_bboxes_or_polygons": _bboxes_or_polygons,
    }
)
_NEEDS_NO_SIZE = frozenset({"pure_text"})
_DEFAULT_BANNED = frozenset(DEFAULT_BANNED_GROUNDING_TOKENS)


# --- public entry points -----------------------------------------------------------------------------
def parse(
    text: str,
    parse_type: str,
    image_size: tuple[int, int] | None = None,
    *,
    banned_grounding_tokens: Iterable[str] | None = None,
) -> Any:
    """The answer for one parse type (a key of ``PARSE_TYPES``), without the ``{task: ...}`` wrapper."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str (the decoded generation), got {type(text).__name__}")
    if parse_type not in PARSE_TYPES:
        raise ValueError(f"unknown parse type {parse_type!r}; known: {', '.join(PARSE_TYPES)}")
    size = None if parse_type in _NEEDS_NO_SIZE else ImageSize.of(image_size)
    if banned_grounding_tokens is None:
        banned = _DEFAULT_BANNED
    elif isinstance(banned_grounding_tokens, str):
        raise ValueError("banned_grounding_tokens must be an iterable of phrases, not a single str")
    else:
        banned = frozenset(banned_grounding_tokens)
    return PARSE_TYPES[parse_type](text, _Context(size, banned))


def post_process_generation(
    text: str,
    task: str,
    image_size: tuple[int, int] | None,
    *,
    banned_grounding_tokens: Iterable[str] | None = None,
) -> dict[str, Any]:
    """``Florence2Processor.post_process_generation(text=text, task=task, image_size=image_size)``.

    text: one decoded generation (special tokens kept); task: the task token (unknown -> pure text);
    image_size: (width, height) of the original image (an :class:`ImageSize` or any pair of positive ints),
    needed by every task that returns coordinates.
    banned_grounding_tokens: phrases ``<CAPTION_TO_PHRASE_GROUNDING>`` drops; None -> the published list.
    """
    if not isinstance(task, str):
        raise ValueError(f"task must be a task token string such as '<OD>', got {task!r}")
    spec = TASKS.get(task)
    parse_type = spec.parse_type if spec is not None else FALLBACK_PARSE_TYPE
    return {task: parse(text, parse_type, image_size, banned_grounding_tokens=banned_grounding_tokens)}
