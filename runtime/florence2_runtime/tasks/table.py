"""Florence-2's tasks: one frozen :class:`TaskSpec` per task token, in one table.

Everything that depends on the task reads :data:`TASKS`: the prompt (:mod:`.prompts`), the parser
(:mod:`.postprocess`), the typed answer (:mod:`.results`), the per-task method (:mod:`.methods`), the
supervision converter (:mod:`.supervision`), ``florence2 run`` and the server. Adding a task, e.g. the new
token of a fine-tune, is one entry here.

The order is transformers' (``Florence2Processor``'s prompt dicts): ``construct_prompt`` searches the tokens
in this order, and the first token found inside a text wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple, get_args

__all__ = ["ANSWER_KINDS", "INPUT_KINDS", "TASKS", "AnswerKind", "InputKind", "MethodOption", "TaskSpec"]

InputKind = Literal["none", "text", "region"]  # region: a box, written <loc_x1><loc_y1><loc_x2><loc_y2>
INPUT_KINDS: tuple[str, ...] = get_args(InputKind)
# What Florence2Result makes of the answer: text; region_text (text ending in the region's location tokens);
# boxes; quads (OCR lines); polygons; boxes_and_polygons (open-vocabulary detection: either one).
AnswerKind = Literal["text", "region_text", "boxes", "quads", "polygons", "boxes_and_polygons"]
ANSWER_KINDS: tuple[str, ...] = get_args(AnswerKind)


class MethodOption(NamedTuple):
    """How a per-task method that runs several tasks picks this one: its ``argument`` equals ``value``
    (``caption_image(granularity="detailed")``), or, with value None, the argument is given at all
    (``detect_objects(classes=[...])``)."""

    argument: str
    value: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One task, described once.

    token: the task token (``"<OD>"``); prompt: what the processor sends instead (``{input}`` marks the
    input); input: none, text or region; parse_type: the post-processor's parser
    (``postprocess.PARSE_TYPES``, transformers' ``tasks_answer_post_processing_type``); answer: the answer's
    kind in :class:`~.results.Florence2Result`; method / option: the ``Florence2`` method that runs it and how
    that method selects it; detections: how ``to_supervision`` reads the answer (``supervision.CONVERTERS``;
    None: supervision does not read this task).
    """

    token: str
    prompt: str
    input: InputKind = "none"
    parse_type: str = "pure_text"
    answer: AnswerKind = "text"
    method: str | None = None
    option: MethodOption | None = None
    detections: str | None = None

    def __post_init__(self) -> None:
        if self.input not in INPUT_KINDS:
            raise ValueError(f"{self.token}: input must be one of {INPUT_KINDS}, got {self.input!r}")
        if self.answer not in ANSWER_KINDS:
            raise ValueError(f"{self.token}: answer must be one of {ANSWER_KINDS}, got {self.answer!r}")
        if ("{input}" in self.prompt) != (self.input != "none"):
            raise ValueError(f"{self.token}: the prompt has an {{input}} exactly when the task takes input")

    @property
    def takes_input(self) -> bool:
        """The task reads text or a region after its token."""
        return self.input != "none"

    @property
    def region_input(self) -> bool:
        """The task reads a region (a box) after its token."""
        return self.input == "region"


def _table(*specs: TaskSpec) -> Mapping[str, TaskSpec]:
    table = {spec.token: spec for spec in specs}
    if len(table) != len(specs):
        raise ValueError("a task token is listed twice")
    return MappingProxyType(table)


_CAPTION, _DETECT = "caption_image", "detect_objects"

TASKS: Mapping[str, TaskSpec] = _table(
    TaskSpec("<OCR>", "What is the text in the image?", method="ocr_image"),
    TaskSpec(
        "<OCR_WITH_REGION>",
        "What is the text in the image, with regions?",
        parse_type="ocr",
        answer="quads",
        method="parse_document",
        detections="quads",
    ),
    TaskSpec(
        "<CAPTION>",
        "What does the image describe?",
        method=_CAPTION,
        option=MethodOption("granularity", "normal"),
    ),
    TaskSpec(
        "<DETAILED_CAPTION>",
        "Describe in detail what is shown in the image.",
        method=_CAPTION,
        option=MethodOption("granularity", "detailed"),
    ),
    TaskSpec(
        "<MORE_DETAILED_CAPTION>",
        "Describe with a paragraph what is shown in the image.",
        method=_CAPTION,
        option=MethodOption("granularity", "very_detailed"),
    ),
    TaskSpec(
        "<OD>",
        "Locate the objects with category name in the image.",
        parse_type="description_with_bboxes",
        answer="boxes",
        method=_DETECT,
        option=MethodOption("labels_mode", "classes"),
        detections="boxes",
    ),
    TaskSpec(
        "<DENSE_REGION_CAPTION>",
        "Locate the objects in the image, with their descriptions.",
        parse_type="description_with_bboxes",
        answer="boxes",
        method=_DETECT,
        option=MethodOption("labels_mode", "captions"),
        detections="boxes",
    ),
    TaskSpec(
        "<REGION_PROPOSAL>",
        "Locate the region proposals in the image.",
        parse_type="bboxes",
        answer="boxes",
        method=_DETECT,
        option=MethodOption("labels_mode", "rois"),
        detections="unlabelled_boxes",
    ),
    TaskSpec(
        "<CAPTION_TO_PHRASE_GROUNDING>",
        "Locate the phrases in the caption: {input}",
        input="text",
        parse_type="phrase_grounding",
        answer="boxes",
        method="ground_phrase",
        detections="boxes",
    ),
    TaskSpec(
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        "Locate {input} in the image with mask",
        input="text",
        parse_type="polygons",
        answer="polygons",
        method="segment_phrase",
        detections="masks",
    ),
    TaskSpec(
        "<REGION_TO_SEGMENTATION>",
        "What is the polygon mask of region {input}",
        input="region",
        parse_type="polygons",
        answer="polygons",
        method="segment_region",
        detections="masks",
    ),
    TaskSpec(
        "<OPEN_VOCABULARY_DETECTION>",
        "Locate {input} in the image.",
        input="text",
        parse_type="description_with_bboxes_or_polygons",
        answer="boxes_and_polygons",
        method=_DETECT,
        option=MethodOption("classes"),
        detections="boxes",  # supervision reads the boxes only, not the polygons
    ),
    TaskSpec(
        "<REGION_TO_CATEGORY>",
        "What is the region {input}?",
        input="region",
        answer="region_text",
        method="classify_image_region",
        detections="region_text",
    ),
    TaskSpec(
        "<REGION_TO_DESCRIPTION>",
        "What does the region {input} describe?",
        input="region",
        answer="region_text",
        method="caption_image_region",
        detections="region_text",
    ),
    TaskSpec(
        "<REGION_TO_OCR>",
        "What text is in the region {input}?",
        input="region",
        answer="region_text",
        method="ocr_image_region",
    ),
)
