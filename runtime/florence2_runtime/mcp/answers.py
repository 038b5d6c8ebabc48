"""What the tools answer: the structured result (its JSON schema is each tool's output schema) and the
one-line summary for clients that show only text.

Every vision tool answers one :class:`Answer`, built from a ``Florence2Result`` by :func:`answer_of`:
coordinates in pixels of the original image, ``raw`` exactly ``run()``'s ``{task: answer}``.

Scores (the tools always ask ``run`` for them): ``scores``, one confidence in (0, 1] per object in the order
boxes, quad_boxes, polygons (``Florence2Result.labels``' order), and ``text_score`` for a text answer;
each object also carries its ``score``, as ``Florence2Result``'s JSON does. Both are ``NotRequired``:
:func:`answer_of` fills them when the result was scored; ``raw`` is ``run(..., scores=True)``'s answer.
The summary line writes each score after its object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from typing_extensions import NotRequired, TypedDict  # pydantic reads these only before Python 3.12 (mcp)

from ..tasks.confidence import SCORES_KEY
from ..tasks.results import Florence2Result

__all__ = ["Answer", "BoxItem", "PolygonItem", "QuadItem", "TaskInfo", "TaskList", "answer_of", "summary"]

SUMMARY_OBJECTS = 20  # objects a summary line lists before "... and N more"
SUMMARY_TEXT = 400  # characters of a text answer a summary line keeps


class BoxItem(TypedDict):
    """An axis-aligned box [x1, y1, x2, y2] in pixels and its label ("" when the task gives none)."""

    xyxy: list[float]
    label: str
    score: NotRequired[float]


class QuadItem(TypedDict):
    """A four-corner box [x1, y1, ..., x4, y4] in pixels (OCR with regions) and its text."""

    points: list[float]
    label: str
    score: NotRequired[float]


class PolygonItem(TypedDict):
    """One object as one or more polygons, each a flat [x1, y1, x2, y2, ...] list in pixels."""

    parts: list[list[float]]
    label: str
    score: NotRequired[float]


class Answer(TypedDict):
    """One task's answer on one image. image_size: [width, height] of the image the pixels refer to;
    text: the text answer (captions, OCR, region tasks), else null; raw: run()'s {task: answer}; scores:
    each object's confidence in (0, 1] (boxes, then quad_boxes, then polygons), text_score: the text's."""

    task: str
    image_size: list[int]
    text: str | None
    boxes: list[BoxItem]
    quad_boxes: list[QuadItem]
    polygons: list[PolygonItem]
    raw: dict[str, Any]
    scores: NotRequired[list[float | None]]
    text_score: NotRequired[float]


class TaskInfo(TypedDict):
    """A task token, what input it takes (none, text or region) and the tool that runs it most simply."""

    task: str
    input: str
    tool: str
    prompt: str


class TaskList(TypedDict):
    tasks: list[TaskInfo]


def answer_of(result: Florence2Result) -> Answer:
    """The structured answer of a result (``to_json_dict`` without its version)."""
    d = result.to_json_dict()
    answer = Answer(
        task=d["task"],
        image_size=d["image_size"],
        text=d["text"],
        boxes=d["boxes"],
        quad_boxes=d["quad_boxes"],
        polygons=d["polygons"],
        raw=dict(d["raw"]),
    )
    raw = result.raw.get(result.task)
    if isinstance(raw, Mapping) and SCORES_KEY in raw:  # run(..., scores=True)'s answer
        answer["scores"] = list(result.scores)
        if result.text_score is not None:
            answer["text_score"] = result.text_score
    return answer


def _number(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _coords(values: list[float]) -> str:
    return "[" + ", ".join(_number(v) for v in values) + "]"


def _one_line(text: str, limit: int = SUMMARY_TEXT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _score(item: Mapping[str, Any], key: str = "score") -> str:
    return f" score {item[key]:.2f}" if item.get(key) is not None else ""


def summary(answer: Answer) -> str:
    """One line: the task, then the text and the objects (label, pixel coordinates, score), capped."""
    parts = (
        [f'"{_one_line(answer["text"])}"{_score(answer, "text_score")}'] if answer["text"] is not None else []
    )
    objects = (
        [f"{b['label'] or 'box'} {_coords(b['xyxy'])}{_score(b)}" for b in answer["boxes"]]
        + [
            f"{_one_line(q['label'], 60) or 'text'} {_coords(q['points'])}{_score(q)}"
            for q in answer["quad_boxes"]
        ]
        + [
            f"{g['label'] or 'object'} (polygon, {sum(len(p) // 2 for p in g['parts'])} points){_score(g)}"
            for g in answer["polygons"]
        ]
    )
    if objects or answer["text"] is None:
        listed = "; ".join(objects[:SUMMARY_OBJECTS])
        more = f"; ... and {len(objects) - SUMMARY_OBJECTS} more" if len(objects) > SUMMARY_OBJECTS else ""
        noun = "object" if len(objects) == 1 else "objects"
        parts.append(f"{len(objects)} {noun}" + (f": {listed}{more}" if objects else ""))
    width, height = answer["image_size"]
    return f"{answer['task']} on a {width}x{height} image: " + ", ".join(parts)
