"""``GET /health`` (liveness and load, no API key: probes have none) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import PlainTextResponse

from .deps import API_KEY, ServerDep
from .handlers import error_responses

router = APIRouter(tags=["status"])


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str
    providers: list[str]
    queue_depth: int
    running: int
    max_batch_size: int
    rss_mib: float


@router.get("/health", summary="Liveness and load", response_model=HealthResponse)
async def health(server: ServerDep) -> HealthResponse:
    return HealthResponse(
        status="ok",
        model=server.name,
        providers=list(server.model.providers),
        queue_depth=server.batcher.queue_depth,
        running=server.batcher.running,
        max_batch_size=server.limits.max_batch_size,
        rss_mib=rss_mib(),
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    dependencies=[API_KEY],
    responses=error_responses(401),
)
async def metrics(server: ServerDep) -> PlainTextResponse:
    gauges = {
        "queue_depth": ("Requests waiting for the model.", server.batcher.queue_depth),
        "running": ("Requests in the batch being run.", server.batcher.running),
        "resident_memory_mib": ("Resident memory of the server process (MiB).", rss_mib()),
    }
    return PlainTextResponse(server.metrics.render(gauges), media_type="text/plain; version=0.0.4")


def rss_mib() -> float:
    """Resident memory of this process in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
