"""Images for tests: drawn from a seed, never read from disk, and encoded to bytes.

:func:`make_test_image` draws what ``florence2_export.verify.make_test_image`` draws (the export check's
images; ``tests/export/test_test_data.py`` holds the two equal), without importing the export package,
which needs torch.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def make_test_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A colourful deterministic RGB image: smooth gradients, a few solid shapes and some noise."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    freq = rng.uniform(1.0, 4.0, size=3)
    img = np.stack(
        [
            0.5 + 0.5 * np.sin(2 * np.pi * f * (u * c + v * (1 - c)) + p)
            for f, p, c in zip(freq, phase, rng.uniform(0, 1, size=3))
        ],
        axis=-1,
    )
    for _ in range(int(rng.integers(2, 5))):  # solid rectangles and discs
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.3)
        colour = rng.uniform(0, 1, size=3)
        inside = (
            ((u - cx) ** 2 + (v - cy) ** 2 < r * r)
            if rng.random() < 0.5
            else (np.abs(u - cx) < r) & (np.abs(v - cy) < r * 0.6)
        )
        img[inside] = colour
    img += rng.normal(0, 0.03, size=img.shape)
    return Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    """Uniform RGB noise: every pixel independent, so any resize or re-encoding shows."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    """``image`` as a file of format ``fmt`` (PNG, JPEG, ...) with Pillow's ``save`` options."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
