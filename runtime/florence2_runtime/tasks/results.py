"""Typed Florence-2 results: boxes, quad boxes, polygons and text, built from ``run()``'s dict.

``Florence2.run`` returns ``Florence2Processor.post_process_generation``'s dict, whose shape depends on
the task; :class:`Florence2Result` gives every task the same fields::

    result = model.predict("photo.jpg", "<OD>")      # or Florence2Result.from_dict(model.run(...), size)
    result.boxes[0].xyxy, result.boxes[0].label        # pixel box, label
    result.to_json(); result.to_coco(image_id=7); result.to_supervision(); result.draw("photo.jpg")

Which answer shape a task has is its ``answer`` kind in the task table (:data:`.table.TASKS`; unknown tasks
are text, as post-processing treats them), and each kind has one reader in ``_READERS``. Coordinates are pixels of the original image, exactly the numbers of the dict (ints).
The shapes (:class:`BoundingBox`, :class:`QuadBox`, :class:`Polygon`) live in :mod:`.shapes`; the converters
(:mod:`.coco`, :mod:`.supervision`, :mod:`.drawing`, :mod:`.masks`) read a result through
:class:`~.shapes.ShapesOfResult` and never import this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import require
from ..inputs.image_size import ImageSize
from .confidence import SCORES_KEY, text_and_score
from .locations import BOX_BINS, LOC_BIN, dequantize
from .shapes import BoundingBox, Polygon, QuadBox
from .table import TASKS

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["TASK_KINDS", "BoundingBox", "Florence2Result", "Polygon", "QuadBox"]

JSON_VERSION = 1

# --- task -> kind of answer (the task table's ``answer``) ------------------------------------------------
TASK_KINDS: Mapping[str, str] = MappingProxyType({token: spec.answer for token, spec in TASKS.items()})
FALLBACK_KIND = "text"  # post-processing treats unknown tasks as pure text


@dataclass(frozen=True)
class Florence2Result:
    """The answer of one task on one image, the same fields for every task.

    task: the task token; image_size: the size of the image the coordinates refer to;
    text: the text answer (captions, OCR, region tasks without their location tokens), else None;
    boxes / quad_boxes / polygons: the located objects; raw: ``run()``'s dict ``{task: answer}``.
    With ``run(..., scores=True)`` every shape has its ``score`` and a text answer its ``text_score``
    (:mod:`.confidence`); else they are None.
    """

    task: str
    image_size: ImageSize
    text: str | None = None
    text_score: float | None = None
    boxes: tuple[BoundingBox, ...] = ()
    quad_boxes: tuple[QuadBox, ...] = ()
    polygons: tuple[Polygon, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", ImageSize.of(self.image_size))

    # --- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, result: Mapping[str, Any], image_size: Sequence[int]) -> Florence2Result:
        """From ``run()`` / ``post_process_generation``'s ``{task: answer}`` and the image (width, height)."""
        if not isinstance(result, Mapping) or len(result) != 1:
            raise ValueError(
                f"expected a dict with one task key, as Florence2.run returns, got {result!r:.200}"
            )
        ((task, answer),) = result.items()
        return cls.from_answer(task, answer, image_size)

    @classmethod
    def from_answer(cls, task: str, answer: Any, image_size: Sequence[int]) -> Florence2Result:
        """From a task token and its answer (the value of ``run()``'s dict)."""
        if not isinstance(task, str):
            raise ValueError(f"task must be a task token string, got {task!r}")
        size = ImageSize.of(image_size)
        kind = TASK_KINDS.get(task, FALLBACK_KIND)
        fields = _READERS[kind](task, answer, size)
        return cls(task=task, image_size=size, raw={task: _plain(answer)}, **fields)

    # --- views ----------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The answer's kind: text, region_text, boxes, quads, polygons or boxes_and_polygons."""
        return TASK_KINDS.get(self.task, FALLBACK_KIND)

    @property
    def labels(self) -> list[str]:
        """Labels of the boxes, then the quad boxes, then the polygons."""
        return (
            [b.label for b in self.boxes]
            + [q.label for q in self.quad_boxes]
            + [g.label for g in self.polygons]
        )

    @property
    def scores(self) -> tuple[float | None, ...]:
        """Scores of the boxes, then the quad boxes, then the polygons (parallel to ``labels``); None for
        an object without one (results of ``run`` without ``scores=True``)."""
        return (
            tuple(b.score for b in self.boxes)
            + tuple(q.score for q in self.quad_boxes)
            + tuple(g.score for g in self.polygons)
        )

    @property
    def xyxy(self) -> np.ndarray:
        """Boxes as float32 [N, 4] (``boxes`` only)."""
        return np.array([b.xyxy for b in self.boxes], dtype=np.float32).reshape(-1, 4)

    def above(self, min_score: float) -> Florence2Result:
        """A copy without the objects scored below ``min_score`` (``raw`` keeps the whole answer).

        ValueError for a result without scores: ask ``run`` / ``predict`` for ``scores=True``."""
        if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1:
            raise ValueError(f"min_score must be a number in [0, 1], got {min_score!r:.50}")
        if any(s is None for s in self.scores):
            raise ValueError("this result has no scores: ask for them with scores=True")
        return replace(
            self,
            boxes=tuple(b for b in self.boxes if b.score is not None and b.score >= min_score),
            quad_boxes=tuple(q for q in self.quad_boxes if q.score is not None and q.score >= min_score),
            polygons=tuple(g for g in self.polygons if g.score is not None and g.score >= min_score),
        )

    def masks(self) -> np.ndarray:
        """Boolean masks [n, height, width] at the image size, one per polygon object (segmentation answers;
        ``<OPEN_VOCABULARY_DETECTION>``'s polygons too), equal to ``to_supervision().mask``; numpy only.

        Objects whose parts all have fewer than 3 points are left out, as supervision does."""
        from .masks import object_masks

        return object_masks([obj.parts for obj in self.polygons], self.image_size)[0]

    def __len__(self) -> int:
        return len(self.boxes) + len(self.quad_boxes) + len(self.polygons)

    # --- JSON -----------------------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see ``to_json``)."""
        return {
            "version": JSON_VERSION,
            "task": self.task,
            "image_size": list(self.image_size),
            "text": self.text,
            **({"text_score": self.text_score} if self.text_score is not None else {}),
            "boxes": [_scored({"xyxy": list(b.xyxy), "label": b.label}, b.score) for b in self.boxes],
            "quad_boxes": [
                _scored({"points": list(q.points), "label": q.label}, q.score) for q in self.quad_boxes
            ],
            "polygons": [
                _scored({"parts": [list(p) for p in g.parts], "label": g.label}, g.score)
                for g in self.polygons
            ],
            "raw": self.raw,
        }

    def to_json(self, **dumps_kwargs: Any) -> str:
        """JSON text; ``Florence2Result.from_json(r.to_json()) == r``. Keywords go to ``json.dumps``."""
        dumps_kwargs.setdefault("ensure_ascii", False)
        return json.dumps(self.to_json_dict(), **dumps_kwargs)

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Florence2Result:
        """Inverse of ``to_json`` (also takes the dict of ``to_json_dict``)."""
        d = json.loads(data) if isinstance(data, (str, bytes)) else data
        if not isinstance(d, Mapping) or "task" not in d or "image_size" not in d:
            raise ValueError("not a Florence2Result JSON object (needs 'task' and 'image_size')")
        try:
            return cls(
                task=d["task"],
                image_size=ImageSize.of(d["image_size"]),
                text=d.get("text"),
                text_score=_score(d.get("text_score")),
                boxes=tuple(
                    BoundingBox(_box(b["xyxy"]), _label(b.get("label", "")), _score(b.get("score")))
                    for b in d.get("boxes", ())
                ),
                quad_boxes=tuple(
                    QuadBox(
                        _coords(q["points"], 8, "quad box"),
                        _label(q.get("label", "")),
                        _score(q.get("score")),
                    )
                    for q in d.get("quad_boxes", ())
                ),
                polygons=tuple(
                    Polygon(
                        tuple(_polygon_part(p) for p in g["parts"]),
                        _label(g.get("label", "")),
                        _score(g.get("score")),
                    )
                    for g in d.get("polygons", ())
                ),
                raw=d.get("raw", {}),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed Florence2Result JSON: {e!r}") from None

    # --- COCO -----------------------------------------------------------------------------------------
    def to_coco(
        self,
        image_id: int = 1,
        category_ids: Mapping[str, int] | None = None,
        *,
        first_annotation_id: int = 1,
        file_name: str | None = None,
    ) -> dict[str, Any]:
        """A COCO-style dict for this image: ``{"images", "annotations", "categories"}``.

        Each box, quad box and polygon object becomes one annotation with ``bbox`` ``[x, y, w, h]``,
        ``area`` and ``category_id``; quads and polygons also carry ``segmentation`` (flat polygons;
        parts with fewer than 3 points are left out, and an object left with none is skipped), and scored
        objects (``scores=True``) their ``score``.
        category_ids maps label -> id; None numbers the sorted distinct labels from 1. A label missing
        from category_ids raises ValueError.
        """
        from . import coco

        return coco.to_coco(self, image_id, category_ids, first_annotation_id, file_name)

    # --- supervision ----------------------------------------------------------------------------------
    def to_supervision(self):
        """``supervision.Detections``, equal to what supervision's
        ``Detections.from_vlm(sv.VLM.FLORENCE_2, result.raw, resolution_wh=result.image_size)`` builds.

        Needs the optional ``supervision`` package (extra ``supervision``). Tasks supervision does not
        read (text tasks, ``<REGION_TO_OCR>``) and region answers without a location box give empty
        Detections where supervision raises ValueError.
        """
        sv = require("supervision", "supervision", "Florence2Result.to_supervision()")
        from .supervision import to_detections

        return to_detections(self, sv)

    # --- drawing --------------------------------------------------------------------------------------
    def draw(self, image, **style: Any) -> Image.Image:
        """A copy of ``image`` (PIL, array, path or bytes) with the boxes, quads, polygons and labels drawn.

        Coordinates are scaled when the image's size differs from ``image_size``. Options: see
        ``florence2_runtime.tasks.drawing.draw_result``.
        """
        from .drawing import draw_result

        return draw_result(self, image, **style)


# --- readers: (task, answer, image_size) -> dataclass fields --------------------------------------------
def _plain(value: Any) -> Any:
    """Tuples -> lists and numpy scalars -> Python numbers, so ``raw`` survives a JSON round trip."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _coords(values: Any, n: int, what: str) -> tuple[float, ...]:
    if (
        isinstance(values, (str, bytes))
        or not hasattr(values, "__len__")
        or len(values) != n
        or not all(_number(v) for v in values)
    ):
        raise ValueError(f"a {what} must be {n} numbers, got {values!r:.200}")
    return tuple(_plain(v) for v in values)


def _box(values: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = _coords(values, 4, "box")
    return x1, y1, x2, y2


def _polygon_part(values: Any) -> tuple[float, ...]:
    if (
        isinstance(values, (str, bytes))
        or not hasattr(values, "__len__")
        or len(values) % 2
        or not all(_number(v) for v in values)
    ):
        raise ValueError(f"a polygon must be a flat list of x, y numbers (even length), got {values!r:.200}")
    return tuple(_plain(v) for v in values)


def _label(label: Any) -> str:
    if not isinstance(label, str):
        raise ValueError(f"labels must be strings, got {label!r:.200}")
    return label


def _key(answer: Any, task: str, key: str) -> list:
    if not isinstance(answer, Mapping) or key not in answer:
        raise ValueError(f"the answer of {task} must be a dict with {key!r}, got {answer!r:.200}")
    value = answer[key]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{task}: {key!r} must be a list, got {value!r:.200}")
    return list(value)


def _paired(answer: Any, task: str, items_key: str, labels_key: str) -> list[tuple[Any, str]]:
    items, labels = _key(answer, task, items_key), _key(answer, task, labels_key)
    if len(items) != len(labels):
        raise ValueError(f"{task}: {len(items)} {items_key} but {len(labels)} {labels_key}")
    return list(zip(items, (_label(label) for label in labels)))


def _score(value: Any) -> float | None:
    if value is None:
        return None
    if not _number(value) or not 0 <= value <= 1:
        raise ValueError(f"a score must be a number in [0, 1] or None, got {value!r:.50}")
    return float(value)


def _scores(answer: Any, task: str, counts: Sequence[int]) -> list[list[float | None]]:
    """The answer's ``scores`` (:mod:`.confidence`: one per object, in the order of ``counts``' lists) split
    into one list per kind of object; all None without scores."""
    if not isinstance(answer, Mapping) or SCORES_KEY not in answer:
        return [[None] * n for n in counts]
    values = answer[SCORES_KEY]
    if not isinstance(values, (list, tuple)) or len(values) != sum(counts):
        raise ValueError(f"{task}: 'scores' must be a list of {sum(counts)} numbers, got {values!r:.200}")
    out, at = [], 0
    for n in counts:
        out.append([_score(v) for v in values[at : at + n]])
        at += n
    return out


def _scored(entry: dict[str, Any], score: float | None) -> dict[str, Any]:
    return entry if score is None else {**entry, "score": score}


def _boxes(paired, scores) -> tuple[BoundingBox, ...]:
    return tuple(BoundingBox(_box(b), label, s) for (b, label), s in zip(paired, scores))


def _polygons(task, paired, scores) -> tuple[Polygon, ...]:
    out = []
    for (parts, label), score in zip(paired, scores):
        if not isinstance(parts, (list, tuple)):
            raise ValueError(
                f"{task}: each object's polygons must be a list of flat lists, got {parts!r:.200}"
            )
        out.append(Polygon(tuple(_polygon_part(p) for p in parts), label, score))
    return tuple(out)


def _text_answer(task: str, answer: Any) -> tuple[str, float | None]:
    text, score = text_and_score(answer)
    if not isinstance(text, str):
        raise ValueError(f"the answer of {task} must be a str, got {answer!r:.200}")
    return text, _score(score)


def _read_text(task, answer, size) -> dict:
    text, score = _text_answer(task, answer)
    return {"text": text, "text_score": score}


def _read_region_text(task, answer, size) -> dict:
    """ "car<loc_52><loc_332><loc_932><loc_774>" -> text "car" and that box, labelled "car" (scored as the
    whole answer)."""
    answer, score = _text_answer(task, answer)
    runs = list(BOX_BINS.finditer(answer))
    text = LOC_BIN.sub("", answer).strip()
    if not runs:
        return {"text": text, "text_score": score}
    label = answer[: runs[0].start()].strip()
    flat = dequantize([int(b) for m in runs for b in m.groups()], size)
    boxes = tuple(BoundingBox(_box(flat[i : i + 4]), label, score) for i in range(0, len(flat), 4))
    return {"text": text, "text_score": score, "boxes": boxes}


def _read_boxes(task, answer, size) -> dict:
    paired = _paired(answer, task, "bboxes", "labels")
    (scores,) = _scores(answer, task, [len(paired)])
    return {"boxes": _boxes(paired, scores)}


def _read_quads(task, answer, size) -> dict:
    paired = _paired(answer, task, "quad_boxes", "labels")
    (scores,) = _scores(answer, task, [len(paired)])
    return {
        "quad_boxes": tuple(
            QuadBox(_coords(q, 8, "quad box"), label, s) for (q, label), s in zip(paired, scores)
        )
    }


def _read_polygons(task, answer, size) -> dict:
    paired = _paired(answer, task, "polygons", "labels")
    (scores,) = _scores(answer, task, [len(paired)])
    return {"polygons": _polygons(task, paired, scores)}


def _read_boxes_and_polygons(task, answer, size) -> dict:
    boxes = _paired(answer, task, "bboxes", "bboxes_labels")
    polygons = _paired(answer, task, "polygons", "polygons_labels")
    box_scores, polygon_scores = _scores(answer, task, [len(boxes), len(polygons)])
    return {"boxes": _boxes(boxes, box_scores), "polygons": _polygons(task, polygons, polygon_scores)}


_READERS: Mapping[str, Callable[[str, Any, ImageSize], dict]] = MappingProxyType(
    {
        "text": _read_text,
        "region_text": _read_region_text,
        "boxes": _read_boxes,
        "quads": _read_quads,
        "polygons": _read_polygons,
        "boxes_and_polygons": _read_boxes_and_polygons,
    }
)
