"""Prometheus text-format metrics, without the prometheus_client dependency.

Counters: requests by route and status, errors by kind. Histograms: request latency (seconds) and
batch sizes. Gauges (queue depth, in-flight batch) are read from the batcher when rendered.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PREFIX = "florence2"


class Histogram:
    """Cumulative-bucket histogram (Prometheus ``_bucket``/``_sum``/``_count``)."""

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
        self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> Iterable[str]:
        total = 0
        for bound, n in zip([*map(_fmt, self.buckets), "+Inf"], self.counts):
            total += n
            yield f'{name}_bucket{{le="{bound}"}} {total}'
        yield f"{name}_sum {_fmt(self.sum)}"
        yield f"{name}_count {self.count}"


class Metrics:
    """All server metrics; every method is thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_sizes = Histogram(BATCH_BUCKETS)

    def record_request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency.observe(seconds)

    def record_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def record_batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.observe(size)

    def render(self, gauges: dict[str, tuple[str, float]] | None = None) -> str:
        """The Prometheus exposition text; ``gauges``: name -> (help, value)."""
        p = PREFIX
        with self._lock:
            out = [
                f"# HELP {p}_requests_total HTTP requests by route and status code.",
                f"# TYPE {p}_requests_total counter",
            ]
            out += [
                f'{p}_requests_total{{route="{_esc(r)}",status="{s}"}} {n}'
                for (r, s), n in sorted(self.requests.items())
            ]
            out += [
                f"# HELP {p}_errors_total Refused or failed requests by kind.",
                f"# TYPE {p}_errors_total counter",
            ]
            out += [f'{p}_errors_total{{kind="{_esc(k)}"}} {n}' for k, n in sorted(self.errors.items())]
            out += [
                f"# HELP {p}_request_duration_seconds Request latency, body read to response.",
                f"# TYPE {p}_request_duration_seconds histogram",
                *self.latency.lines(f"{p}_request_duration_seconds"),
            ]
            out += [
                f"# HELP {p}_batch_size Requests per model batch.",
                f"# TYPE {p}_batch_size histogram",
                *self.batch_sizes.lines(f"{p}_batch_size"),
            ]
        for name, (help_text, value) in (gauges or {}).items():
            out += [f"# HELP {p}_{name} {help_text}", f"# TYPE {p}_{name} gauge", f"{p}_{name} {_fmt(value)}"]
        return "\n".join(out) + "\n"


def _fmt(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v)) if abs(v) < 1e15 else repr(float(v))


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsMiddleware:
    """ASGI middleware counting every routed request by its route's path and status, with its latency
    (a request that raised counts as 500; one that matched no route is not counted)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", None)
            if path is not None:
                self.metrics.record_request(path, status, time.perf_counter() - start)
