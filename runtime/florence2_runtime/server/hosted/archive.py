"""The answer format of NVIDIA's hosted Florence-2: a zip with ``<id>.response`` and, for shapes, an overlay.

The hosted service answers ``POST /v1/vlm/microsoft/florence-2`` with a zip archive holding the JSON
response as ``<id>.response`` and, when the task produced boxes, quad boxes or polygons, the image with
them drawn (``<id>.jpg`` here, drawn by ``drawing.draw_result``). Its own example client sends
``Accept: application/json`` and unzips the body all the same, so that header alone cannot mean "JSON":

- ``?format=json`` / ``?format=zip`` decides when given;
- else a request that carries NVCF's asset headers (what the hosted service's clients send) gets the zip;
- else ``Accept: application/json`` (without ``application/zip``) gets the plain JSON, as before;
- everything else gets the zip.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, Literal

from PIL import Image

from ...tasks.confidence import text_and_score
from ...tasks.results import Florence2Result

ZIP_MEDIA_TYPE = "application/zip"
AnswerFormat = Literal["json", "zip"]


def wants_json(answer_format: AnswerFormat | None, accept: str, nvcf_headers: bool) -> bool:
    """True when the plain JSON answer was asked for (rules in the module docstring); ``nvcf_headers``:
    the request carries NVCF's asset headers."""
    if answer_format is not None:
        return answer_format == "json"
    if nvcf_headers:
        return False
    media = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "application/json" in media and ZIP_MEDIA_TYPE not in media


def overlay(task: str, answer: Any, image: Image.Image) -> Image.Image | None:
    """The image with the answer's shapes drawn (with their scores when it has them), or None when the
    answer has none (text tasks)."""
    if isinstance(text_and_score(answer)[0], str):
        return None
    result = Florence2Result.from_answer(task, answer, image.size)
    return result.draw(image) if len(result) else None


def build_zip(response: dict, overlay_image: Image.Image | None) -> bytes:
    """The hosted service's archive: ``<id>.response`` (the JSON) and ``<id>.jpg`` when there is an overlay."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{response['id']}.response", json.dumps(response))
        if overlay_image is not None:
            jpeg = io.BytesIO()
            overlay_image.convert("RGB").save(jpeg, "JPEG", quality=90)
            z.writestr(f"{response['id']}.jpg", jpeg.getvalue())
    return buf.getvalue()


def zip_answer(task: str, response: dict, result: dict, image: Image.Image) -> bytes:
    """``build_response``'s dict + ``run()``'s dict + the request's image -> the zip bytes."""
    return build_zip(response, overlay(task, result.get(task), image))
