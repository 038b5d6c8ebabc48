"""What the routes share, as FastAPI dependencies: the app's :class:`Server` (model, limits, batcher, metrics,
NVCF asset store) and the API key.

``Depends(require_api_key)`` guards a route (or a router); without ``ServerLimits.api_key`` it lets every
request through. The key comes as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (that one first) and
is compared in constant time; both schemes appear in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .allocator import return_freed_memory
from .batching import DynamicBatcher
from .hosted.assets import AssetStore, sweep_interval
from .metrics import Metrics
from .problems import RequestError
from .settings import ServerLimits


@dataclass
class Server:
    """One app's state: the model under its limits, the batcher that runs it, metrics, the asset store, and
    the semaphore that bounds how many full-resolution images are decoded at once."""

    model: Any  # a loaded Florence2
    limits: ServerLimits
    name: str  # the model's name in answers and on the page
    docs: bool = True  # /openapi.json and /docs are served
    metrics: Metrics = field(default_factory=Metrics)
    batcher: DynamicBatcher = field(init=False)
    assets: AssetStore = field(init=False)
    decodes: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        limits = self.limits
        self.batcher = DynamicBatcher(
            self.model,
            limits.max_batch_size,
            limits.max_wait_ms,
            limits.max_queue,
            on_batch=self.metrics.record_batch,
        )
        self.assets = AssetStore(limits)
        self.decodes = asyncio.Semaphore(limits.max_concurrent_decodes)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The app's lifespan: freed memory goes back to the OS (:mod:`.allocator`), expired assets are
        swept in the background; the batcher stops at the end."""
        return_freed_memory()
        sweeper = asyncio.create_task(self._sweep_assets())
        try:
            yield
        finally:
            sweeper.cancel()
            await self.batcher.close()

    async def _sweep_assets(self) -> None:  # expired assets are deleted even when nobody asks for them
        while True:
            await asyncio.sleep(sweep_interval(self.limits))
            self.assets.purge()


def get_server(request: Request) -> Server:
    """The :class:`Server` of the app answering ``request``."""
    return request.app.state.server


ServerDep = Annotated[Server, Depends(get_server)]

_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="Authorization: Bearer KEY, when the server has a key ($FLORENCE2_API_KEY, --api-key-file)",
)
_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey", description="the same key in X-API-Key"
)


async def require_api_key(
    request: Request,
    key: Annotated[str | None, Security(_HEADER)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> None:
    """Refuse (401) a request without the server's API key; any request when the server has none."""
    expected = get_server(request).limits.api_key
    if expected is None:
        return
    given = key if key is not None else bearer.credentials if bearer is not None else None
    if given is None or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    ):
        raise RequestError(
            401,
            "unauthorized",
            "missing or wrong API key (send 'Authorization: Bearer <key>')",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def check_api_key(request: Request) -> None:
    """:func:`require_api_key` outside FastAPI's dependency solving (``BodyRoute``: before reading a body)."""
    await require_api_key(request, await _HEADER(request), await _BEARER(request))


API_KEY = Depends(require_api_key)
