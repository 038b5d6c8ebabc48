"""The OpenAPI document of the server: pydantic models of every request and answer, and the paths table.

The routes stay plain Starlette handlers (they parse and check their own input, so that every refusal is
the server's ``{"error": {"kind", "message"}}``); this module only describes them. ``schema()`` builds an
OpenAPI 3.1 document from the models below and ``ROUTES``; ``/docs`` is Swagger UI, served from the
``fastapi-offline`` package's files when it is installed (no CDN), else from FastAPI's default CDN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ..tasks.prompts import TASKS, RegionFormat

if TYPE_CHECKING:  # a Literal built from the TASKS table is no static type: the checker sees a str
    TaskName = str
else:  # pydantic's schema: the enum of the task tokens
    TaskName = Literal[tuple(TASKS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- /v1/infer -------------------------------------------------------------------------------------------
class Generation(_Strict):
    """Generation settings (transformers' names); unset ones take the model's generation_config.json, except
    max_new_tokens: up to 1024 unless set."""

    max_new_tokens: int | None = Field(
        None, ge=1, description="default 1024; capped by --max-new-tokens and the model's positions"
    )
    min_new_tokens: int | None = Field(None, ge=0)
    num_beams: int | None = Field(None, ge=1, description="capped by --max-num-beams")
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    length_penalty: float | None = None
    early_stopping: bool | Literal["never"] | None = None


class TaskEntry(_Strict):
    """One of several tasks on the image, with its own input."""

    task: TaskName
    text: str | None = None
    region: list[float] | None = Field(None, min_length=4, max_length=4)


class InferRequest(_Strict):
    """One task (``task``, ``text``, ``region``) or several (``tasks``) on one image."""

    image: str = Field(
        description="the image as base64 or a data URL (data:image/png;base64,...); URLs are not fetched"
    )
    task: TaskName | None = Field(None, description="the task token")
    tasks: list[TaskName | TaskEntry] | None = Field(
        None,
        min_length=1,
        description="instead of task/text/region: several tasks, one vision encoding; "
        "result holds every task's answer",
    )
    text: str | None = Field(
        None,
        description="the input of a task that takes text; region tasks also take "
        "'<loc_x1><loc_y1><loc_x2><loc_y2>' here",
    )
    region: list[float] | None = Field(
        None, min_length=4, max_length=4, description="[x1, y1, x2, y2] for region tasks"
    )
    region_format: RegionFormat = Field(
        "pixels",
        description="pixels of the image, or fractions of its width / height",
    )
    generation: Generation | None = None


class InferForm(BaseModel):
    """The same fields as multipart form data, the image as a file."""

    image: bytes = Field(json_schema_extra={"format": "binary"}, description="the image file")
    task: TaskName | None = None
    tasks: str | None = Field(None, description="instead of task: a JSON list, as in the JSON request")
    text: str | None = None
    region: str | None = Field(None, description="x1,y1,x2,y2 or [x1, y1, x2, y2]")
    region_format: RegionFormat = "pixels"
    generation: str | None = Field(None, description="a JSON object, as in the JSON request")


class Timing(BaseModel):
    """Where the request's time went, in milliseconds."""

    decode_image: float
    queue: float
    inference: float
    total: float


class InferResponse(BaseModel):
    """``result`` is exactly ``Florence2.run()``'s dict ``{task: answer}``."""

    result: dict[str, str | dict[str, Any]] = Field(
        description="{task: answer}: a string for text tasks, else an object such as {bboxes, labels}, "
        "{quad_boxes, labels} or {polygons, labels}, as transformers' post_process_generation gives"
    )
    timing_ms: Timing
    batch_size: int = Field(description="how many requests shared the model call")


class ErrorDetail(BaseModel):
    kind: str = Field(description="a short machine-readable name, e.g. invalid_task_input")
    message: str = Field(description="what was wrong, in words")


class ErrorResponse(BaseModel):
    """Every refusal (4xx; 503 busy, 504 timeout)."""

    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str
    providers: list[str]
    queue_depth: int
    running: int
    max_batch_size: int
    rss_mib: float


# --- NVIDIA's hosted format ------------------------------------------------------------------------------
class NimMessage(BaseModel):
    role: str = "user"
    content: str = Field(
        description="'<TASK>text<img src=\"data:image/jpeg;base64,...\" />' or with "
        "'data:image/jpeg;asset_id,ID' for an uploaded asset"
    )


class NimRequest(BaseModel):
    """The request body of NVIDIA's hosted Florence-2 (``build.nvidia.com/microsoft/microsoft-florence-2``)."""

    messages: list[NimMessage] = Field(min_length=1)
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="new tokens; default 1024, capped by --max-new-tokens and the model's positions",
    )


class Entities(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. polygons_labels of <OPEN_VOCABULARY_DETECTION>

    bboxes: list[list[float]] | None = None
    quad_boxes: list[list[float]] | None = None
    labels: list[str] | None = None
    bboxes_labels: list[str] | None = None
    polygons: list[list[list[float]]] | None = None


class NimAnswer(BaseModel):
    role: Literal["assistant"]
    content: str
    entities: Entities | None


class NimChoice(BaseModel):
    index: int
    finish_reason: str
    message: NimAnswer


class NimResponse(BaseModel):
    """The hosted service's ``<id>.response`` JSON (also the body with ``?format=json``)."""

    id: str
    object: str
    model: str
    choices: list[NimChoice]
    content: str = Field(description="'<CAPTION>a dog' for text tasks, the task token otherwise")
    entities: Entities | None = Field(description="null for text tasks")


class AssetCreate(BaseModel):
    contentType: str = Field(description="an image type, e.g. image/jpeg")
    description: str | None = None


class AssetCreated(BaseModel):
    assetId: str
    uploadUrl: str = Field(description="PUT the image bytes here (no API key: the URL's token authorises it)")
    contentType: str
    description: str
    expiresInSeconds: float


class AssetUploaded(BaseModel):
    assetId: str
    bytes: int


MODELS = (
    InferRequest,
    InferForm,
    InferResponse,
    ErrorResponse,
    HealthResponse,
    NimRequest,
    NimResponse,
    AssetCreate,
    AssetCreated,
    AssetUploaded,
)


# --- paths -----------------------------------------------------------------------------------------------
def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict:
    return {"application/json": {"schema": _ref(model)}}


_ERRORS = {
    400: "the request cannot be read",
    401: "missing or wrong API key",
    404: "not found",
    409: "conflict",
    410: "gone (expired)",
    413: "too large",
    415: "unsupported content type",
    422: "a value is wrong",
    429: "too many",
    503: "busy (Retry-After)",
    504: "timed out",
    507: "storage full",
}


def _op(
    summary: str,
    ok: dict,
    errors: tuple[int, ...],
    body: dict | None = None,
    params: list | None = None,
    ok_status: int = 200,
    open_route: bool = False,
    description: str = "",
) -> dict:
    op: dict[str, Any] = {
        "summary": summary,
        "description": description or summary,
        "responses": {str(ok_status): ok},
    }
    for status in errors:
        op["responses"][str(status)] = {"description": _ERRORS[status], "content": _json(ErrorResponse)}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    if open_route:
        op["security"] = []
    return op


_ASSET_ID = {"name": "asset_id", "in": "path", "required": True, "schema": {"type": "string"}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}

ROUTES: dict[str, dict[str, dict]] = {
    "/v1/infer": {
        "post": _op(
            "Run one task on one image",
            {"description": "run()'s answer and timings", "content": _json(InferResponse)},
            (400, 401, 413, 415, 422, 503, 504),
            body={**_json(InferRequest), "multipart/form-data": {"schema": _ref(InferForm)}},
        )
    },
    "/v1/vlm/microsoft/florence-2": {
        "post": _op(
            "NVIDIA's hosted Florence-2 API",
            {
                "description": "a zip with <id>.response (the JSON) and, for boxes and polygons, <id>.jpg (the overlay); "
                "the JSON itself with ?format=json, or Accept: application/json without NVCF asset headers",
                "content": {"application/zip": _BINARY, **_json(NimResponse)},
            },
            (400, 401, 404, 409, 410, 413, 422, 503, 504),
            body=_json(NimRequest),
            params=[
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["json", "zip"]},
                },
                {
                    "name": "NVCF-INPUT-ASSET-REFERENCES",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "asset ids the content refers to (as NVCF)",
                },
            ],
            description="Request and answer as NVIDIA's hosted service; images inline (base64) or as asset ids "
            "uploaded through /v2/nvcf/assets.",
        )
    },
    "/v2/nvcf/assets": {
        "post": _op(
            "Create an asset (NVCF assets API)",
            {"description": "the asset id and its upload URL", "content": _json(AssetCreated)},
            (400, 401, 422, 429),
            body=_json(AssetCreate),
        )
    },
    "/v2/nvcf/assets/{asset_id}/upload": {
        "put": _op(
            "Upload an asset's bytes",
            {"description": "stored", "content": _json(AssetUploaded)},
            (400, 401, 404, 410, 413, 422, 507),
            body={"image/*": _BINARY, "application/octet-stream": _BINARY},
            params=[
                _ASSET_ID,
                {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
            open_route=True,
        )
    },
    "/v2/nvcf/assets/{asset_id}": {
        "delete": _op(
            "Delete an asset", {"description": "deleted"}, (401, 404, 410), params=[_ASSET_ID], ok_status=204
        )
    },
    "/health": {
        "get": _op(
            "Liveness and load", {"description": "ok", "content": _json(HealthResponse)}, (), open_route=True
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics",
            {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            (401,),
        )
    },
}


def schema(title: str, version: str, paths: set[str] | None = None, secured: bool = True) -> dict:
    """The OpenAPI 3.1 document (``paths``: the routes this app serves, default all of ``ROUTES``;
    ``secured``: the server wants an API key)."""
    _, defs = models_json_schema(
        [(m, "validation") for m in MODELS], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Florence-2 on ONNX Runtime: /v1/infer answers exactly Florence2.run(); "
            "/v1/vlm/microsoft/florence-2 and /v2/nvcf/assets follow NVIDIA's hosted API.",
        },
        "paths": {p: ops for p, ops in ROUTES.items() if paths is None or p in paths},
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "--api-key / $FLORENCE2_API_KEY",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}] if secured else [],
    }


def swagger_assets() -> dict[str, Any] | None:
    """{file name: path} of Swagger UI's files from ``fastapi-offline``, or None when it is not installed."""
    try:
        from importlib.resources import files

        static = files("fastapi_offline") / "static"
    except (ImportError, ModuleNotFoundError):
        return None
    names = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
    found = {n: static / n for n in names}
    return found if all(p.is_file() for p in found.values()) else None
