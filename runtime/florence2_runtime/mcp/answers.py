"""What the tools answer: the structured result (its JSON schema is each tool's output schema) and the
one-line summary for clients that show only text.

Every vision tool answers one :class:`Answer`, built from a ``Florence2Result`` by :func:`answer_of`:
coordinates in pixels of the original image, ``raw`` exactly ``run()``'s ``{task: answer}``.

Scores: when ``Florence2.run(..., scores=True)`` lands, they go here and nowhere else: ``Answer`` gains
``scores`` (one float per object, in the order boxes, quad_boxes, polygons: ``Florence2Result.labels``'
order) and ``text_score`` (a float for a text answer), both ``NotRequired``, and :func:`answer_of`
fills them from the result. ``raw`` carries whatever ``run()`` returns already.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict  # pydantic reads only this one before Python 3.12 (mcp needs it)

from ..tasks.results import Florence2Result

__all__ = ["Answer", "BoxItem", "PolygonItem", "QuadItem", "TaskInfo", "TaskList", "answer_of", "summary"]

SUMMARY_OBJECTS = 20  # objects a summary line lists before "... and N more"
SUMMARY_TEXT = 400  # characters of a text answer a summary line keeps


class BoxItem(TypedDict):
    """An axis-aligned box [x1, y1, x2, y2] in pixels and its label ("" when the task gives none)."""

    xyxy: list[float]
    label: str


class QuadItem(TypedDict):
    """A four-corner box [x1, y1, ..., x4, y4] in pixels (OCR with regions) and its text."""

    points: list[float]
    label: str


class PolygonItem(TypedDict):
    """One object as one or more polygons, each a flat [x1, y1, x2, y2, ...] list in pixels."""

    parts: list[list[float]]
    label: str


class Answer(TypedDict):
    """One task's answer on one image. image_size: [width, height] of the image the pixels refer to;
    text: the text answer (captions, OCR, region tasks), else null; raw: run()'s {task: answer}."""

    task: str
    image_size: list[int]
    text: str | None
    boxes: list[BoxItem]
    quad_boxes: list[QuadItem]
    polygons: list[PolygonItem]
    raw: dict[str, Any]


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
    return Answer(
        task=d["task"],
        image_size=d["image_size"],
        text=d["text"],
        boxes=d["boxes"],
        quad_boxes=d["quad_boxes"],
        polygons=d["polygons"],
        raw=dict(d["raw"]),
    )


def _number(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _coords(values: list[float]) -> str:
    return "[" + ", ".join(_number(v) for v in values) + "]"


def _one_line(text: str, limit: int = SUMMARY_TEXT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def summary(answer: Answer) -> str:
    """One line: the task, then the text and the objects (label and pixel coordinates), capped."""
    parts = [f'"{_one_line(answer["text"])}"'] if answer["text"] is not None else []
    objects = (
        [f"{b['label'] or 'box'} {_coords(b['xyxy'])}" for b in answer["boxes"]]
        + [f"{_one_line(q['label'], 60) or 'text'} {_coords(q['points'])}" for q in answer["quad_boxes"]]
        + [
            f"{g['label'] or 'object'} (polygon, {sum(len(p) // 2 for p in g['parts'])} points)"
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
