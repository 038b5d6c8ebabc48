"""The MCP server: :class:`~.tools.Florence2Tools` registered on the SDK's ``MCPServer``, served over stdio
or streamable HTTP (with an optional API key: ``Authorization: Bearer KEY``, compared in constant time).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from .. import __version__
from .tools import TOOL_NAMES, Florence2Tools

__all__ = ["BearerKey", "create_server", "http_app"]

INSTRUCTIONS = (
    "Florence-2 vision tools. Give an image as a file path, base64 or a data URL. Answers are in pixels "
    "of the original image: boxes [x1, y1, x2, y2], quad boxes, polygons. caption describes, detect "
    "finds objects (optionally by class names), ocr reads text, ground locates the parts of a phrase, "
    "segment outlines one thing, describe_region explains a box; run_task runs any task (list_tasks). "
    "Several calls on the same image encode it once."
)


def create_server(tools: Florence2Tools) -> MCPServer:
    """An ``MCPServer`` named ``florence2`` with the tools of :data:`~.tools.TOOL_NAMES`."""
    server: MCPServer = MCPServer(
        "florence2", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    hints = ToolAnnotations(
        read_only_hint=True, idempotent_hint=True, open_world_hint=tools.settings.allow_url
    )
    for name in TOOL_NAMES:
        server.add_tool(getattr(tools, name), name=name, annotations=hints, structured_output=True)
    return server


class BearerKey:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer KEY``; 401 with a JSON error otherwise."""

    def __init__(self, app: Any, key: str):
        if not key:
            raise ValueError("the API key must not be empty")
        self.app = app
        self._key = key.encode("utf-8", "surrogateescape")

    def _allowed(self, scope: dict) -> bool:
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self._key)
        return False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": {
                    "kind": "unauthorized",
                    "message": "missing or wrong API key (send 'Authorization: Bearer <key>')",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def http_app(server: MCPServer, *, host: str, api_key: str | None, max_image_bytes: int) -> Any:
    """The streamable-HTTP ASGI app (path ``/mcp``), behind :class:`BearerKey` when ``api_key`` is set.

    The request body may hold a base64 image of ``max_image_bytes`` (4/3 of it, plus the JSON around).
    On a loopback ``host`` the SDK also checks the Host and Origin headers (DNS rebinding)."""
    app = server.streamable_http_app(host=host, max_request_body_size=max_image_bytes * 4 // 3 + (1 << 20))
    return BearerKey(app, api_key) if api_key is not None else app
