"""The shapes of a Florence-2 answer (boxes, quad boxes, polygons) and what the converters read of a result.

:class:`~.results.Florence2Result` holds these; the converters (:mod:`.coco`, :mod:`.supervision`,
:mod:`.drawing`) take any object with the fields of :class:`ShapesOfResult`, so they depend on this module
only and ``results`` can call them without an import circle. Coordinates are pixels of the original image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..inputs.image_size import ImageSize


@dataclass(frozen=True)
class BoundingBox:
    """An axis-aligned box ``(x1, y1, x2, y2)`` in pixels, with its label ("" when the task gives none)."""

    xyxy: tuple[float, float, float, float]
    label: str = ""
    score: float | None = None  # confidence in (0, 1] (tasks/confidence.py); None unless asked for


@dataclass(frozen=True)
class QuadBox:
    """A four-corner box ``(x1, y1, ..., x4, y4)`` in pixels (OCR with regions), with its text."""

    points: tuple[float, ...]
    label: str = ""
    score: float | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        xs, ys = self.points[0::2], self.points[1::2]
        return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True)
class Polygon:
    """One object as one or more polygons, each a flat ``(x1, y1, x2, y2, ...)`` tuple in pixels."""

    parts: tuple[tuple[float, ...], ...]
    label: str = ""
    score: float | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float] | None:
        """Bounds of every part with at least one point; None when there is none."""
        xs = [x for p in self.parts for x in p[0::2]]
        ys = [y for p in self.parts for y in p[1::2]]
        return (min(xs), min(ys), max(xs), max(ys)) if xs else None


class ShapesOfResult(Protocol):
    """What the converters read of a result (:class:`~.results.Florence2Result` has these fields)."""

    # read-only properties, so that a frozen dataclass (Florence2Result) matches
    @property
    def task(self) -> str:  # the task token
        ...

    @property
    def image_size(self) -> ImageSize:  # the image the coordinates refer to
        ...

    @property
    def text(self) -> str | None: ...

    @property
    def text_score(self) -> float | None: ...

    @property
    def boxes(self) -> tuple[BoundingBox, ...]: ...

    @property
    def quad_boxes(self) -> tuple[QuadBox, ...]: ...

    @property
    def polygons(self) -> tuple[Polygon, ...]: ...

    @property
    def raw(self) -> Mapping[str, Any]:  # ``run()``'s dict ``{task: answer}``
        ...

    @property
    def xyxy(self) -> np.ndarray:
        """Boxes as float32 [N, 4] (``boxes`` only)."""
        ...

    def __len__(self) -> int: ...
