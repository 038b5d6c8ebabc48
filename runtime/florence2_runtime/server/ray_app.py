"""Ray Serve deployment of the same FastAPI app: N replicas (or autoscaling), CPU/GPU resources per replica.

Each replica loads the model once and runs its own dynamic batcher; Ray's HTTP proxy spreads requests over
the replicas. On a multi-node cluster every node needs this package (and the model folder at the same
path, or on shared storage); start the cluster with ``ray start``, then run ``florence2 serve MODEL --ray
--ray-address auto`` on the head node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import require
from .settings import ServerLimits, Settings, setting

DEPLOYMENT_NAME = "florence2"


@dataclass(frozen=True)
class RaySettings(Settings):
    """Replica count or autoscaling bounds, and the resources Ray reserves for each replica (each field is
    also a ``serve --ray`` flag and a FLORENCE2_* environment variable, see ``settings.py``)."""

    GROUPS: ClassVar[Mapping[str, str]] = {"ray": "Ray Serve (the 'ray' extra)"}

    replicas: int = setting(1, "fixed replica count (ignored with --max-replicas)", minimum=1, group="ray")
    min_replicas: int | None = setting(
        None, "autoscaling lower bound (1 when not given)", kind=int, minimum=1, optional=True, group="ray"
    )
    max_replicas: int | None = setting(
        None, "enables autoscaling up to this many replicas", kind=int, minimum=1, optional=True, group="ray"
    )
    target_ongoing_requests: float = setting(
        4.0, "autoscaling target: requests in flight per replica", minimum=0, exclusive=True, group="ray"
    )
    num_cpus: float = setting(1.0, "CPUs reserved per replica", minimum=0, group="ray")
    num_gpus: float = setting(0.0, "GPUs reserved per replica", minimum=0, group="ray")
    address: str | None = setting(
        None,
        "Ray cluster address, e.g. auto (none: join a running local instance or start one)",
        kind=str,
        optional=True,
        flag="--ray-address",
        group="ray",
    )
    dashboard: bool = setting(
        False,
        "start Ray's dashboard (http://127.0.0.1:8265) with a local instance",
        flag="--ray-dashboard",
        group="ray",
    )

    def init_options(self) -> dict:
        """Keyword arguments of ``ray.init``: the address, and for a local instance the dashboard switch
        (off unless asked for: it listens on port 8265)."""
        if self.address is not None:
            return {"address": self.address}
        return {"include_dashboard": self.dashboard}

    def deployment_options(self, limits: ServerLimits) -> dict:
        """Keyword arguments of ``serve.deployment``."""
        options = {
            "name": DEPLOYMENT_NAME,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            # let a replica hold a full batch plus its queue; the app itself answers 503 beyond that
            "max_ongoing_requests": limits.max_queue + limits.max_batch_size,
        }
        if self.max_replicas is not None:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas or 1,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = self.replicas
        return options


class Florence2Replica:
    """One Ray Serve replica: loads the model; Ray serves the ASGI app it builds."""

    def __init__(
        self,
        model_dir: str,
        limits: ServerLimits,
        provider: str = "cpu",
        threads: int | None = None,
        app_options: dict | None = None,
        model_options: dict | None = None,
    ):
        from ..model import Florence2

        # a hub id or alias is resolved in each replica: every node fetches it into its own cache
        self.model = Florence2.from_pretrained(
            model_dir, providers=provider, threads=threads, **(model_options or {})
        )
        self.limits = limits
        self.app_options = app_options or {}

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self.model, self.limits, **self.app_options)


def build_application(
    model_dir: str | Path,
    limits: ServerLimits | None = None,
    settings: RaySettings | None = None,
    provider: str = "cpu",
    threads: int | None = None,
    app_options: dict | None = None,
    model_options: dict | None = None,
):
    """A bound Ray Serve application, ready for ``serve.run`` (``app_options``: ``create_app``'s keywords;
    each replica has its own asset store). model_dir: a folder, hub id or alias; model_options:
    ``Florence2.from_pretrained`` keywords (precision, revision, ...)."""
    serve = require("ray.serve", "ray", "Serving with Ray")
    limits = limits or ServerLimits()
    settings = settings or RaySettings()
    deployment = serve.deployment(serve.ingress()(Florence2Replica), **settings.deployment_options(limits))
    model = str(Path(model_dir).resolve()) if Path(model_dir).is_dir() else str(model_dir)
    return deployment.bind(model, limits, provider, threads, app_options, model_options)


def start(
    model_dir: str | Path,
    limits: ServerLimits | None = None,
    settings: RaySettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    provider: str = "cpu",
    threads: int | None = None,
    ray_init_kwargs: dict | None = None,
    app_options: dict | None = None,
    model_options: dict | None = None,
):
    """Connect to (or start) Ray, start Serve's HTTP proxy on host:port and deploy; returns the app handle."""
    ray = require("ray", "ray", "Serving with Ray")
    serve = require("ray.serve", "ray", "Serving with Ray")
    settings = settings or RaySettings()
    if not ray.is_initialized():
        ray.init(**{**settings.init_options(), **(ray_init_kwargs or {})})
    serve.start(http_options={"host": host, "port": port})
    app = build_application(model_dir, limits, settings, provider, threads, app_options, model_options)
    return serve.run(app, name=DEPLOYMENT_NAME, route_prefix="/")


def serve_forever(model_dir: str | Path, limits: ServerLimits, settings: RaySettings, **kwargs) -> None:
    """``florence2 serve MODEL --ray``: deploy, then keep the driver alive until Ctrl-C or SIGTERM; then stop
    Serve and Ray and every process this driver started (within :data:`STOP_WAIT_S` seconds)."""
    ray = require("ray", "ray", "Serving with Ray")
    serve = require("ray.serve", "ray", "Serving with Ray")
    _handle_stops(_exit_on_signal)  # before start: a stop while Ray starts
    started: set[int] = set()
    try:
        if not ray.is_initialized():
            ray.init(**settings.init_options())
        # ray.init installs its own SIGTERM handler (its C++ core's, which aborts the driver and leaves the
        # dashboard and runtime-env agents running): a service manager's stop must be Ctrl-C's clean shutdown
        _handle_stops(_exit_on_signal)
        started = descendants(os.getpid())
        start(model_dir, limits, settings, **kwargs)
        print(
            f"florence2: serving on http://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 8000)} "
            f"through Ray Serve; Ctrl-C stops it. {_ray_files(ray)}",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        _handle_stops(signal.SIG_IGN)  # a second stop must not cut the cleanup short
        started |= descendants(os.getpid())
        deadline = time.monotonic() + STOP_WAIT_S
        finished = _shut_down_ray(ray, serve, STOP_WAIT_S)
        left = stop_processes(started, max(deadline - time.monotonic(), 0.0))
        if left:
            print(
                f"florence2: killed {len(left)} Ray process(es) that outlived the shutdown", file=sys.stderr
            )
        if not finished:  # Ray's exit hook would wait on the same stuck shutdown: leave without it
            print(f"florence2: Ray's shutdown did not finish within {STOP_WAIT_S:g} s", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


STOP_WAIT_S = 8.0  # how long Ray's own shutdown may take before what it started is killed


def _shut_down_ray(ray, serve, wait_s: float) -> bool:
    """``serve.shutdown()`` then ``ray.shutdown()``, given ``wait_s`` seconds (Serve's waits on its
    controller have no timeout of their own); False if they had not returned by then."""
    done = threading.Event()

    def shut_down() -> None:
        try:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
        finally:
            done.set()

    threading.Thread(target=shut_down, name="florence2-ray-shutdown", daemon=True).start()
    return done.wait(wait_s)


def _ray_files(ray) -> str:
    """Where Ray writes: its session logs, and its auth token (created on first start, reused after)."""
    session = ""
    with contextlib.suppress(Exception):  # private API: only for the message
        session = ray._private.worker._global_node.get_session_dir_path()
    return (
        f"Ray writes its logs under {session or '/tmp/ray/session_*'} and keeps a cluster auth token in "
        "~/.ray/auth_token (RAY_AUTH_MODE=disabled turns that off)."
    )


def descendants(pid: int) -> set[int]:
    """The process ids below ``pid`` (children, their children, ...), read from Linux's /proc; empty elsewhere."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def stop_processes(pids: set[int], wait_s: float) -> set[int]:
    """Wait up to ``wait_s`` for ``pids`` to exit, then SIGKILL those left; returns the ones killed."""
    deadline = time.monotonic() + wait_s
    alive = {p for p in pids if _alive(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {p for p in alive if _alive(p)}
    for p in alive:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    return alive


def _alive(pid: int) -> bool:
    """Running (a zombie, waiting for its parent to reap it, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state != "Z"


def _exit_on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _handle_stops(handler) -> None:
    """SIGTERM and SIGINT both go to ``handler``. SIGINT explicitly, as uvicorn does for ``florence2 serve``:
    Python leaves it ignored in a process started with it ignored (e.g. from a non-interactive shell's
    ``cmd &``), where ``kill -INT`` would otherwise not stop the server."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, handler)
