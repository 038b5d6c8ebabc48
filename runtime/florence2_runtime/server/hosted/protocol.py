"""The request and response format of NVIDIA's hosted Florence-2 (``POST /v1/vlm/microsoft/florence-2``).

Request: ``{"messages": [{"role": "user", "content": "<TASK>text<img src=\\"data:image/jpeg;base64,...\\" />"}]}``;
the text (only for tasks that take one) may stand before or after the ``<img>`` tag. Region tasks take
their region as text, ``<loc_x1><loc_y1><loc_x2><loc_y2>``. The image is inline base64 or an NVCF asset id
(``data:image/jpeg;asset_id,ID``) uploaded to this server's asset store first (``assets.py``).

``max_tokens`` (optional) sets the number of new tokens; without it the answer may run to 1024 tokens.

Response: the fields of the hosted service's ``.response`` JSON, ``content`` (``"<TASK>answer"`` for text
tasks, the task token otherwise) and ``entities`` (``bboxes``, ``quad_boxes``, ``labels``,
``bboxes_labels``, ``polygons``, null when absent; null for text tasks), both at the top level and in an
OpenAI-style ``choices[0].message``.

Scores (this server's addition, ``"scores": true`` in the request): ``entities.scores``, each object's
confidence parallel to the objects (``run(..., scores=True)``'s ``scores``). A text task's answer has no
place for its score in this format (``content`` is ``"<TASK>answer"``, ``entities`` null): it is left out.
"""

from __future__ import annotations

import re
import uuid

from ...tasks.confidence import text_and_score
from ..problems import bad_request, invalid

_IMG_TAG = re.compile(r"""<img\s+src\s*=\s*(?P<q>["'])(?P<src>.*?)(?P=q)\s*/?>""", re.IGNORECASE | re.DOTALL)
_TASK = re.compile(r"\s*(?P<task><[A-Z_]+>)")
_ASSET = re.compile(r"data:[^,;]*;asset_id,(?P<id>.*)", re.IGNORECASE | re.DOTALL)
ENTITY_KEYS = ("bboxes", "quad_boxes", "labels", "bboxes_labels", "polygons")


def parse_content(content: str) -> tuple[str, str | None, str]:
    """A user message's content -> (task, text or None, image source: a data URL or base64)."""
    tags = list(_IMG_TAG.finditer(content))
    if len(tags) != 1:
        raise bad_request(
            "invalid_content", f'content must hold exactly one <img src="..." /> tag, found {len(tags)}'
        )
    src = tags[0].group("src").strip()
    rest = (content[: tags[0].start()] + content[tags[0].end() :]).strip()
    m = _TASK.match(rest)
    if m is None:
        raise invalid("unknown_task", "content must start with a task token such as <CAPTION> or <OD>")
    text = rest[m.end() :].strip()
    return m.group("task"), (text or None), src


def asset_id(src: str) -> str | None:
    """The asset id of an ``data:image/...;asset_id,ID`` image source, None for inline images."""
    m = _ASSET.match(src)
    if m is None:
        return None
    value = m.group("id").strip()
    if not value:
        raise bad_request("invalid_content", "the <img> tag names an empty asset id")
    return value


def build_response(task: str, result: dict, model_name: str) -> dict:
    """``run()``'s ``{task: answer}`` -> the hosted service's response fields."""
    answer, _ = text_and_score(result.get(task))  # a text answer's score has no place here
    if isinstance(answer, str):
        content, entities = task + answer, None
    else:
        content = task
        entities = {k: None for k in ENTITY_KEYS}
        entities.update(answer if isinstance(answer, dict) else {})
    message = {"role": "assistant", "content": content, "entities": entities}
    return {
        "id": str(uuid.uuid4()),
        "object": "chat.completion",
        "model": model_name,
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        "content": content,
        "entities": entities,
    }
