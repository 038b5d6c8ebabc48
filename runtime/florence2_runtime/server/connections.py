"""Slow-client defence for uvicorn: a deadline for each request's headers and a cap on open connections.

uvicorn calls the app only once a request's headers are complete, so a client that connects and sends
nothing (or trickles its headers a byte at a time) is invisible to the app and holds a file descriptor
for ever. :func:`guarded_protocol` wraps uvicorn's HTTP protocol class:

- **header deadline**: a connection on which no request has started within ``header_timeout_s`` (since
  it was opened, or since its last request) is closed; a request in progress is never cut (its body has
  the app's own deadline, ``ServerLimits.body_timeout_s``);
- **connection cap**: past ``max_connections`` open connections, the one idle longest (no request in
  progress) is closed to make room, so stalled connections cannot lock out a normal client; when every
  connection is busy, the new one is closed instead.

:func:`server_config` builds the ``uvicorn.Config`` that ``florence2 serve`` and ``BackgroundServer`` use.
"""

from __future__ import annotations

from ..errors import require
from .settings import ServerLimits

FD_RESERVE = 64  # descriptors kept free for model files, logs and the listening socket


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to what the process's open-file limit leaves room for."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return max_connections
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - FD_RESERVE))


def guarded_protocol(base: type, header_timeout_s: float, max_connections: int) -> type:
    """A subclass of uvicorn's HTTP protocol ``base`` with the header deadline and the connection cap."""

    class GuardedProtocol(base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._guard_closing = False
            self._guard_seen = None  # the request cycle seen at the last deadline check
            self._guard_idle_since = self.loop.time()
            self._guard_timer = self.loop.call_later(header_timeout_s, self._guard_check)
            _enforce_cap(self)

        def connection_lost(self, exc) -> None:
            self._guard_timer.cancel()
            super().connection_lost(exc)

        def _guard_busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _guard_check(self) -> None:
            cycle = self.cycle
            if self._guard_busy() or cycle is not self._guard_seen:  # a request runs, or one was served since
                self._guard_seen = cycle
                self._guard_idle_since = self.loop.time()
                self._guard_timer = self.loop.call_later(header_timeout_s, self._guard_check)
                return
            self._guard_close()  # no request started within the deadline: stalled or trickling headers

        def _guard_close(self) -> None:
            self._guard_closing = True
            self._guard_timer.cancel()
            self.transport.close()

    def _enforce_cap(new) -> None:
        open_ = [c for c in new.connections if not getattr(c, "_guard_closing", True)]
        if len(open_) <= max_connections:
            return
        idle = [c for c in open_ if c is not new and not c._guard_busy()]
        victim = min(idle, key=lambda c: c._guard_idle_since) if idle else new
        victim._guard_close()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def server_config(app, host: str, port: int, limits: ServerLimits | None = None, **kwargs):
    """``uvicorn.Config`` for ``app`` with the guarded HTTP protocol sized by ``limits``
    (default: those of the app, ``app.state.server.limits``); ``kwargs`` go to ``uvicorn.Config``."""
    uvicorn = require("uvicorn", "serve", "The Florence-2 server")
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    server = getattr(getattr(app, "state", None), "server", None)
    limits = limits or getattr(server, "limits", None) or ServerLimits()
    protocol = guarded_protocol(
        AutoHTTPProtocol, limits.header_timeout_s, connection_cap(limits.max_connections)
    )
    return uvicorn.Config(app, host=host, port=port, http=protocol, **kwargs)


__all__ = ["connection_cap", "guarded_protocol", "server_config"]
