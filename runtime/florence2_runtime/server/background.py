"""Run an ASGI app with uvicorn in a background thread (tests, notebooks, embedding in another program)."""

from __future__ import annotations

import socket
import threading
import time

from ..errors import require


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """``with BackgroundServer(app) as url: ...``: uvicorn on a free loopback port, stopped on exit."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 30.0):
        uvicorn = require("uvicorn", "serve", "The Florence-2 server")
        from .connections import server_config

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(
            server_config(app, self.host, self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, name="florence2-uvicorn", daemon=True)
        self.start_timeout_s = start_timeout_s

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
