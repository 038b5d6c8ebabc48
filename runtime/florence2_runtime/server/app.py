"""The FastAPI app: one router per area, the shared state, the error handlers.

- ``health.py``: ``/health``, ``/metrics``;
- ``inference.py``: ``/v1/infer``;
- ``hosted/``: NVIDIA's hosted API (``/v1/vlm/microsoft/florence-2``) and its NVCF asset store;
- ``page.py``: the try-it page at ``/`` and Swagger UI at ``/docs``; ``/openapi.json`` is FastAPI's.

The pydantic models in the routes' signatures validate the requests and make the OpenAPI document;
``bodies.py`` reads and parses bodies under the limits and off the event loop; ``deps.py`` holds the
state (:class:`~.deps.Server`) and the API key dependency; ``handlers.py`` gives every refusal the shape
``{"error": {"kind", "message"}}``; ``jobs.py`` runs a checked request through the batcher.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from .. import __version__
from ..errors import require
from .settings import ServerLimits

DESCRIPTION = (
    "Florence-2 on ONNX Runtime: /v1/infer answers exactly Florence2.run(); "
    "/v1/vlm/microsoft/florence-2 and /v2/nvcf/assets follow NVIDIA's hosted API."
)


def create_app(
    model,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
    *,
    ui: bool = True,
    docs: bool = True,
):
    """A FastAPI app serving ``model`` (a loaded ``Florence2``) under ``limits``; ``ui``: the page at ``/``,
    ``docs``: ``/openapi.json`` and ``/docs``."""
    fastapi = require("fastapi", "serve", "The Florence-2 server")
    from . import handlers, health, inference, page
    from .deps import Server
    from .hosted import routes as hosted
    from .metrics import MetricsMiddleware

    server = Server(model, limits or ServerLimits(), model_name or _model_name(model), docs=docs)

    @asynccontextmanager
    async def lifespan(_app):
        async with server.running():
            yield

    app = fastapi.FastAPI(
        title=page.TITLE,
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url=None,
        redoc_url=None,
        exception_handlers=handlers.HANDLERS,
    )
    app.state.server = server
    app.add_middleware(MetricsMiddleware, metrics=server.metrics)
    routers = [health.router, inference.router, hosted.router]
    if docs:
        page.warn_without_offline_docs()
        routers.append(page.docs)
    if ui:
        routers.append(page.ui)
    for router in routers:
        app.include_router(router)
    return app


def _model_name(model) -> str:
    """A folder's name, or the hub id / alias the model was loaded by (its folder is a commit hash then)."""
    given = str(getattr(model, "name_or_path", "") or "")
    if given and not Path(given).is_dir():
        return given
    return Path(getattr(model, "folder", "florence2")).name
