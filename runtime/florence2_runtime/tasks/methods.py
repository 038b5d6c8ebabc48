"""The per-task methods of ``Florence2`` (the jobs Roboflow's inference-models offers).

Which task a method runs is written in the task table (:data:`.table.TASKS`: each task's ``method`` and
``option``); ``METHODS`` is that table read by method. Every method is a thin wrapper over
``Florence2.predict`` / ``predict_regions`` and returns a :class:`~florence2_runtime.tasks.results.Florence2Result`
(a list of them for several regions). Each takes an image or an ``EncodedImage``, ``scores=True`` for
confidences (:mod:`.confidence`) and generation keywords (transformers' names; by default up to 1024 new
tokens and the checkpoint's beams).

=========================  ==============================================================================
method                     task
=========================  ==============================================================================
caption_image              ``<CAPTION>``, ``<DETAILED_CAPTION>``, ``<MORE_DETAILED_CAPTION>`` (granularity)
detect_objects             ``<OD>``, ``<DENSE_REGION_CAPTION>``, ``<REGION_PROPOSAL>`` (labels_mode);
                           with ``classes``: ``<OPEN_VOCABULARY_DETECTION>`` once per class, merged
ocr_image                  ``<OCR>``
parse_document             ``<OCR_WITH_REGION>``
ground_phrase              ``<CAPTION_TO_PHRASE_GROUNDING>``
segment_phrase             ``<REFERRING_EXPRESSION_SEGMENTATION>``
segment_region             ``<REGION_TO_SEGMENTATION>``
classify_image_region      ``<REGION_TO_CATEGORY>``
caption_image_region       ``<REGION_TO_DESCRIPTION>``
ocr_image_region           ``<REGION_TO_OCR>``
=========================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .batch import merge_class_answers
from .prompts import _is_box
from .results import Florence2Result
from .table import TASKS, InputKind, TaskSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..inputs.encoded import EncodedImage
    from ..inputs.images import ImageInput

__all__ = ["METHODS", "MethodSpec", "TaskHost", "TaskMethods"]


@dataclass(frozen=True)
class MethodSpec:
    """A method's tasks, read from the task table: ``tasks`` maps the value of its ``option`` argument to a
    task token (one entry keyed ``None`` for methods without an option); ``takes``: none, text or region;
    ``when_given``: argument -> the task run when the method is given that argument (``classes``)."""

    tasks: Mapping[str | None, str]
    takes: InputKind
    option: str | None
    when_given: Mapping[str, str]

    def task(self, value: str | None = None) -> str:
        if self.option is None:
            return self.tasks[None]
        if value not in self.tasks:
            raise ValueError(
                f"{self.option} must be one of {', '.join(map(repr, self.tasks))}, got {value!r}"
            )
        return self.tasks[value]


def _method_spec(name: str, specs: Sequence[TaskSpec]) -> MethodSpec:
    """The tasks of method ``name`` (its rows of the task table) -> its MethodSpec."""
    given = {s.option.argument: s.token for s in specs if s.option is not None and s.option.value is None}
    chosen = [s for s in specs if s.token not in given.values()]
    arguments = {s.option.argument if s.option is not None else None for s in chosen}
    takes = {s.input for s in chosen}
    if len(arguments) != 1 or len(takes) != 1 or (None in arguments and len(chosen) != 1):
        raise ValueError(f"the task table gives method {name} inconsistent tasks: {[s.token for s in specs]}")
    return MethodSpec(
        tasks=MappingProxyType({s.option.value if s.option is not None else None: s.token for s in chosen}),
        takes=takes.pop(),
        option=arguments.pop(),
        when_given=MappingProxyType(given),
    )


def _methods() -> Mapping[str, MethodSpec]:
    by_method: dict[str, list[TaskSpec]] = {}
    for spec in TASKS.values():
        if spec.method is not None:
            by_method.setdefault(spec.method, []).append(spec)
    return MappingProxyType({name: _method_spec(name, specs) for name, specs in by_method.items()})


METHODS: Mapping[str, MethodSpec] = _methods()

ImageArg: TypeAlias = "ImageInput | EncodedImage"
RegionArg: TypeAlias = "Sequence[float] | Sequence[Sequence[float]]"


class TaskHost(Protocol):
    """What :class:`TaskMethods` needs of the class it is mixed into (``Florence2``, model.py)."""

    def predict(
        self: TaskHost,
        image: ImageArg,
        task: str,
        text: str | None = None,
        region: Sequence[float] | None = None,
        *,
        region_format: str = "pixels",
        scores: bool = False,
        **generation_kwargs: Any,
    ) -> Florence2Result: ...

    def predict_regions(
        self: TaskHost,
        image: ImageArg,
        task: str,
        regions: Sequence[Sequence[float]],
        *,
        region_format: str = "pixels",
        scores: bool = False,
        **generation_kwargs: Any,
    ) -> list[Florence2Result]: ...

    def _predict_prompts(
        self: TaskHost,
        image: ImageArg,
        task: str,
        *,
        texts: Sequence[str] | None = None,
        regions: Sequence[Sequence[float]] | None = None,
        region_format: str = "pixels",
        scores: bool = False,
        **generation_kwargs: Any,
    ) -> list[Florence2Result]: ...


class TaskMethods:
    """The per-task methods; mixed into ``Florence2`` (which provides ``predict``, ``_predict_prompts``, ...).

    Each method's ``self`` is a :class:`TaskHost`, so the type checker holds ``Florence2`` to that protocol."""

    # --- whole-image tasks -----------------------------------------------------------------------------
    def caption_image(
        self: TaskHost, image: ImageArg, granularity: str = "normal", **generation: Any
    ) -> Florence2Result:
        """A caption: ``granularity`` "normal", "detailed" or "very_detailed" (``result.text``)."""
        return self.predict(image, METHODS["caption_image"].task(granularity), **generation)

    def detect_objects(
        self: TaskHost,
        image: ImageArg,
        classes: Sequence[str] | None = None,
        labels_mode: str = "classes",
        **generation: Any,
    ) -> Florence2Result:
        """Objects as ``result.boxes``. Without ``classes``: ``labels_mode`` "classes" (``<OD>``), "captions"
        (dense region captions) or "rois" (region proposals, no labels). With ``classes``: open-vocabulary
        detection, one prompt per class in one batch over one vision encoding, each box labelled by its class
        (``result.raw`` holds the merged ``<OPEN_VOCABULARY_DETECTION>`` answer)."""
        spec = METHODS["detect_objects"]
        if classes is None:
            return self.predict(image, spec.task(labels_mode), **generation)
        if (
            isinstance(classes, str)
            or not all(isinstance(c, str) and c.strip() for c in classes)
            or not classes
        ):
            raise ValueError(f"classes must be a non-empty list of class names, got {classes!r:.100}")
        names = [c.strip() for c in classes]
        task = spec.when_given["classes"]
        results = self._predict_prompts(image, task, texts=names, **generation)
        merged = merge_class_answers(task, names, [r.raw for r in results])
        return Florence2Result.from_dict(merged, results[0].image_size)

    def ocr_image(self: TaskHost, image: ImageArg, **generation: Any) -> Florence2Result:
        """The text in the image (``result.text``)."""
        return self.predict(image, METHODS["ocr_image"].task(), **generation)

    def parse_document(self: TaskHost, image: ImageArg, **generation: Any) -> Florence2Result:
        """The text with its regions (``result.quad_boxes``, each labelled by its text)."""
        return self.predict(image, METHODS["parse_document"].task(), **generation)

    # --- tasks with a phrase -----------------------------------------------------------------------------
    def ground_phrase(self: TaskHost, image: ImageArg, phrase: str, **generation: Any) -> Florence2Result:
        """Boxes of the phrases of a caption (``result.boxes``)."""
        return self.predict(image, METHODS["ground_phrase"].task(), text=phrase, **generation)

    def segment_phrase(self: TaskHost, image: ImageArg, phrase: str, **generation: Any) -> Florence2Result:
        """The segmentation of what ``phrase`` refers to (``result.polygons``, ``result.masks()``)."""
        return self.predict(image, METHODS["segment_phrase"].task(), text=phrase, **generation)

    # --- region tasks: one region -> one result, several -> a list -------------------------------------------
    def segment_region(
        self: TaskHost,
        image: ImageArg,
        region: RegionArg,
        *,
        region_format: str = "pixels",
        **generation: Any,
    ) -> Florence2Result | list[Florence2Result]:
        """The segmentation of the object in ``region`` (``result.polygons``, ``result.masks()``)."""
        return _region_method(self, "segment_region", image, region, region_format, generation)

    def classify_image_region(
        self: TaskHost,
        image: ImageArg,
        region: RegionArg,
        *,
        region_format: str = "pixels",
        **generation: Any,
    ) -> Florence2Result | list[Florence2Result]:
        """The category of the object in ``region`` (``result.text``, and its box)."""
        return _region_method(self, "classify_image_region", image, region, region_format, generation)

    def caption_image_region(
        self: TaskHost,
        image: ImageArg,
        region: RegionArg,
        *,
        region_format: str = "pixels",
        **generation: Any,
    ) -> Florence2Result | list[Florence2Result]:
        """A description of ``region`` (``result.text``)."""
        return _region_method(self, "caption_image_region", image, region, region_format, generation)

    def ocr_image_region(
        self: TaskHost,
        image: ImageArg,
        region: RegionArg,
        *,
        region_format: str = "pixels",
        **generation: Any,
    ) -> Florence2Result | list[Florence2Result]:
        """The text in ``region`` (``result.text``)."""
        return _region_method(self, "ocr_image_region", image, region, region_format, generation)


def _region_method(
    host: TaskHost,
    name: str,
    image: ImageArg,
    region: RegionArg,
    region_format: str,
    generation: Mapping[str, Any],
) -> Florence2Result | list[Florence2Result]:
    """Region ``(x1, y1, x2, y2)`` -> one result; a list of regions -> one result per region (one
    vision encoding, one batch). Pixels, or fractions with ``region_format="normalized"``."""
    # predict_regions takes a single box too (build_task_texts)
    regions: Sequence[Any] = region
    results = host.predict_regions(
        image, METHODS[name].task(), regions, region_format=region_format, **generation
    )
    return results[0] if _is_box(region) else results
