"""Draw a ``Florence2Result`` on its image with Pillow only.

Line width and font size follow the image's shorter side, so the drawing reads the same on a 64 px
thumbnail and a 6000 px photo. Labels are written on a filled box in the object's colour (black or
white text, whichever contrasts more), so they stay readable on any background. Polygons are filled
half-transparently; a text answer without shapes (captions, OCR) is written in a banner at the top.
"""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from ..inputs.image_size import ImageSize
from ..inputs.images import ImageInput, load_image
from .shapes import ShapesOfResult

__all__ = ["DrawStyle", "draw_result"]

# A qualitative palette with good contrast on photos (RGB).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (0, 0, 128),
)


@dataclass(frozen=True)
class DrawStyle:
    """line_width / font_size: pixels, None = scaled to the image; fill_alpha: polygon fill opacity
    (0..1); labels: write the labels; text: write a text answer that has no shapes; scores: write each
    shape's score after its label (results of ``run(..., scores=True)``)."""

    line_width: int | None = None
    font_size: int | None = None
    fill_alpha: float = 0.35
    labels: bool = True
    text: bool = True
    scores: bool = True


def colour_for(label: str) -> tuple[int, int, int]:
    """A stable colour per label (same label -> same colour, across runs and processes)."""
    digest = hashlib.blake2s(label.encode("utf-8"), digest_size=2).digest()
    return PALETTE[int.from_bytes(digest, "big") % len(PALETTE)]


def _ink_on(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except (TypeError, AttributeError, OSError):  # older Pillow or no FreeType: fixed bitmap font
        return ImageFont.load_default()


def _scaled_sizes(image: Image.Image, style: DrawStyle) -> tuple[int, int]:
    short = min(image.size)
    line = style.line_width if style.line_width is not None else max(1, round(short / 200))
    font = style.font_size if style.font_size is not None else max(11, round(short / 30))
    if line < 1 or font < 1:
        raise ValueError(f"line_width and font_size must be >= 1, got {style.line_width}, {style.font_size}")
    return line, font


class _Canvas:
    """An RGBA overlay drawn on top of the image, with the scale from result to image pixels."""

    def __init__(self, image: Image.Image, result_size: ImageSize, style: DrawStyle):
        self.image = image.convert("RGBA")
        self.overlay = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.overlay)
        self.sx = image.width / result_size.width
        self.sy = image.height / result_size.height
        self.line, size = _scaled_sizes(image, style)
        self.font = _font(size)
        self.style = style

    def points(self, flat: Sequence[float]) -> list[tuple[float, float]]:
        return [(x * self.sx, y * self.sy) for x, y in zip(flat[0::2], flat[1::2])]

    def label(self, text: str, anchor: tuple[float, float], colour: tuple[int, int, int]) -> None:
        """``text`` on a filled box whose bottom-left is ``anchor`` (moved inside the image)."""
        if not (self.style.labels and text):
            return
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        pad = max(1, self.line)
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(max(0.0, anchor[0]), max(0.0, self.overlay.width - w))
        y = anchor[1] - h if anchor[1] - h >= 0 else anchor[1]
        y = min(max(0.0, y), max(0.0, self.overlay.height - h))
        self.draw.rectangle([x, y, x + w, y + h], fill=colour + (255,))
        self.draw.text((x + pad - left, y + pad - top), text, font=self.font, fill=_ink_on(colour) + (255,))

    def outline(self, pts: list[tuple[float, float]], colour: tuple[int, int, int], fill: bool) -> None:
        if len(pts) >= 3:
            if fill:
                self.draw.polygon(pts, fill=colour + (round(255 * self.style.fill_alpha),))
            self.draw.line(pts + pts[:1], fill=colour + (255,), width=self.line, joint="curve")
        elif pts:
            self.draw.line(pts if len(pts) > 1 else pts * 2, fill=colour + (255,), width=self.line)

    def banner(self, text: str) -> None:
        """A text answer, wrapped to the image width, on a dark band at the top."""
        if not (self.style.text and text):
            return
        char_w = max(1.0, self.draw.textlength("n", font=self.font))
        lines = textwrap.wrap(text, width=max(8, int(self.overlay.width / char_w) - 2))[:6]
        pad = max(2, self.line * 2)
        _, top, _, bottom = self.draw.textbbox((0, 0), "Ag", font=self.font)
        line_h = bottom - top + pad // 2
        self.draw.rectangle([0, 0, self.overlay.width, len(lines) * line_h + pad], fill=(0, 0, 0, 170))
        for i, line in enumerate(lines):
            xy = (pad, pad // 2 + i * line_h - top)
            self.draw.text(xy, line, font=self.font, fill=(255, 255, 255, 255))

    def result(self) -> Image.Image:
        return Image.alpha_composite(self.image, self.overlay).convert("RGB")


def _caption(label: str, score: float | None, style: DrawStyle) -> str:
    """The text written at a shape: its label, then its score when there is one and ``style.scores``."""
    if score is None or not style.scores:
        return label
    return f"{label} {score:.2f}".strip()


def draw_result(
    result: ShapesOfResult, image: ImageInput, style: DrawStyle | None = None, **options
) -> Image.Image:
    """A new RGB image: ``image`` with ``result`` drawn on it; ``options`` are ``DrawStyle`` fields."""
    style = style or DrawStyle(**options)
    canvas = _Canvas(load_image(image), result.image_size, style)
    labels = []  # drawn last, above every shape
    for box in result.boxes:
        colour = colour_for(box.label)
        x1, y1, x2, y2 = box.xyxy
        (ax, ay), (bx, by) = canvas.points([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)])
        canvas.draw.rectangle([ax, ay, bx, by], outline=colour + (255,), width=canvas.line)
        labels.append((_caption(box.label, box.score, style), (ax, ay), colour))
    for quad in result.quad_boxes:
        colour = colour_for(quad.label)
        pts = canvas.points(quad.points)
        canvas.outline(pts, colour, fill=False)
        labels.append((_caption(quad.label, quad.score, style), min(pts, key=lambda p: (p[1], p[0])), colour))
    for obj in result.polygons:
        colour = colour_for(obj.label)
        for part in obj.parts:
            canvas.outline(canvas.points(part), colour, fill=True)
        if obj.xyxy is not None:
            x1, y1, _, _ = obj.xyxy
            labels.append((_caption(obj.label, obj.score, style), (x1 * canvas.sx, y1 * canvas.sy), colour))
    for text, anchor, colour in labels:
        canvas.label(text, anchor, colour)
    if not len(result) and result.text:
        canvas.banner(result.text)
    return canvas.result()
