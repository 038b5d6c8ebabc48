"""What a browser gets: the try-it page at ``/`` (files in ``server/static/``), ``/openapi.json`` and ``/docs``.

These routes need no API key (they hold no data; the page sends the key the user types with its API
calls). Files are read from the installed package once, at start-up, and served from memory: only names
in that table exist, so no path from a request ever reaches the file system.
"""

from __future__ import annotations

import json
import logging
from importlib.resources import files
from typing import Any

from .. import __version__
from ..tasks.prompts import TASKS
from . import openapi

log = logging.getLogger("florence2.server")
STATIC = files(__package__) / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
}


def _media_type(name: str) -> str:
    return next((t for ext, t in _TYPES.items() if name.endswith(ext)), "application/octet-stream")


def _file_table(entries: dict[str, Any]) -> dict[str, tuple[bytes, str]]:
    return {name: (path.read_bytes(), _media_type(name)) for name, path in entries.items()}


def page_config(model, limits, title: str, docs: bool = True) -> dict:
    """What the page needs to know: tasks (and which input each takes), limits, defaults, key or not."""
    options = model.decoding_options()
    max_tokens = min(limits.max_new_tokens, model.config.max_position_embeddings - 1)
    return {
        "title": title,
        "tasks": [
            {"task": t, "text": s.takes_input and not s.region_input, "region": s.region_input}
            for t, s in TASKS.items()
        ],
        "max_new_tokens": {"default": min(options.max_new_tokens, max_tokens), "max": max_tokens},
        "num_beams": {"default": min(options.num_beams, limits.max_num_beams), "max": limits.max_num_beams},
        "api_key_required": limits.api_key is not None,
        "docs": docs,
    }


def install(app, model, limits, name: str, *, ui: bool = True, docs: bool = True) -> None:
    """Add the page (``ui``) and the API docs (``docs``) to ``app``, whose API routes are already added."""
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse, Response

    def static_route(table: dict[str, tuple[bytes, str]]):
        async def serve(request):
            entry = table.get(request.path_params["name"])
            if entry is None:
                raise HTTPException(404, f"no such file: {request.path_params['name']!r}")
            return Response(entry[0], media_type=entry[1], headers={"Cache-Control": "no-cache"})

        return serve

    if docs:
        api_paths = {getattr(r, "path", None) for r in app.routes}
        document = openapi.schema(
            app.title,
            __version__,
            {p for p in openapi.ROUTES if p in api_paths},
            secured=limits.api_key is not None,
        )
        assets = openapi.swagger_assets()
        if assets is None:
            log.warning(
                "fastapi-offline is not installed: /docs loads Swagger UI from a CDN "
                "(pip install 'florence2-onnx[serve]' for offline docs)"
            )
            urls: dict[str, Any] = {}
        else:
            app.add_route(
                "/docs/static/{name}",
                static_route(_file_table(assets)),
                methods=["GET"],
                include_in_schema=False,
            )
            urls = {
                "swagger_js_url": "docs/static/swagger-ui-bundle.js",
                "swagger_css_url": "docs/static/swagger-ui.css",
                "swagger_favicon_url": "docs/static/favicon.png",
            }

        from fastapi.openapi.docs import get_swagger_ui_html

        async def openapi_json(_request):
            return JSONResponse(document)

        async def docs_page(_request):
            return get_swagger_ui_html(openapi_url="openapi.json", title=f"{app.title} - API docs", **urls)

        app.openapi = lambda: document  # FastAPI's own callers see the same document
        app.add_route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False)
        app.add_route("/docs", docs_page, methods=["GET"], include_in_schema=False)

    if ui:
        table = _file_table({p.name: p for p in STATIC.iterdir() if p.is_file() and p.name != "index.html"})
        table["config.json"] = (
            json.dumps(page_config(model, limits, f"{app.title}: {name}", docs)).encode(),
            _TYPES[".json"],
        )
        index = (STATIC / "index.html").read_text("utf-8")

        async def page(_request):
            return HTMLResponse(index, headers={"Cache-Control": "no-cache"})

        app.add_route("/", page, methods=["GET"], include_in_schema=False)
        app.add_route("/ui/{name}", static_route(table), methods=["GET"], include_in_schema=False)
