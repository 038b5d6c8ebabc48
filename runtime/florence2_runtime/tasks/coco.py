"""``Florence2Result`` -> a COCO-style dict (one image, its annotations and categories)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .masks import MIN_POLYGON_POINTS
from .shapes import ShapesOfResult


def _bbox(points_x: Sequence[float], points_y: Sequence[float]) -> list[float]:
    """``[x, y, w, h]`` of the bounds of some points."""
    x1, y1 = min(points_x), min(points_y)
    return [x1, y1, max(points_x) - x1, max(points_y) - y1]


def polygon_area(flat: Sequence[float]) -> float:
    """Area of a simple polygon ``(x1, y1, x2, y2, ...)`` (shoelace formula)."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2.0


_Object = tuple[str, list[float], float, "list[list[float]] | None", "float | None"]


def _objects(result: ShapesOfResult) -> list[_Object]:
    """(label, bbox, area, segmentation or None, score or None) per object, boxes then quads then polygons."""
    out: list[_Object] = []
    for b in result.boxes:
        x1, y1, x2, y2 = b.xyxy
        bbox = _bbox((x1, x2), (y1, y2))
        out.append((b.label, bbox, float(bbox[2] * bbox[3]), None, b.score))
    for q in result.quad_boxes:
        flat = list(q.points)
        out.append((q.label, _bbox(flat[0::2], flat[1::2]), polygon_area(flat), [flat], q.score))
    for g in result.polygons:
        parts = [list(p) for p in g.parts if len(p) >= 2 * MIN_POLYGON_POINTS]
        if not parts:
            continue
        xs = [x for p in parts for x in p[0::2]]
        ys = [y for p in parts for y in p[1::2]]
        out.append((g.label, _bbox(xs, ys), float(sum(polygon_area(p) for p in parts)), parts, g.score))
    return out


def to_coco(
    result: ShapesOfResult,
    image_id: int,
    category_ids: Mapping[str, int] | None,
    first_annotation_id: int = 1,
    file_name: str | None = None,
) -> dict[str, Any]:
    """See ``Florence2Result.to_coco``."""
    objects = _objects(result)
    if category_ids is None:
        category_ids = {label: i for i, label in enumerate(sorted({o[0] for o in objects}), start=1)}
    missing = sorted({o[0] for o in objects} - set(category_ids))
    if missing:
        raise ValueError(f"labels without a category id: {missing!r:.300}; add them to category_ids")
    width, height = result.image_size.width, result.image_size.height
    image: dict[str, Any] = {"id": image_id, "width": width, "height": height}
    if file_name is not None:
        image["file_name"] = file_name
    annotations = []
    for i, (label, bbox, area, segmentation, score) in enumerate(objects):
        ann: dict[str, Any] = {
            "id": first_annotation_id + i,
            "image_id": image_id,
            "category_id": category_ids[label],
            "bbox": bbox,
            "area": area,
            "iscrowd": 0,
        }
        if segmentation is not None:
            ann["segmentation"] = segmentation
        if score is not None:  # a result of run(..., scores=True): COCO's results format has "score"
            ann["score"] = score
        annotations.append(ann)
    by_id = sorted(category_ids.items(), key=lambda kv: kv[1])
    categories = [{"id": cid, "name": name} for name, cid in by_id]
    return {"images": [image], "annotations": annotations, "categories": categories}
