"""Keep a process's network traffic on loopback: connecting to, or looking up, anything else fails.

Also the loopback stand-ins the MCP tests fetch images from: :class:`ImageServer` (an HTTP server on
127.0.0.1 with routes set per test) and :class:`StubNetwork` (names resolved from a table, every
connection sent to that server whatever address was checked). The ``loopback_only`` fixture that installs
the guard around every MCP test is in tests/mcp/conftest.py.

``install(record)`` patches ``socket.socket.connect`` / ``connect_ex``, ``socket.create_connection`` and
``socket.getaddrinfo``; every refused attempt is passed to ``record`` (so a test fails even when the code
under test swallows the error) and raises ``PermissionError`` before any packet leaves. Used in the test
process (tests/mcp/conftest.py's fixture) and, through ``python -c``, in the MCP server subprocess, which
appends its refusals to the file named by ``$LOOPBACK_GUARD_LOG``.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from typing import ClassVar

LOCAL_NAMES = ("localhost", "localhost.")


def is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def install(record: Callable[[str], None]) -> Callable[[], None]:
    """Patch the socket module; returns a function that undoes it."""
    originals = {
        "connect": socket.socket.connect,
        "connect_ex": socket.socket.connect_ex,
        "create_connection": socket.create_connection,
        "getaddrinfo": socket.getaddrinfo,
    }

    def refuse(what: str) -> PermissionError:
        record(what)
        return PermissionError(f"loopback guard: refused {what}")

    def allowed(address) -> bool:  # AF_UNIX paths are local; (host, port, ...) tuples must be loopback
        return isinstance(address, (str, bytes)) or is_loopback(address[0])

    def connect(self, address):
        if not allowed(address):
            raise refuse(f"connect to {address!r}")
        return originals["connect"](self, address)

    def connect_ex(self, address):
        if not allowed(address):
            raise refuse(f"connect to {address!r}")
        return originals["connect_ex"](self, address)

    def create_connection(address, *args, **kwargs):
        if not allowed(address):
            raise refuse(f"connection to {address!r}")
        return originals["create_connection"](address, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not is_loopback(name):
            raise refuse(f"name lookup of {name!r}")
        return originals["getaddrinfo"](host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.create_connection = create_connection  # type: ignore[assignment]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]

    def undo() -> None:
        socket.socket.connect = originals["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = originals["connect_ex"]  # type: ignore[method-assign]
        socket.create_connection = originals["create_connection"]  # type: ignore[assignment]
        socket.getaddrinfo = originals["getaddrinfo"]  # type: ignore[assignment]

    return undo


def install_from_env() -> None:
    """In a subprocess: record refusals in ``$LOOPBACK_GUARD_LOG`` (one line each)."""
    log = os.environ["LOOPBACK_GUARD_LOG"]

    def record(what: str) -> None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(what + "\n")

    install(record)


# --- loopback stand-ins -------------------------------------------------------------------------------
PUBLIC_IP = "93.184.216.34"  # any global address: the stub connector never connects to it


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}  # replaced per server by ImageServer's subclass

    def do_GET(self):
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        status, headers, body = route(self)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


class ImageServer:
    """An HTTP server on 127.0.0.1: ``routes[path] = handler -> (status, headers, body)``."""

    def __init__(self):
        self.routes: dict = {}
        handler = type("Handler", (_Handler,), {"routes": self.routes})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def serve_bytes(self, path: str, data: bytes, content_type: str = "image/png") -> None:
        self.routes[path] = lambda h: (
            200,
            {"Content-Type": content_type, "Content-Length": str(len(data))},
            data,
        )

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = lambda h: (status, {"Location": location}, b"")

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class StubNetwork:
    """Names -> addresses from a table; every connection goes to the loopback server on ``port``, whatever
    address the code under test checked and asked for (recorded in ``connections``)."""

    def __init__(self, port: int, names: dict[str, list[str]]):
        self.port = port
        self.names = names
        self.lookups: list[str] = []
        self.connections: list[tuple[str, int]] = []

    def resolve(self, host: str, port: int) -> list[str]:
        from florence2_runtime.mcp.urls import FetchError

        self.lookups.append(host)
        if host not in self.names:
            raise FetchError(f"cannot resolve {host!r} (stub)")
        return self.names[host]

    def connect(self, ip: str, port: int, timeout: float) -> socket.socket:
        self.connections.append((ip, port))
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def fetcher(self, **options):
        from florence2_runtime.mcp.urls import UrlFetcher

        options.setdefault("max_bytes", 1 << 20)
        return UrlFetcher(resolve=self.resolve, connect=self.connect, **options)
