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
- no ``scores`` key is ever produced (``Florence2.run(..., scores=True)`` adds them: :mod:`.confidence`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from ..inputs.image_size import ImageSize
from .locations import BOX_BINS, LOC_BIN, LOC_TOKEN, dequantize
from .table import TASKS

__all__ = [
    "DEFAULT_BANNED_GROUNDING_TOKENS",
    "PARSE_TYPES",
    "TASK_PARSE_TYPES",
    "ObjectSpans",
    "Span",
    "dequantize",
    "parse",
    "parse_type_of",
    "parse_with_spans",
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


Span = tuple[int, int]  # [start, end) characters of the decoded text


class ObjectSpans(NamedTuple):
    """Where one object of an answer was written in the decoded text: what it says (its label, its OCR
    text, a text answer) and where it is (its location tokens; polygons: with their separators)."""

    what: Span
    where: tuple[Span, ...] = ()


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


class _Stripped:
    """A text with some substrings removed, and where each remaining character came from.

    ``_Stripped(text, "<s>", "</s>")`` is ``text.replace("<s>", "").replace("</s>", "")`` (in that order: the
    order matters for overlapping leftovers); ``span(i, j)`` maps characters ``[i, j)`` of the result back to
    ``[start, end)`` in ``text``, so that an object the parsers find can be traced to the tokens that wrote it.
    """

    def __init__(self, text: str, *removed: str):
        origin = list(range(len(text)))
        for needle in removed:
            text, origin = _remove_all(text, origin, needle)
        self.text, self._origin = text, origin

    def span(self, start: int, end: int) -> Span:
        if end <= start:
            return (0, 0)
        return (self._origin[start], self._origin[end - 1] + 1)


def _remove_all(text: str, origin: list[int], needle: str) -> tuple[str, list[int]]:
    """``text.replace(needle, "")`` (left to right, non-overlapping), and the origins of what is left."""
    parts, kept, i = [], [], 0
    while (j := text.find(needle, i)) >= 0:
        parts.append(text[i:j])
        kept += origin[i:j]
        i = j + len(needle)
    parts.append(text[i:])
    kept += origin[i:]
    return "".join(parts), kept


_SPECIALS = ("<s>", "</s>", "<pad>")  # removed before parsing anything but pure text


def _ascii(label: str) -> str:
    return label.encode("ascii", "ignore").decode("ascii")


def _labelled_boxes(
    text: str, size: ImageSize, allow_empty: bool
) -> list[tuple[str, list[list[int]], list[ObjectSpans]]]:
    """(stripped label, boxes, each box's spans: its label and its 4 location tokens) per phrase; with
    ``allow_empty`` phrases are bare location runs. Every non-overlapping run of 4 ``<loc_>`` tokens of a
    phrase is a box ``[x1, y1, x2, y2]``; leftovers are ignored."""
    finder = _BARE_BOXES if allow_empty else _PHRASE_WITH_BOXES
    st = _Stripped(text, *_SPECIALS)
    found: list[tuple[str, list[list[int]], list[ObjectSpans]]] = []
    for phrase in finder.finditer(st.text):
        label = _BOX_LABEL.search(phrase.group())
        if label is None:
            continue
        at = phrase.start()
        runs = list(BOX_BINS.finditer(phrase.group()))
        flat = dequantize([int(b) for m in runs for b in m.groups()], size)
        boxes = [flat[i : i + 4] for i in range(0, len(flat), 4)]
        label_span = st.span(at + label.start(), at + label.end())
        spans = [ObjectSpans(label_span, (st.span(at + m.start(), at + m.end()),)) for m in runs]
        found.append((label.group().strip(), boxes, spans))
    return found


# --- parsers: (text, context) -> (the task's answer, each object's spans) ---------------------------------
def _pure_text(text: str, ctx: _Context) -> tuple[str, list[ObjectSpans]]:
    st = _Stripped(text, "<s>", "</s>")
    answer = st.text.strip()
    start = len(st.text) - len(st.text.lstrip())
    return answer, [ObjectSpans(st.span(start, start + len(answer)))]


def _bbox_answer(text: str, ctx: _Context, allow_empty: bool, banned=frozenset()) -> tuple[dict, list]:
    bboxes: list[list[int]] = []
    labels: list[str] = []
    spans: list[ObjectSpans] = []
    for label, boxes, box_spans in _labelled_boxes(text, ctx.size, allow_empty):
        if label in banned:  # grounding: checked before the ASCII filter
            continue
        bboxes.extend(boxes)
        labels.extend([_ascii(label)] * len(boxes))
        spans.extend(box_spans)
    return {"bboxes": bboxes, "labels": labels}, spans


def _description_with_bboxes(text: str, ctx: _Context) -> tuple[dict, list]:
    return _bbox_answer(text, ctx, allow_empty=False)


def _bboxes(text: str, ctx: _Context) -> tuple[dict, list]:
    return _bbox_answer(text, ctx, allow_empty=True)


def _phrase_grounding(text: str, ctx: _Context) -> tuple[dict, list]:
    return _bbox_answer(text, ctx, allow_empty=False, banned=ctx.banned)


def _ocr(text: str, ctx: _Context) -> tuple[dict, list]:
    quad_boxes: list[list[int]] = []
    labels: list[str] = []
    spans: list[ObjectSpans] = []
    st = _Stripped(text, *_SPECIALS)
    for line in _OCR_LINE.finditer(st.text):
        content, *bins = line.groups()
        quad_boxes.append(dequantize([int(b) for b in bins], ctx.size))
        labels.append(content.strip())
        spans.append(ObjectSpans(st.span(*line.span(1)), (st.span(line.end(1), line.end()),)))
    return {"quad_boxes": quad_boxes, "labels": labels}, spans


def _polygon_instances(text: str, size: ImageSize, allow_empty: bool) -> list[tuple[str, list, ObjectSpans]]:
    """(label, polygons, spans) per instance; each polygon is a flat ``[x, y, ...]`` list (labels keep
    non-ASCII); the spans are the label's and the instance's location, separator and polygon tokens."""
    finder = _BARE_POLYGONS if allow_empty else _PHRASE_WITH_POLYGONS
    st = _Stripped(text, *_SPECIALS)
    instances: list[tuple[str, list, ObjectSpans]] = []
    for found in finder.finditer(st.text):
        phrase, at = found.group(), found.start()
        lead = _LEADING_LOC.match(phrase)
        skip = lead.end() if lead else 0
        label = _POLYGON_LABEL.search(phrase[skip:])
        if label is None:
            continue
        label_span = st.span(at + skip + label.start(), at + skip + label.end())
        if "<poly>" in phrase and "</poly>" in phrase:
            bodies = [(m.group(1), m.start(1)) for m in _POLY_BODY.finditer(phrase)]
        else:
            bodies = [(phrase, 0)]
        for body, offset in bodies:
            runs = _POLY_RUN.findall(body)
            if not runs:
                continue
            polygons = []
            for run in runs:
                bins = [int(b) for b in LOC_BIN.findall(run)]
                polygons.append(dequantize(bins[: len(bins) // 2 * 2], size))
            body_span = st.span(at + offset, at + offset + len(body))
            instances.append((label.group().strip(), polygons, ObjectSpans(label_span, (body_span,))))
    return instances


def _polygon_answer(text: str, ctx: _Context, allow_empty: bool) -> tuple[dict, list]:
    found = _polygon_instances(text, ctx.size, allow_empty)
    answer = {"polygons": [p for _, p, _ in found], "labels": [label for label, _, _ in found]}
    return answer, [spans for _, _, spans in found]


def _polygons(text: str, ctx: _Context) -> tuple[dict, list]:
    return _polygon_answer(text, ctx, allow_empty=True)


def _description_with_polygons(text: str, ctx: _Context) -> tuple[dict, list]:
    return _polygon_answer(text, ctx, allow_empty=False)


def _bboxes_or_polygons(text: str, ctx: _Context) -> tuple[dict, list]:
    answer: dict[str, list] = {"bboxes": [], "bboxes_labels": [], "polygons": [], "polygons_labels": []}
    if "<poly>" in text:
        polygons, spans = _polygon_answer(text, ctx, allow_empty=False)
        answer["polygons"], answer["polygons_labels"] = polygons["polygons"], polygons["labels"]
    else:
        boxed, spans = _bbox_answer(text, ctx, allow_empty=False)
        answer["bboxes"], answer["bboxes_labels"] = boxed["bboxes"], boxed["labels"]
    return answer, spans


_Parser = Callable[[str, _Context], tuple[Any, list[ObjectSpans]]]
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
    return parse_with_spans(text, parse_type, image_size, banned_grounding_tokens=banned_grounding_tokens)[0]


def parse_with_spans(
    text: str,
    parse_type: str,
    image_size: tuple[int, int] | None = None,
    *,
    banned_grounding_tokens: Iterable[str] | None = None,
) -> tuple[Any, list[ObjectSpans]]:
    """``parse``, and where each object of the answer was written in ``text``: one :class:`ObjectSpans` per
    object, in the order boxes, quad boxes, polygons (``Florence2Result.labels``' order); one for the whole
    answer of a text task. :mod:`.confidence` turns them into scores."""
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


def parse_type_of(task: str) -> str:
    """The parser of ``task`` (the task table's ``parse_type``; pure text for a task not in the table)."""
    if not isinstance(task, str):
        raise ValueError(f"task must be a task token string such as '<OD>', got {task!r}")
    spec = TASKS.get(task)
    return spec.parse_type if spec is not None else FALLBACK_PARSE_TYPE


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
    parse_type = parse_type_of(task)
    return {task: parse(text, parse_type, image_size, banned_grounding_tokens=banned_grounding_tokens)}
