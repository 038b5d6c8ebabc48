"""``Florence2Result`` -> ``supervision.Detections``, equal to what ``Detections.from_vlm`` builds.

supervision 0.31's ``from_vlm(VLM.FLORENCE_2, {task: answer}, resolution_wh=(w, h))`` gives, per task:

- ``<OD>``, ``<CAPTION_TO_PHRASE_GROUNDING>``, ``<DENSE_REGION_CAPTION>``, ``<OPEN_VOCABULARY_DETECTION>``:
  float32 boxes with ``data["class_name"]`` (OVD: the box labels; its polygons are not read);
- ``<REGION_PROPOSAL>``: boxes, no class names;
- ``<OCR_WITH_REGION>``: ``data["xyxyxyxy"]`` float32 [N, 4, 2], the quads' bounds as boxes, class names;
- the segmentation tasks: one detection per object, its parts with >= 3 points (int32) filled into one
  boolean mask of the image size (:mod:`.masks`, OpenCV's rule) and bounded by one box; no class names;
- ``<REGION_TO_CATEGORY>``, ``<REGION_TO_DESCRIPTION>``: the first 4 location tokens of the text as
  ``bins * (w, h, w, h) / 1000`` (float32), class name = the text before them; "No object detected." -> empty;
- box corners sorted so that x1 <= x2 and y1 <= y2; no detections -> ``Detections.empty()`` with an
  empty ``class_name``;
- ``confidence``: None (as supervision gives Florence-2 answers), or the objects' scores when the result
  has them (``run(..., scores=True)``; region tasks: the text's score).

Which of these a task gets is its ``detections`` entry in the task table (:data:`.table.TASKS`), a key of
:data:`CONVERTERS`. supervision raises ValueError for the tasks it does not read and for region answers
without location tokens; this module returns empty Detections there instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from .locations import BOX_BINS, NUM_BINS
from .masks import has_area, object_masks
from .shapes import ShapesOfResult
from .table import TASKS

CLASS_NAME = "class_name"
ORIENTED_BOXES = "xyxyxyxy"
NO_OBJECT = "No object detected."

# (xyxy float [N, 4], class names or None, masks [N, H, W] or None, quads [N, 4, 2] or None,
#  scores of the N detections: None where any is missing)
_Parts = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None", "np.ndarray | None", "list | None"]


def _sorted_corners(xyxy: np.ndarray) -> np.ndarray:
    xyxy = xyxy.reshape(-1, 4)
    x = np.sort(xyxy[:, 0::2], axis=1)
    y = np.sort(xyxy[:, 1::2], axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(xyxy.dtype, copy=False)


def _boxes(result: ShapesOfResult, sv) -> _Parts:
    scores = [b.score for b in result.boxes]
    return result.xyxy, np.array([b.label for b in result.boxes]), None, None, scores


def _unlabelled_boxes(result: ShapesOfResult, sv) -> _Parts:
    return result.xyxy, None, None, None, [b.score for b in result.boxes]


def _quads(result: ShapesOfResult, sv) -> _Parts:
    quads = np.array([q.points for q in result.quad_boxes], dtype=np.float32).reshape(-1, 4, 2)
    xyxy = np.concatenate([quads.min(axis=1), quads.max(axis=1)], axis=1)
    scores = [q.score for q in result.quad_boxes]
    return xyxy, np.array([q.label for q in result.quad_boxes]), None, quads, scores


def _masks(result: ShapesOfResult, sv) -> _Parts:
    masks, kept = object_masks([obj.parts for obj in result.polygons], result.image_size)
    boxes = [
        np.concatenate([np.concatenate(parts).min(axis=0), np.concatenate(parts).max(axis=0)])
        for parts in kept
    ]
    scores = [obj.score for obj in result.polygons if has_area(obj.parts)]  # the objects object_masks kept
    return np.array(boxes, dtype=np.float32).reshape(-1, 4), None, masks, None, scores


def _region(result: ShapesOfResult, sv) -> _Parts:
    answer = result.raw.get(result.task) if result.raw else None
    if not isinstance(answer, str):
        raise ValueError(f"{result.task}: to_supervision needs the raw text answer (Florence2Result.raw)")
    match = BOX_BINS.search(answer)
    if answer == NO_OBJECT or match is None:
        return np.empty((0, 4), dtype=np.float32), np.array([]), None, None, None
    width, height = result.image_size.width, result.image_size.height
    xyxy = np.array([match.groups()], dtype=np.float32)
    xyxy *= np.array([width, height, width, height]) / NUM_BINS
    return xyxy, np.array([answer[: match.start()]]), None, None, [result.text_score]


def _nothing(result: ShapesOfResult, sv) -> _Parts:
    return np.empty((0, 4), dtype=np.float32), None, None, None, None


# a task's ``detections`` (the task table) -> how its answer becomes Detections
CONVERTERS: Mapping[str, Callable[[Any, Any], _Parts]] = MappingProxyType(
    {
        "boxes": _boxes,
        "unlabelled_boxes": _unlabelled_boxes,
        "quads": _quads,
        "masks": _masks,
        "region_text": _region,
    }
)


def _converter(task: str) -> Callable[[Any, Any], _Parts]:
    spec = TASKS.get(task)
    if spec is None or spec.detections is None:
        return _nothing
    return CONVERTERS[spec.detections]


def to_detections(result: ShapesOfResult, sv):
    """See ``Florence2Result.to_supervision``; ``sv`` is the imported supervision module."""
    xyxy, names, masks, quads, scores = _converter(result.task)(result, sv)
    xyxy = _sorted_corners(xyxy)
    if len(xyxy) == 0:
        empty = sv.Detections.empty()
        empty.data = {CLASS_NAME: np.empty(0, dtype=str)}
        return empty
    data = {}
    if names is not None:
        data[CLASS_NAME] = names
    if quads is not None:
        data[ORIENTED_BOXES] = quads
    confidence = None if scores is None or None in scores else np.array(scores, dtype=np.float32)
    return sv.Detections(xyxy=xyxy, mask=masks, confidence=confidence, data=data)
