"""The prompts sent to the model, from the task table (:data:`.table.TASKS`), and their checks.

``construct_prompt`` is ``Florence2Processor._construct_prompts`` for one string, quirks included:
task tokens are found by substring search in table order; a task token that takes no input must be the
whole text (else ``ValueError``); for a task with input, *every* occurrence of its token is removed and the
rest, stripped, fills ``{input}``; any other text passes through unchanged.

``build_task_text`` is the stricter front door of ``Florence2.run``: it checks the task and its input
(``check_task_input``, the one place these rules live) and writes a pixel region as
``<loc_x1><loc_y1><loc_x2><loc_y2>``, quantised exactly like transformers'
``Florence2PostProcessor.quantize`` (float32 arithmetic); a normalised region (``region_format="normalized"``,
fractions in [0, 1]) goes to bin ``min(floor(c * 1000), 999)``. ``build_task_texts`` makes one text per
region for several regions. ``encode_prompts`` tokenises processor texts and refuses a prompt too long for
the encoder (the one place that check lives).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np

from ..errors import brief
from ..inputs.image_size import ImageSize
from .locations import NUM_BINS, format_region, quantize
from .table import TASKS, TaskSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..inputs.tokenizer import Florence2Tokenizer

__all__ = [
    "REGION_FORMATS",
    "REGION_TOLERANCE_PX",
    "TASKS",
    "TASK_PROMPTS_WITHOUT_INPUTS",
    "TASK_PROMPTS_WITH_INPUT",
    "PromptConfig",
    "RegionFormat",
    "TaskSpec",
    "build_task_text",
    "build_task_texts",
    "check_task_input",
    "construct_prompt",
    "encode_prompts",
    "format_region",
    "quantize_region",
    "region_bins",
]

REGION_TOLERANCE_PX = 1.0  # how far (pixels) a region may stick out of the image and still be clamped
RegionFormat = Literal[
    "pixels", "normalized"
]  # pixels of the image, or fractions of its width / height in [0, 1]
REGION_FORMATS: tuple[str, ...] = get_args(RegionFormat)

# transformers' Florence2Processor.task_prompts_without_inputs / task_prompts_with_input, in its order
TASK_PROMPTS_WITHOUT_INPUTS: Mapping[str, str] = MappingProxyType(
    {token: spec.prompt for token, spec in TASKS.items() if spec.input == "none"}
)
TASK_PROMPTS_WITH_INPUT: Mapping[str, str] = MappingProxyType(
    {token: spec.prompt for token, spec in TASKS.items() if spec.input != "none"}
)

_REGION_TEXT = re.compile(r"(?:<loc_(0|[1-9][0-9]{0,2})>){4}")
_LOC_VALUE = re.compile(r"<loc_([0-9]+)>")


def _first_token_in(text: str, tokens: Iterable[str]) -> str | None:
    return next((token for token in tokens if token in text), None)


def construct_prompt(
    text: str,
    prompts_without_inputs: Mapping[str, str] | None = None,
    prompts_with_input: Mapping[str, str] | None = None,
) -> str:
    """The prompt ``Florence2Processor`` sends to the model for ``text`` (e.g. ``"<OD>"``).

    The two tables default to the published ones; an empty or missing table also means the default.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    without_inputs = prompts_without_inputs or TASK_PROMPTS_WITHOUT_INPUTS
    with_input = prompts_with_input or TASK_PROMPTS_WITH_INPUT
    prompt = text
    token = _first_token_in(prompt, without_inputs)
    if token is not None:
        if prompt != token:
            raise ValueError(f"Task token {token} should be the only content in the prompt.")
        prompt = without_inputs[token]
    token = _first_token_in(prompt, with_input)
    if token is not None:
        prompt = with_input[token].format(input=prompt.replace(token, "").strip())
    return prompt


# --- regions -----------------------------------------------------------------------------------------
def _is_finite_number(v: Any) -> bool:
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float (hundreds of digits)
        return False


def _region_image_size(image_size: Any) -> ImageSize:
    if image_size is None:
        raise ValueError("a region in pixels needs image_size=(width, height) of the image it refers to")
    return ImageSize.of(image_size)


_REGION_UNITS = MappingProxyType(
    {
        "pixels": "in pixels",
        "normalized": "as fractions of the image width and height in [0, 1]",
    }
)


def _check_region_format(region_format: Any) -> str:
    if region_format not in REGION_FORMATS:
        raise ValueError(
            f"region_format must be one of {', '.join(REGION_FORMATS)}, got {brief(region_format)}"
        )
    return region_format


def _region_coords(region: Any, region_format: str = "pixels") -> tuple[float, float, float, float]:
    """Shape, finiteness and order of one box (and [0, 1] for normalised boxes); no image needed."""
    units = _REGION_UNITS[_check_region_format(region_format)]
    if isinstance(region, (str, bytes)):
        raise ValueError(f"region must be (x1, y1, x2, y2) numbers {units}, got the string {brief(region)}")
    try:
        coords = tuple(region)
    except TypeError:
        raise ValueError(f"region must be (x1, y1, x2, y2) {units}, got {brief(region)}") from None
    if len(coords) != 4 or not all(_is_finite_number(c) for c in coords):
        raise ValueError(f"region must be 4 finite numbers (x1, y1, x2, y2) {units}, got {brief(region)}")
    x1, y1, x2, y2 = coords
    if x1 > x2 or y1 > y2:
        raise ValueError(f"region {brief(coords)} must have x1 <= x2 and y1 <= y2")
    if region_format == "normalized" and not all(0 <= c <= 1 for c in coords):
        raise ValueError(
            f"normalized region {brief(coords)} must lie in [0, 1] (fractions of width and height)"
        )
    return coords


def _check_region(region: Any, image_size: ImageSize) -> tuple[float, float, float, float]:
    coords = _region_coords(region, "pixels")
    x1, y1, x2, y2 = coords
    width, height = image_size.width, image_size.height
    tol = REGION_TOLERANCE_PX
    if min(x1, y1) < -tol or x2 > width + tol or y2 > height + tol:
        raise ValueError(f"region {brief(coords)} lies outside the {width}x{height} image (width x height)")
    return coords


def quantize_region(region: Sequence[float], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel box ``(x1, y1, x2, y2)`` -> location bins, ``clamp(floor(c / (size / 1000)), 0, 999)``.

    Same float32 arithmetic as ``Florence2PostProcessor.quantize(torch.tensor([region]), image_size)``
    (:func:`.locations.quantize`); x uses the width, y the height. Raises ValueError for a malformed or
    out-of-image region.
    """
    size = _region_image_size(image_size)
    x1, y1, x2, y2 = quantize(_check_region(region, size), size)
    return x1, y1, x2, y2


def _normalized_bins(region: Sequence[float]) -> tuple[int, int, int, int]:
    """Fractions in [0, 1] -> ``clamp(floor(c * 1000), 0, 999)``; rounding to 6 decimals first absorbs
    binary noise (``0.57 * 1000 == 569.99...``) so a fraction ``k / 1000`` always lands in bin ``k``."""
    x1, y1, x2, y2 = (
        min(NUM_BINS - 1, math.floor(round(c * NUM_BINS, 6))) for c in _region_coords(region, "normalized")
    )
    return x1, y1, x2, y2


def region_bins(
    region: Sequence[float], image_size: tuple[int, int] | None = None, *, region_format: str = "pixels"
) -> tuple[int, int, int, int]:
    """One box -> its 4 location bins. ``"pixels"`` needs ``image_size`` (see ``quantize_region``);
    ``"normalized"`` boxes are fractions of the width / height and need no image size."""
    if _check_region_format(region_format) == "normalized":
        return _normalized_bins(region)
    return quantize_region(region, _region_image_size(image_size))  # None: a clear ValueError


def _check_region_text(task: str, text: str) -> str:
    stripped = text.strip()
    if not _REGION_TEXT.fullmatch(stripped):
        raise ValueError(
            f"{task} takes a region: pass region=(x1, y1, x2, y2) in pixels, or text "
            f"of the form '<loc_x1><loc_y1><loc_x2><loc_y2>' with bins 0..999; got {brief(text)}"
        )
    x1, y1, x2, y2 = (int(v) for v in _LOC_VALUE.findall(stripped))
    if x1 > x2 or y1 > y2:
        raise ValueError(f"region text {brief(stripped)} must have x1 <= x2 and y1 <= y2")
    return stripped


def _is_box(value: Any) -> bool:
    """True for one box (4 numbers), False for a sequence of boxes."""
    try:
        return len(value) == 4 and all(_is_finite_number(v) for v in value)
    except TypeError:
        return False


def _check_encodable(text: str) -> None:
    """The tokenizer takes UTF-8: a lone surrogate (JSON ``"\\ud800"``) is refused here, by name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"text is not valid Unicode: a lone surrogate {text[e.start]!r} at character {e.start}"
        ) from None


def check_task_input(
    task: str,
    text: str | None = None,
    region: Sequence[float] | None = None,
    *,
    region_format: str = "pixels",
) -> TaskSpec:
    """Validate a task and its input as far as possible without the image; returns the task's spec.

    The one place where task, text and region rules live: ``build_task_text`` calls it, and so can a
    command line or a server to reject a request before loading any image. Raises ``ValueError``.
    """
    spec = TASKS.get(task) if isinstance(task, str) else None
    if spec is None:
        raise ValueError(f"unknown task {brief(task)}; valid tasks: {', '.join(TASKS)}")
    _check_region_format(region_format)
    if text is not None and not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if text is not None:
        _check_encodable(text)
    has_text = text is not None and text.strip() != ""
    has_region = region is not None
    if spec.input == "none":
        if has_text or has_region:
            raise ValueError(f"{task} takes no input; pass neither text nor region")
        return spec
    if has_text and has_region:
        raise ValueError(f"{task}: pass either text or region, not both")
    if has_region and spec.input != "region":
        raise ValueError(f"{task} takes text, not a region")
    if not (has_text or has_region):
        what = "region=(x1, y1, x2, y2) in pixels (or '<loc_..>' text)" if spec.input == "region" else "text"
        raise ValueError(f"{task} needs an input: pass {what}")
    if has_region:
        _region_coords(region, region_format)
        return spec
    assert text is not None  # has_text
    if spec.input == "region":
        _check_region_text(task, text)
    else:
        inner = _first_token_in(text, TASKS)
        if inner is not None:
            raise ValueError(f"the text of {task} must not contain a task token, found {inner}")
    return spec


def build_task_text(
    task: str,
    text: str | None = None,
    region: Sequence[float] | None = None,
    image_size: tuple[int, int] | None = None,
    *,
    region_format: str = "pixels",
) -> str:
    """The processor text for one task, checked: e.g. ``"<REGION_TO_CATEGORY><loc_1><loc_2><loc_3><loc_4>"``.

    task: a key of ``TASKS``; text: the input of a task that takes one (blank counts as none);
    region: ``(x1, y1, x2, y2)`` for the region tasks, in pixels with ``image_size=(width, height)``, or
    fractions of the width / height in [0, 1] with ``region_format="normalized"`` (no image size needed).
    """
    spec = check_task_input(task, text, region, region_format=region_format)
    if spec.input == "none":
        return task
    if region is not None:
        return task + format_region(region_bins(region, image_size, region_format=region_format))
    assert text is not None  # check_task_input: a task that takes input has text or a region
    if spec.input == "region":
        return task + _check_region_text(task, text)
    return task + text.strip()


def build_task_texts(
    task: str,
    text: str | None = None,
    regions: Sequence[Any] | None = None,
    image_size: tuple[int, int] | None = None,
    *,
    region_format: str = "pixels",
) -> list[str]:
    """``build_task_text`` for several regions at once: one processor text per region, in order.

    Florence-2's region tasks read one box per prompt, so several regions mean several prompts (run as
    one batch). ``regions`` is a sequence of boxes; a single box is accepted too. Without regions this
    is ``[build_task_text(task, text)]``.
    """
    if regions is None:
        return [build_task_text(task, text, None, image_size, region_format=region_format)]
    if isinstance(regions, (str, bytes)):
        raise ValueError(
            f"regions must be a sequence of (x1, y1, x2, y2) boxes, got the string {brief(regions)}"
        )
    boxes = [regions] if _is_box(regions) else list(regions) if _iterable(regions) else None
    if not boxes:
        raise ValueError(
            f"regions must be a non-empty sequence of (x1, y1, x2, y2) boxes, got {brief(regions)}"
        )
    texts = []
    for i, box in enumerate(boxes):
        try:
            texts.append(build_task_text(task, text, box, image_size, region_format=region_format))
        except ValueError as e:
            raise ValueError(f"region {i}: {e}" if len(boxes) > 1 else str(e)) from None
    return texts


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


# --- prompt ids --------------------------------------------------------------------------------------
class PromptConfig(Protocol):
    """What :func:`encode_prompts` reads of a model's ``RuntimeConfig`` (read-only)."""

    @property
    def task_prompts_without_inputs(self) -> Mapping[str, str]: ...  # the checkpoint's own; empty: published

    @property
    def task_prompts_with_input(self) -> Mapping[str, str]: ...

    @property
    def max_position_embeddings(self) -> int: ...

    @property
    def num_image_tokens(self) -> int: ...


def encode_prompts(
    tokenizer: Florence2Tokenizer, config: PromptConfig, texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Processor texts (``"<OD>"``, ``build_task_text``'s output) -> (text ids [B, T], mask [B, T]) int64.

    Each text becomes its prompt (``construct_prompt`` with the model's own prompt tables, if it has any);
    a prompt longer than the encoder's room next to the image tokens is refused with ``ValueError``."""
    prompts = [
        construct_prompt(t, config.task_prompts_without_inputs, config.task_prompts_with_input) for t in texts
    ]
    text_ids, text_mask = tokenizer.encode_prompts(prompts)
    room = config.max_position_embeddings - config.num_image_tokens
    if text_ids.shape[1] > room:
        raise ValueError(
            f"the prompt is {text_ids.shape[1]} tokens long; this model takes at most {room} "
            f"next to the image's {config.num_image_tokens} tokens"
        )
    return text_ids, text_mask
