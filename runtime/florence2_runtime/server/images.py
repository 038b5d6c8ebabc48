"""Images from requests: base64 / data-URL decoding and a decompression-bomb guard before the full decode.

The decoded image is exactly what ``Florence2.run`` would make of the same bytes (``preprocess.load_image``).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from ..inputs.image_size import ImageSize
from ..inputs.images import is_url, load_image, resize_for_model
from .problems import RequestError, bad_request

_DATA_URL = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.IGNORECASE
)
_WHITESPACE = re.compile(r"\s+")
_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSED = frozenset({5, 6, 7, 8})  # orientations that swap width and height


def decode_base64(value: object) -> bytes:
    """A base64 string or a ``data:image/...;base64,...`` URL -> bytes. URLs to fetch are refused."""
    if not isinstance(value, str):
        raise bad_request(
            "invalid_image", f"image must be a base64 string or a data URL, got {type(value).__name__}"
        )
    text = value.strip()
    if not text:
        raise bad_request("invalid_image", "image is empty")
    if is_url(text):
        raise bad_request(
            "invalid_image", "image URLs are not fetched; send the image itself as base64 or a data URL"
        )
    if text[:5].lower() == "data:":
        m = _DATA_URL.match(text)
        if m is None or not m.group("b64"):
            raise bad_request(
                "invalid_base64", "data URL must look like 'data:image/png;base64,<base64 data>'"
            )
        text = text[m.end() :]
    text = _WHITESPACE.sub("", text)
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request("invalid_base64", f"image is not valid base64 ({e})") from None
    if not data:
        raise bad_request("invalid_image", "image is empty")
    return data


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Encoded image bytes -> RGB PIL image, refusing non-images, bombs and truncated files.

    The pixel count comes from the header (``Image.open`` is lazy); only then are the pixels decoded.
    """
    probe_image(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return load_image(data)
    except ValueError as e:
        raise bad_request("corrupt_image", f"the image is truncated or corrupt: {e}") from None
    except Exception as e:  # a decoder bug must not become a 500
        raise bad_request("corrupt_image", f"the image cannot be decoded ({type(e).__name__}: {e})") from None


def decode_for_model(
    data: bytes, max_pixels: int, size: ImageSize, resample: int = 3, jpeg_draft: bool = False
) -> tuple[Image.Image, ImageSize]:
    """Encoded bytes -> (the RGB image at the model's ``size``, the original image's size).

    Only what the model sees is kept: the full-resolution pixels are dropped as soon as they are resized
    (:func:`~florence2_runtime.inputs.images.resize_for_model`, so the model's input is unchanged). The
    original size stays for the region prompt and the answer's coordinates. ``jpeg_draft``: JPEGs are
    decoded at the smallest 1/2, 1/4 or 1/8 scale still at least the model's size (less memory and
    time; the pixels then differ slightly from a full decode)."""
    if not jpeg_draft:
        image = decode_image(data, max_pixels)
        return resize_for_model(image, size, resample), ImageSize.of(image.size)
    original = probe_image(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (max(size),) * 2)  # either orientation still covers the model's size
                im.load()
                image = ImageOps.exif_transpose(im).convert("RGB")
    except Exception as e:
        raise bad_request(
            "corrupt_image", f"the image is truncated or corrupt ({type(e).__name__}: {e})"
        ) from None
    return resize_for_model(image, size, resample), ImageSize.of(original)


def probe_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """The displayed (width, height) from the image header (EXIF rotation applied), refusing non-images
    (400) and too many pixels (413)."""
    orientation = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                try:
                    orientation = int(im.getexif().get(_ORIENTATION, 1))
                except Exception:  # a broken EXIF block: load_image ignores it the same way
                    orientation = 1
    except Image.DecompressionBombError:
        width, height = None, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise bad_request("not_an_image", f"the data is not an image PIL can read ({e})") from None
    if width is None or width * height > max_pixels:
        size = "more than PIL's own limit of" if width is None else f"{width}x{height} = {width * height}"
        raise RequestError(
            413,
            "image_too_large",
            f"image has {size} pixels; this server accepts at most {max_pixels} (decompression-bomb guard)",
        )
    if width == 0 or height == 0:
        raise bad_request("not_an_image", f"image is empty ({width}x{height})")
    return (height, width) if orientation in _TRANSPOSED else (width, height)
