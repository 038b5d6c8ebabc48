"""Image sizes: one type that names its order, one check.

Every image size in the runtime is an :class:`ImageSize` ``(width, height)`` in pixels, as PIL's
``Image.size`` and transformers' ``post_process_generation(image_size=...)`` have it: the original image's
size (regions, answers, typed results, :class:`~.encoded.EncodedImage`) and the model's input size
(``RuntimeConfig.image_size``, the graphs' ``pixel_values`` [B, 3, height, width]). Code reads the
fields by name (``size.width``, ``size.height``), never by position.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

from ..errors import brief

__all__ = ["MAX_SIDE", "ImageSize"]

MAX_SIDE = 2**31 - 1  # pixels; no image format goes beyond (PIL, PNG, TIFF: 32-bit sizes)


class ImageSize(NamedTuple):
    """``(width, height)`` of an image in pixels: two positive ints."""

    width: int
    height: int

    @classmethod
    def of(cls, value: Any, name: str = "image_size") -> ImageSize:
        """``value`` (any pair: tuple, list, numpy ints, ``PIL.Image.size``) checked -> an ImageSize.

        The one rule for image sizes: two positive whole numbers (at most :data:`MAX_SIDE`), width first.
        ``ValueError`` otherwise, naming ``name``."""
        try:
            width, height = value
        except (TypeError, ValueError):
            width = height = None
        if not (_whole(width) and _whole(height) and 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise ValueError(
                f"{name} must be (width, height): two positive whole numbers of pixels, got {brief(value)}"
            )
        return cls(int(width), int(height))


def _whole(v: Any) -> bool:
    """An int, or a finite float with no fractional part (640.0); not a bool."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return False
    if isinstance(v, numbers.Integral):
        return True
    try:
        return math.isfinite(v) and float(v).is_integer()
    except OverflowError:
        return False
