"""Location tokens: Florence-2 writes a coordinate as one of 1000 bins, ``<loc_0>`` ... ``<loc_999>``.

x bins divide the image width, y bins its height. Pixels -> bins (:func:`quantize`, for region prompts) and
bins -> pixels (:func:`dequantize`, for answers) use transformers' float32 arithmetic
(``Florence2PostProcessor.quantize`` / ``dequantize`` on torch tensors), so results match to the pixel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..inputs.image_size import ImageSize

__all__ = ["BOX_BINS", "LOC_BIN", "LOC_TOKEN", "NUM_BINS", "dequantize", "format_region", "quantize"]

NUM_BINS = 1000
LOC_TOKEN = r"<loc_\d+>"  # one location token (a pattern without groups, to build others from)
LOC_BIN = re.compile(r"<loc_(\d+)>")  # one location token, its bin captured
BOX_BINS = re.compile(r"<loc_(\d+)>" * 4)  # a box: four tokens in a row, x1 y1 x2 y2 captured
# note: \d is any Unicode decimal digit, and int() accepts those too (as transformers' regexes do)


def quantize(coords: Sequence[float], image_size: ImageSize) -> tuple[int, ...]:
    """Pixel coordinates ``[x, y, x, y, ...]`` -> bins ``clamp(floor(c / (size / 1000)), 0, 999)``.

    float32 arithmetic as ``Florence2PostProcessor.quantize``; x uses the width, y the height."""
    size = ImageSize.of(image_size)
    values = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
    per_bin = np.array([size.width / NUM_BINS, size.height / NUM_BINS], dtype=np.float32)
    return tuple(int(b) for b in np.clip(np.floor(values / per_bin), 0, NUM_BINS - 1).reshape(-1))


def dequantize(bins: Sequence[int], image_size: ImageSize) -> list[int]:
    """Flat ``[x, y, x, y, ...]`` location bins -> pixel ints, as transformers' ``dequantize``.

    ``int((bin + 0.5) * (size / 1000))`` with the bin, the 0.5 and ``size / 1000`` all in float32 and the
    product rounded to float32 before truncation (torch's arithmetic). x uses the width, y the height.
    """
    size = ImageSize.of(image_size)
    values = np.asarray(bins, dtype=np.int64).reshape(-1, 2).astype(np.float32) + np.float32(0.5)
    per_bin = np.array([size.width / NUM_BINS, size.height / NUM_BINS], dtype=np.float32)
    return (values * per_bin).astype(np.int32).reshape(-1).tolist()


def format_region(bins: Sequence[int]) -> str:
    """``(1, 2, 3, 4)`` -> ``"<loc_1><loc_2><loc_3><loc_4>"``."""
    return "".join(f"<loc_{int(b)}>" for b in bins)
