"""Image loading and preprocessing, bit-identical to Florence-2's ``CLIPImageProcessor`` (PIL backend).

What transformers 5 does for Florence-2 (``CLIPImageProcessorPil``; ``AutoProcessor`` picks it when
torchvision is not installed, the torchvision backend otherwise): PIL bicubic resize of the uint8
RGB image to exactly the model's size, no crop, ``x.astype(float64) * rescale_factor`` cast to
float32, then ``(x - mean) / std`` in float32, channels first. The published checkpoints set
``do_convert_rgb`` to null, so the processor converts nothing: images must be RGB already, which
:func:`load_image` guarantees (PIL ``convert("RGB")``; files also get their EXIF orientation applied,
as ``transformers.image_utils.load_image`` does for paths).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .image_size import ImageSize

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str) -> bool:
    """``http://...``, ``s3://...``: a string that names a remote resource (never fetched here), not a path."""
    return _URL.match(text) is not None


ImageInput = Image.Image | np.ndarray | str | os.PathLike | bytes | bytearray | memoryview


def _open_encoded(source, what: str) -> Image.Image:
    """Decode an image file (path or file object), apply its EXIF orientation, convert to RGB."""
    try:
        with Image.open(source) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except UnidentifiedImageError:  # PIL's message repeats the path; ``what`` names it already
        raise ValueError(f"{what}: cannot decode the image (not a format PIL can read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{what}: cannot decode the image ({e})") from None


def _from_array(arr: np.ndarray) -> Image.Image:
    """HW or HWC (1, 3 or 4 channels) uint8 -> RGB image (gray repeated, alpha dropped)."""
    if arr.dtype != np.uint8:
        raise ValueError(f"image array must have dtype uint8 (values 0-255), got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim != 3:
        raise ValueError(f"image array must be HxW or HxWxC, got {arr.ndim} dimensions (shape {arr.shape})")
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] != 3:
        raise ValueError(f"image array must have 1, 3 or 4 channels (HxWxC), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image array is empty (shape {arr.shape})")
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def load_image(image: ImageInput) -> Image.Image:
    """Any supported input -> an RGB ``PIL.Image.Image``.

    Accepts PIL images (any mode; ``convert("RGB")``), uint8 arrays HxW or HxWxC with 1/3/4 channels,
    paths (``str`` / ``os.PathLike``) and encoded file bytes (PNG, JPEG, ...).
    """
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image is empty ({image.width}x{image.height})")
        try:
            return image if image.mode == "RGB" else image.convert("RGB")
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot convert a PIL image of mode {image.mode!r} to RGB ({e})") from None
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, (str, os.PathLike)):
        if isinstance(image, str) and is_url(image):
            raise ValueError(f"{image}: image URLs are not fetched; download the image and pass the file")
        path = Path(image)
        if path.is_dir():
            raise ValueError(f"{path}: is a folder, not an image file")
        if not path.is_file():
            raise ValueError(f"{path}: image file not found")
        return _open_encoded(path, str(path))
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise ValueError("image bytes are empty")
        return _open_encoded(io.BytesIO(data), "image bytes")
    raise ValueError(
        f"unsupported image type {type(image).__name__}: pass a PIL image, a uint8 HxW / HxWxC numpy array, "
        "a file path or encoded image bytes"
    )


def resize_for_model(image: Image.Image, size: tuple[int, int], resample: int = 3) -> Image.Image:
    """An RGB image resized to the model's input ``size`` (width, height: an :class:`ImageSize`) exactly as
    the processor does it.

    Resizing an image that already has that size returns an equal copy, so a caller may resize early
    (and drop the full-resolution pixels) without changing what :func:`preprocess` makes of it."""
    size = ImageSize.of(size, "the model's image size")
    return image.resize(size, resample=Image.Resampling(resample), reducing_gap=None)


def preprocess(
    images: Sequence[Image.Image],
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    resample: int = 3,
    rescale_factor: float = 1 / 255,
) -> np.ndarray:
    """RGB images -> pixel values float32 [B, 3, H, W], with H, W the model's input ``size`` (width, height:
    an :class:`ImageSize`).

    Same arithmetic as the processor: uint8 -> float64 * rescale_factor -> float32, then
    (x - mean) / std in float32.
    """
    size = ImageSize.of(size, "the model's image size")
    height, width = size.height, size.width
    if len(images) == 0:
        raise ValueError("preprocess needs at least one image")
    batch = np.empty((len(images), height, width, 3), dtype=np.uint8)  # [B, H, W, 3]
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image) or im.mode != "RGB":
            raise ValueError(
                f"image {i}: expected an RGB PIL image (use load_image first), got "
                f"{getattr(im, 'mode', type(im).__name__)!r}"
            )
        batch[i] = np.asarray(resize_for_model(im, size, resample))
    x: np.ndarray = (batch.astype(np.float64) * float(rescale_factor)).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
