"""HTTP handlers of the local NVCF assets API (``assets.AssetStore``): create, upload, delete.

- ``POST /v2/nvcf/assets`` (API key) ``{"contentType": "image/jpeg", "description": "..."}`` ->
  ``{"assetId", "uploadUrl", "contentType", "description", "expiresInSeconds"}``;
- ``PUT <uploadUrl>`` (the token in the URL is the credential, as with NVCF's pre-signed URLs) with the
  image bytes -> ``{"assetId", "bytes"}``; checked to be an image within the size limits;
- ``DELETE /v2/nvcf/assets/{asset_id}`` (API key) -> 204.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..images import probe_image
from ..problems import RequestError, bad_request
from .assets import AssetStore

ASSETS_ROUTE = "/v2/nvcf/assets"
ASSET_ROUTE = "/v2/nvcf/assets/{asset_id}"
UPLOAD_ROUTE = "/v2/nvcf/assets/{asset_id}/upload"  # authorised by its token, not by the API key


def asset_routes(
    store: AssetStore,
    read_body: Callable[..., Awaitable[bytes]],
    parse_json: Callable[[bytes], Any],
    max_pixels: int,
) -> list[tuple[str, Callable, str]]:
    """(route, handler, method) for the asset API; ``read_body(request, max_bytes=...)`` reads a bounded body."""
    from starlette.responses import JSONResponse, Response

    async def create(request):
        body = await asyncio.to_thread(parse_json, await read_body(request))
        if not isinstance(body, dict):
            raise bad_request(
                "invalid_json", 'request body must be a JSON object {"contentType", "description"}'
            )
        asset = store.create(body.get("contentType"), body.get("description"))
        upload = f"{str(request.base_url).rstrip('/')}{UPLOAD_ROUTE.format(asset_id=asset.asset_id)}?token={asset.token}"
        return JSONResponse(
            {
                "assetId": asset.asset_id,
                "uploadUrl": upload,
                "contentType": asset.content_type,
                "description": asset.description,
                "expiresInSeconds": store.limits.asset_ttl_s,
            }
        )

    async def upload(request):
        asset_id = request.path_params["asset_id"]
        token = request.query_params.get("token")
        store.check_token(asset_id, token)  # before reading the body
        try:
            data = await read_body(request, max_bytes=store.limits.max_asset_bytes)
        except RequestError as e:
            if e.kind != "body_too_large":
                raise
            raise RequestError(
                413,
                "asset_too_large",
                f"asset {asset_id} exceeds {store.limits.max_asset_bytes} "
                "bytes, the largest asset this server stores",
            ) from None
        if data:
            try:
                await asyncio.to_thread(probe_image, data, max_pixels)
            except RequestError as e:
                raise RequestError(e.status, e.kind, f"asset {asset_id}: {e.message}") from None
        asset = store.upload(asset_id, token, data)
        return JSONResponse({"assetId": asset.asset_id, "bytes": len(data)})

    async def delete(request):
        store.delete(request.path_params["asset_id"])
        return Response(status_code=204)

    return [(ASSETS_ROUTE, create, "POST"), (UPLOAD_ROUTE, upload, "PUT"), (ASSET_ROUTE, delete, "DELETE")]
