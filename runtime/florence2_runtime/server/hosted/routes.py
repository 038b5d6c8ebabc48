"""The routes of NVIDIA's hosted Florence-2 API on this server:

- ``POST /v1/vlm/microsoft/florence-2`` (API key): :class:`HostedRequest` -> a zip with ``<id>.response``
  (:class:`HostedResponse`) and the overlay, or that JSON alone (``archive.wants_json``);
- ``POST /v2/nvcf/assets`` (API key) ``{"contentType": "image/jpeg", "description": "..."}`` ->
  :class:`AssetCreated`: an asset id and its upload URL;
- ``PUT <uploadUrl>`` (the token in the URL is the credential, as with NVCF's pre-signed URLs) with the
  image bytes -> :class:`AssetUploaded`; checked to be an image within the size limits;
- ``DELETE /v2/nvcf/assets/{asset_id}`` (API key) -> 204.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from ...tasks.batch import TaskInput
from ..bodies import BodyRoute, read_body
from ..deps import API_KEY, ServerDep
from ..handlers import error_responses
from ..images import decode_base64, decode_image, probe_image
from ..jobs import Generation, answer
from ..problems import RequestError, bad_request
from . import archive
from .protocol import asset_id, build_response, parse_content

HOSTED_ROUTE = "/v1/vlm/microsoft/florence-2"
UPLOAD_ROUTE = "/v2/nvcf/assets/{asset_id}/upload"  # authorised by its token, not by the API key
_BINARY = {"schema": {"type": "string", "format": "binary"}}
MAX_MESSAGES = 64  # a bound on the work of validating a body (Florence-2 reads one message)


class HostedMessage(BaseModel):
    model_config = ConfigDict(strict=True)

    role: str = "user"
    content: str = Field(
        description="'<TASK>text<img src=\"data:image/jpeg;base64,...\" />' or with "
        "'data:image/jpeg;asset_id,ID' for an uploaded asset"
    )


class HostedRequest(BaseModel):
    """The request body of NVIDIA's hosted Florence-2 (``build.nvidia.com/microsoft/microsoft-florence-2``);
    other fields are ignored, as the hosted service does."""

    model_config = ConfigDict(strict=True)

    messages: list[HostedMessage] = Field(
        min_length=1, max_length=MAX_MESSAGES, description="the last one with role 'user' is read"
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="new tokens; default 1024, capped by --max-new-tokens and the model's positions",
    )
    scores: bool = Field(
        default=False,
        description="this server's addition to NVIDIA's format: entities also hold 'scores', each object's "
        "confidence in (0, 1], parallel to bboxes, quad_boxes, polygons (in that order); text tasks have "
        "no entities, so no score",
    )

    def user_content(self) -> str:
        """The content of the last message with role 'user' (400 without one)."""
        user = [m for m in self.messages if m.role == "user"]
        if not user:
            raise bad_request("missing_field", "'messages' has no message with role 'user'")
        return user[-1].content


class Entities(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. polygons_labels of <OPEN_VOCABULARY_DETECTION>

    bboxes: list[list[float]] | None = None
    quad_boxes: list[list[float]] | None = None
    labels: list[str] | None = None
    bboxes_labels: list[str] | None = None
    polygons: list[list[list[float]]] | None = None
    scores: list[float | None] | None = Field(
        default=None, description="only when the request asks for scores (this server's addition)"
    )


class HostedAnswer(BaseModel):
    role: Literal["assistant"]
    content: str
    entities: Entities | None


class HostedChoice(BaseModel):
    index: int
    finish_reason: str
    message: HostedAnswer


class HostedResponse(BaseModel):
    """The hosted service's ``<id>.response`` JSON (also the body with ``?format=json``)."""

    id: str
    object: str
    model: str
    choices: list[HostedChoice]
    content: str = Field(description="'<CAPTION>a dog' for text tasks, the task token otherwise")
    entities: Entities | None = Field(description="null for text tasks")


class AssetCreate(BaseModel):
    model_config = ConfigDict(strict=True)

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


router = APIRouter(route_class=BodyRoute, tags=["NVIDIA's hosted API"])


@router.post(
    HOSTED_ROUTE,
    summary="NVIDIA's hosted Florence-2 API",
    description="Request and answer as NVIDIA's hosted service; images inline (base64) or as asset ids "
    "uploaded through /v2/nvcf/assets. The answer is a zip with <id>.response (the JSON) and, for boxes "
    "and polygons, <id>.jpg (the overlay); the JSON itself with ?format=json, or Accept: application/json "
    "without NVCF asset headers.",
    dependencies=[API_KEY],
    response_model=HostedResponse,
    responses={
        200: {"content": {archive.ZIP_MEDIA_TYPE: _BINARY}},
        **error_responses(400, 401, 404, 408, 409, 410, 413, 415, 422, 503, 504),
    },
)
async def hosted_infer(
    body: HostedRequest,
    request: Request,
    server: ServerDep,
    answer_format: Annotated[archive.AnswerFormat | None, Query(alias="format")] = None,
    nvcf_input_asset_references: Annotated[str | None, Header(description="NVCF: the asset ids used")] = None,
    nvcf_function_asset_ids: Annotated[str | None, Header(description="NVCF: the same, older name")] = None,
) -> Response:
    nvcf = bool(nvcf_input_asset_references or nvcf_function_asset_ids)  # what the hosted API's clients send
    as_json = archive.wants_json(answer_format, request.headers.get("accept", ""), nvcf)
    task, text, src = await asyncio.to_thread(parse_content, body.user_content())  # a regex over megabytes
    asset = asset_id(src)
    image_bytes = server.assets.resolve(asset) if asset else await asyncio.to_thread(decode_base64, src)
    generation = Generation(max_new_tokens=body.max_tokens)
    outcome, _ = await answer(
        server, request, [TaskInput(task, text)], "pixels", generation, image_bytes, body.scores
    )
    response = build_response(task, outcome.result, server.name)
    if as_json:
        return JSONResponse(response)
    async with server.decodes:  # the overlay is drawn on the full image (the job kept only the model's size)
        original = await asyncio.to_thread(decode_image, image_bytes, server.limits.max_pixels)
        data = await asyncio.to_thread(archive.zip_answer, task, response, outcome.result, original)
    return Response(
        data,
        media_type=archive.ZIP_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{response["id"]}.zip"'},
    )


@router.post(
    "/v2/nvcf/assets",
    summary="Create an asset (NVCF assets API)",
    dependencies=[API_KEY],
    response_model=AssetCreated,
    responses=error_responses(400, 401, 408, 413, 415, 422, 429),
)
async def create_asset(body: AssetCreate, request: Request, server: ServerDep) -> AssetCreated:
    asset = server.assets.create(body.contentType, body.description)
    path = UPLOAD_ROUTE.format(asset_id=asset.asset_id)
    return AssetCreated(
        assetId=asset.asset_id,
        uploadUrl=f"{str(request.base_url).rstrip('/')}{path}?token={asset.token}",
        contentType=asset.content_type,
        description=asset.description,
        expiresInSeconds=server.limits.asset_ttl_s,
    )


@router.put(
    UPLOAD_ROUTE,
    summary="Upload an asset's bytes",
    response_model=AssetUploaded,
    responses=error_responses(400, 401, 404, 408, 410, 413, 422, 507),
    openapi_extra={"requestBody": {"required": True, "content": {"image/*": _BINARY}}, "security": []},
)
async def upload_asset(
    asset_id: str,
    request: Request,
    server: ServerDep,
    token: Annotated[str | None, Query(description="the token of the upload URL")] = None,
) -> AssetUploaded:
    limits = server.limits
    server.assets.check_token(asset_id, token)  # before reading the body
    try:
        data = await read_body(request, limits.max_asset_bytes, limits.body_timeout_s)
    except RequestError as e:
        if e.kind != "body_too_large":
            raise
        raise RequestError(
            413,
            "asset_too_large",
            f"asset {asset_id} exceeds {limits.max_asset_bytes} bytes, the largest asset this server stores",
        ) from None
    if data:
        try:
            await asyncio.to_thread(probe_image, data, limits.max_pixels)
        except RequestError as e:
            raise RequestError(e.status, e.kind, f"asset {asset_id}: {e.message}") from None
    server.assets.upload(asset_id, token, data)
    return AssetUploaded(assetId=asset_id, bytes=len(data))


@router.delete(
    "/v2/nvcf/assets/{asset_id}",
    summary="Delete an asset",
    status_code=204,
    response_class=Response,
    dependencies=[API_KEY],
    responses=error_responses(401, 404, 410, 422),
)
async def delete_asset(asset_id: str, server: ServerDep) -> Response:
    server.assets.delete(asset_id)
    return Response(status_code=204)
