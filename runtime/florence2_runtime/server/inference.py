"""``POST /v1/infer``: one task, or several, on one image; ``result`` is exactly ``Florence2.run()``'s dict.

The body is JSON (:class:`InferRequest`), or the same fields as multipart form data with the image as a
file or as base64 text (``region`` as ``x1,y1,x2,y2`` or JSON, ``generation`` and ``tasks`` as JSON): the
form becomes the JSON fields first (:class:`InferRoute`), so one model validates both. ``"scores": true``
adds each object's confidence (``run(..., scores=True)``'s answers). The task names
come from the runtime's task table (``tasks.prompts.TASKS``); what each task takes is the library's rule.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError
from starlette.datastructures import FormData, UploadFile
from starlette.responses import JSONResponse, Response

from ..errors import brief
from ..tasks.batch import TaskInput
from ..tasks.prompts import TASKS, RegionFormat
from .bodies import BodyRoute, load_json
from .deps import API_KEY, ServerDep
from .handlers import FIELD_KINDS, error_responses
from .images import decode_base64
from .jobs import Generation, answer
from .problems import bad_request, invalid

if TYPE_CHECKING:  # a Literal built from the task table is no static type: the checker sees a str
    TaskName = str
else:  # pydantic: the task tokens, validated and listed as the schema's enum
    TaskName = Literal[tuple(TASKS)]


def _image_source(value: Any) -> str | None:
    return "base64" if isinstance(value, str) else "file" if isinstance(value, bytes) else None


def _task_form(value: Any) -> str | None:
    return "token" if isinstance(value, str) else "entry" if isinstance(value, dict) else None


ImageData = Annotated[
    Annotated[str, Tag("base64")] | Annotated[bytes, Tag("file")],  # bytes: a multipart file
    Discriminator(
        _image_source,
        custom_error_type="invalid_image",
        custom_error_message="must be a base64 string or a data URL (or a file in a multipart form)",
    ),
    WithJsonSchema({"type": "string"}),
]
Region = Annotated[list[float], Field(min_length=4, max_length=4)]


class TaskEntry(BaseModel):
    """One of several tasks on the image, with its own input."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: TaskName
    text: str | None = None
    region: Region | None = None


TaskItem = Annotated[
    Annotated[TaskName, Tag("token")] | Annotated[TaskEntry, Tag("entry")],
    Discriminator(
        _task_form,
        custom_error_type="invalid_task_input",
        custom_error_message="must be a task token or a {task, text, region} object",
    ),
]


class InferRequest(BaseModel):
    """One task (``task``, ``text``, ``region``) or several (``tasks``) on one image."""

    model_config = ConfigDict(extra="forbid", strict=True)
    FORM_JSON: ClassVar[tuple[str, ...]] = ("region", "generation", "tasks")  # JSON text in a form
    FORM_FLAGS: ClassVar[tuple[str, ...]] = ("scores",)  # true / false in a form

    image: ImageData = Field(
        description="the image as base64 or a data URL (data:image/png;base64,...); URLs are not fetched"
    )
    task: TaskName | None = Field(default=None, description="the task token")
    tasks: list[TaskItem] | None = Field(
        default=None,
        min_length=1,
        max_length=len(TASKS),
        description="instead of task/text/region: several tasks, one vision encoding; "
        "result holds every task's answer",
    )
    text: str | None = Field(
        default=None,
        description="the input of a task that takes text; region tasks also take "
        "'<loc_x1><loc_y1><loc_x2><loc_y2>' here",
    )
    region: Region | None = Field(default=None, description="[x1, y1, x2, y2] for region tasks")
    region_format: RegionFormat = Field(
        default="pixels", description="pixels of the image, or fractions of its width / height"
    )
    generation: Generation | None = None
    scores: bool = Field(
        default=False,
        description="also each object's confidence in (0, 1], as run(..., scores=True): a 'scores' list "
        "parallel to bboxes, quad_boxes, polygons (in that order); a text answer becomes "
        "{text, scores}",
    )

    @model_validator(mode="after")
    def _tasks_named_one_way(self) -> InferRequest:
        if self.task is None and self.tasks is None:
            raise PydanticCustomError(
                "missing_field", "'task' is required, e.g. \"<OD>\" (or 'tasks', a list)"
            )
        if self.task is not None and self.tasks is not None:
            raise PydanticCustomError("invalid_task_input", "give either 'task' or 'tasks', not both")
        if self.tasks is not None and (self.text is not None or self.region is not None):
            raise PydanticCustomError(
                "invalid_task_input",
                "with 'tasks', give each task's text or region in its own entry "
                '({"task": ..., "text": ...}), not at the top level',
            )
        return self

    def task_inputs(self) -> list[TaskInput]:
        """The tasks asked for, each with its input (checked by the library later)."""
        if self.tasks is None:
            return [TaskInput(str(self.task), self.text, self.region)]
        return [
            TaskInput(t) if isinstance(t, str) else TaskInput(t.task, t.text, t.region) for t in self.tasks
        ]


class Timing(BaseModel):
    """Where the request's time went, in milliseconds (total: from the checked request to the answer)."""

    decode_image: float
    queue: float
    inference: float
    total: float


class InferResponse(BaseModel):
    """``result`` is exactly ``Florence2.run()``'s dict ``{task: answer}``."""

    result: dict[str, str | dict[str, Any]] = Field(
        description="{task: answer}: a string for text tasks, else an object such as {bboxes, labels}, "
        "{quad_boxes, labels} or {polygons, labels}, as transformers' post_process_generation gives; "
        "with scores: true, shape answers also hold 'scores' and a text answer is {text, scores}"
    )
    timing_ms: Timing
    batch_size: int = Field(description="how many requests shared the model call")


class InferRoute(BodyRoute):
    """``/v1/infer`` takes multipart forms too: the form's fields become the JSON body's."""

    takes_forms = True

    async def form_fields(self, form: FormData) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        try:
            for key, value in form.multi_items():
                if key in fields:
                    raise bad_request("invalid_multipart", f"field {brief(key)} is given more than once")
                if isinstance(value, UploadFile):
                    if key != "image":
                        raise invalid(
                            "unexpected_field", f"only 'image' may be a file, got a file in {brief(key)}"
                        )
                    fields[key] = await value.read()
                elif key in InferRequest.FORM_FLAGS:
                    fields[key] = _form_flag(key, value)
                else:
                    fields[key] = _form_json(key, value) if key in InferRequest.FORM_JSON else value
        finally:
            await form.close()
        return fields


def _form_json(key: str, value: str) -> Any:
    """A form's ``region`` ('[x1, y1, x2, y2]' or 'x1,y1,x2,y2'), ``generation`` (a JSON object) or
    ``tasks`` (a JSON list)."""
    text = value.strip()
    if key == "region" and text and not text.startswith("["):
        text = f"[{text}]"
    try:
        return load_json(text)
    except (ValueError, RecursionError):  # JSONDecodeError, or an int past Python's digit limit
        what = {"region": "[x1, y1, x2, y2] or x1,y1,x2,y2", "tasks": "a JSON list"}.get(key, "a JSON object")
        raise invalid(
            FIELD_KINDS[key], f"multipart field {brief(key)} must be {what}, got {brief(value)}"
        ) from None


_FLAG_WORDS = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}


def _form_flag(key: str, value: str) -> bool:
    """A form's yes/no field (``scores``): true / false (also 1 / 0, on / off: what HTML checkboxes send)."""
    flag = _FLAG_WORDS.get(value.strip().lower())
    if flag is None:
        raise invalid(
            "invalid_request", f"multipart field {brief(key)} must be true or false, got {brief(value)}"
        )
    return flag


def _form_schema() -> dict[str, Any]:
    """The multipart body in the OpenAPI document: the JSON body's fields as form fields."""
    fields = {
        name: {"type": "string", "description": f.description or ""}
        for name, f in InferRequest.model_fields.items()
    }
    fields["image"] = {"type": "string", "format": "binary", "description": "the image file (or base64 text)"}
    for name in InferRequest.FORM_JSON:
        fields[name]["description"] = f"{fields[name]['description']} (as JSON text)".lstrip()
    for name in InferRequest.FORM_FLAGS:
        fields[name]["description"] += " (true or false)"
    return {
        "requestBody": {
            "content": {"multipart/form-data": {"schema": {"type": "object", "properties": fields}}}
        }
    }


router = APIRouter(route_class=InferRoute, dependencies=[API_KEY], tags=["inference"])


@router.post(
    "/v1/infer",
    summary="Run one task, or several, on one image",
    response_model=InferResponse,
    responses=error_responses(400, 401, 408, 413, 415, 422, 503, 504),
    openapi_extra=_form_schema(),
)
async def infer(body: InferRequest, request: Request, server: ServerDep) -> Response:
    start = time.perf_counter()
    image = (
        body.image if isinstance(body.image, bytes) else await asyncio.to_thread(decode_base64, body.image)
    )
    outcome, decode_ms = await answer(
        server, request, body.task_inputs(), body.region_format, body.generation, image, body.scores
    )
    timing = {
        "decode_image": decode_ms,
        "queue": outcome.queue_ms,
        "inference": outcome.inference_ms,
        "total": (time.perf_counter() - start) * 1000.0,
    }
    return JSONResponse(
        {
            "result": outcome.result,
            "timing_ms": {k: round(v, 3) for k, v in timing.items()},
            "batch_size": outcome.batch_size,
        }
    )
