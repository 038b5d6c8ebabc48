"""What a browser gets: the try-it page at ``/`` (files in ``server/static/``) and the API docs at ``/docs``.

No API key (they hold no data; the page sends the key the user types with its API calls). Files are read
from the installed package once, at import, and served from memory: only names in those tables exist, so
no path from a request reaches the file system. ``/docs`` is Swagger UI from the ``fastapi-offline``
package's files when it is installed (no CDN), else from FastAPI's default CDN; ``/openapi.json`` is
FastAPI's own document of the API routes.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..tasks.batch import decoding_options
from ..tasks.table import TASKS
from .deps import ServerDep
from .jobs import default_max_new_tokens, max_new_tokens_cap

log = logging.getLogger("florence2.server")
TITLE = "Florence-2 (ONNX Runtime)"
STATIC = files(__package__) / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
NO_CACHE = {"Cache-Control": "no-cache"}


def _file_table(entries: dict[str, Any]) -> dict[str, tuple[bytes, str]]:
    return {
        name: (path.read_bytes(), next((t for ext, t in _TYPES.items() if name.endswith(ext)), "text/plain"))
        for name, path in entries.items()
    }


def _swagger_files() -> dict[str, tuple[bytes, str]] | None:
    """Swagger UI's files from ``fastapi-offline``, or None when it is not installed."""
    try:
        static = files("fastapi_offline") / "static"
    except (ImportError, ModuleNotFoundError):
        return None
    found = {n: static / n for n in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")}
    return _file_table(found) if all(p.is_file() for p in found.values()) else None


PAGE_FILES = _file_table({p.name: p for p in STATIC.iterdir() if p.is_file() and p.name != "index.html"})
INDEX = (STATIC / "index.html").read_text("utf-8")
SWAGGER_FILES = _swagger_files()


def _served(table: dict[str, tuple[bytes, str]], name: str) -> Response:
    entry = table.get(name)
    if entry is None:
        raise HTTPException(404, f"no such file: {name!r}")
    return Response(entry[0], media_type=entry[1], headers=NO_CACHE)


def page_config(server) -> dict:
    """What the page needs to know: the tasks (and which input each takes), the API's generation defaults
    and limits (so the page asks for what a bare API request gets), whether a key is needed."""
    limits, model = server.limits, server.model
    return {
        "title": f"{TITLE}: {server.name}",
        "tasks": [
            {"task": t, "text": s.takes_input and not s.region_input, "region": s.region_input}
            for t, s in TASKS.items()
        ],
        "max_new_tokens": {
            "default": default_max_new_tokens(limits, model),
            "max": max_new_tokens_cap(limits, model),
        },
        "num_beams": {
            "default": min(decoding_options(model).num_beams, limits.max_num_beams),
            "max": limits.max_num_beams,
        },
        "api_key_required": limits.api_key is not None,
        "docs": server.docs,
    }


ui = APIRouter(include_in_schema=False)


@ui.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(INDEX, headers=NO_CACHE)


@ui.get("/ui/config.json")
async def config(server: ServerDep) -> JSONResponse:
    return JSONResponse(page_config(server), headers=NO_CACHE)


@ui.get("/ui/{name}")
async def page_file(name: str) -> Response:
    return _served(PAGE_FILES, name)


docs = APIRouter(include_in_schema=False)


@docs.get("/docs")
async def docs_page() -> HTMLResponse:
    urls: dict[str, Any] = {}
    if SWAGGER_FILES is not None:  # relative URLs: the page works behind a path prefix too
        urls = {
            "swagger_js_url": "docs/static/swagger-ui-bundle.js",
            "swagger_css_url": "docs/static/swagger-ui.css",
            "swagger_favicon_url": "docs/static/favicon.png",
        }
    return get_swagger_ui_html(openapi_url="openapi.json", title=f"{TITLE} - API docs", **urls)


@docs.get("/docs/static/{name}")
async def docs_file(name: str) -> Response:
    return _served(SWAGGER_FILES or {}, name)


def warn_without_offline_docs() -> None:
    if SWAGGER_FILES is None:
        log.warning(
            "fastapi-offline is not installed: /docs loads Swagger UI from a CDN "
            "(pip install 'florence2-onnx[serve]' for offline docs)"
        )
