"""What to ask the model and how its answers become labelled objects: :class:`LabelSpec`, :class:`Detection`.

One table, :data:`LABEL_TASKS`, says how each task that finds objects is used:

=====================================  ==========================================================================
task                                   objects and their class
=====================================  ==========================================================================
``<OD>`` (default), ``<DENSE_REGION_CAPTION>``   boxes, labelled by the model; ``classes`` keeps only those labels
``<REGION_PROPOSAL>``                  boxes, class ``object``
``<OCR_WITH_REGION>``                  the bounds of each text line's quad box, class ``text``
``<OPEN_VOCABULARY_DETECTION>``        one prompt per class (default task when ``classes`` are given); boxes,
                                       and polygons where the model answers with them
``<CAPTION_TO_PHRASE_GROUNDING>``      one prompt per class: the boxes of that phrase
``<REFERRING_EXPRESSION_SEGMENTATION>``  one prompt per class: polygons (masks in the dataset)
=====================================  ==========================================================================

Every prompt of an image shares one vision encoding. Each detection carries its confidence
(``run(..., scores=True)``'s score of the object, :mod:`florence2_runtime.tasks.confidence`; ``None``
for an answer without scores); :func:`answer_scores` is the one place that reads it from an answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .. import Florence2Result

__all__ = ["LABEL_TASKS", "Detection", "LabelSpec", "TaskUse", "answer_scores"]

MIN_POLYGON_POINTS = 3  # a part with fewer points draws no mask (supervision / OpenCV's rule)


@dataclass(frozen=True)
class TaskUse:
    """How a task labels: ``classes`` is "filter" (the model names the objects; classes keep some),
    "prompt" (one prompt per class, needed) or "none" (no classes); ``label``: the one class it gives."""

    classes: str
    label: str | None = None


LABEL_TASKS: Mapping[str, TaskUse] = MappingProxyType(
    {
        "<OD>": TaskUse("filter"),
        "<DENSE_REGION_CAPTION>": TaskUse("filter"),
        "<REGION_PROPOSAL>": TaskUse("none", "object"),
        "<OCR_WITH_REGION>": TaskUse("none", "text"),
        "<OPEN_VOCABULARY_DETECTION>": TaskUse("prompt"),
        "<CAPTION_TO_PHRASE_GROUNDING>": TaskUse("prompt"),
        "<REFERRING_EXPRESSION_SEGMENTATION>": TaskUse("prompt"),
    }
)
DEFAULT_TASK = "<OD>"
DEFAULT_CLASSES_TASK = "<OPEN_VOCABULARY_DETECTION>"
UNNAMED = "object"  # the class of a box the model gave no label


@dataclass(frozen=True)
class Detection:
    """One labelled object in image pixels: box ``(x1, y1, x2, y2)``, confidence (None: the answer had no
    scores) and, for a segmentation, its polygon parts (flat ``x, y, ...``, each with >= 3 points)."""

    label: str
    xyxy: tuple[float, float, float, float]
    score: float | None = None
    polygons: tuple[tuple[float, ...], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "box": list(self.xyxy), "score": self.score}
        if self.polygons:
            out["polygons"] = [list(p) for p in self.polygons]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Detection:
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        score = d.get("score")
        return cls(
            d["label"],
            (x1, y1, x2, y2),
            None if score is None else float(score),
            tuple(tuple(float(v) for v in p) for p in d.get("polygons", ())),
        )


def parse_classes(classes: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"cat, dog"`` or ``["cat", "dog"]`` -> ``("cat", "dog")``; ValueError for an empty or repeated name."""
    if classes is None:
        return ()
    names = classes.split(",") if isinstance(classes, str) else list(classes)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"classes must be names, got {classes!r:.100}")
    out = tuple(n.strip() for n in names)
    if not out or not all(out):
        raise ValueError(f"classes must be a comma-separated list of names, got {classes!r:.100}")
    if len(set(out)) != len(out):
        raise ValueError(f"a class is listed twice in {', '.join(out)}")
    return out


@dataclass(frozen=True)
class LabelSpec:
    """What to label: a task of :data:`LABEL_TASKS` and the classes (``()``: whatever the model finds)."""

    task: str = DEFAULT_TASK
    classes: tuple[str, ...] = field(default=())

    @classmethod
    def make(cls, task: str | None = None, classes: str | Sequence[str] | None = None) -> LabelSpec:
        """Checked: ValueError names a task that finds no objects, or classes the task cannot take."""
        names = parse_classes(classes)
        if task is None:
            task = DEFAULT_CLASSES_TASK if names else DEFAULT_TASK
        use = LABEL_TASKS.get(task)
        if use is None:
            raise ValueError(f"{task!r} does not find objects to label; use one of: {', '.join(LABEL_TASKS)}")
        if use.classes == "prompt" and not names:
            raise ValueError(f"{task} needs classes (--classes 'cat,dog'): it is asked once per class")
        if use.classes == "none" and names:
            raise ValueError(f"{task} labels every object {use.label!r}; it takes no classes")
        return cls(task, names)

    @property
    def prompts(self) -> list[tuple[str, str | None]]:
        """(task, text) per prompt asked of every image."""
        if LABEL_TASKS[self.task].classes == "prompt":
            return [(self.task, name) for name in self.classes]
        return [(self.task, None)]

    @property
    def fixed_classes(self) -> tuple[str, ...] | None:
        """The dataset's classes when known before labelling (given, or the task's one label), else None."""
        use = LABEL_TASKS[self.task]
        if use.label is not None:
            return (use.label,)
        return self.classes or None

    def detections(
        self, answers: Sequence[Mapping[str, Any]], image_size: tuple[int, int]
    ) -> list[Detection]:
        """One image's answers (one ``{task: answer}`` per prompt, in :attr:`prompts` order) -> its objects."""
        use = LABEL_TASKS[self.task]
        found: list[Detection] = []
        for (task, text), answer in zip(self.prompts, answers):
            for d in read_answer(task, answer[task], image_size):
                if use.classes == "prompt":
                    label = text or d.label
                elif use.label is not None:
                    label = use.label
                else:
                    label = d.label.strip() or UNNAMED
                    if self.classes and label not in self.classes:
                        continue
                found.append(Detection(label, d.xyxy, d.score, d.polygons))
        return found


def answer_scores(answer: Any, count: int) -> list[float | None]:
    """The confidence of each of an answer's ``count`` objects (boxes, then quad boxes, then polygons), or
    ``None`` each while the answer has no ``scores`` list of that length: the one place scores are read."""
    scores = answer.get("scores") if isinstance(answer, Mapping) else None
    if isinstance(scores, (list, tuple)) and len(scores) == count:
        return [None if s is None else float(s) for s in scores]
    return [None] * count


def read_answer(task: str, answer: Any, image_size: tuple[int, int]) -> list[Detection]:
    """A task's answer -> detections with the model's labels: boxes; the bounds of quad boxes; polygon
    objects with their parts of >= 3 points (an object with none is dropped). Empty boxes are dropped."""
    result = Florence2Result.from_answer(task, answer, image_size)
    scores = answer_scores(answer, len(result))
    out: list[Detection] = []
    objects: list[tuple[str, tuple[float, float, float, float], tuple[tuple[float, ...], ...]]] = []
    for b in result.boxes:
        objects.append((b.label, b.xyxy, ()))
    for q in result.quad_boxes:
        objects.append((q.label, _bounds([q.points]), ()))
    for g in result.polygons:
        parts = tuple(p for p in g.parts if len(p) >= 2 * MIN_POLYGON_POINTS)
        objects.append((g.label, _bounds(parts) if parts else (0.0, 0.0, 0.0, 0.0), parts))
    for (label, xyxy, parts), score in zip(objects, scores):
        x1, y1, x2, y2 = xyxy
        if x2 > x1 and y2 > y1:
            out.append(Detection(label, (x1, y1, x2, y2), score, parts))
    return out


def _bounds(parts: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    xs = [x for p in parts for x in p[0::2]]
    ys = [y for p in parts for y in p[1::2]]
    return min(xs), min(ys), max(xs), max(ys)
