"""The one error type of the server: an HTTP status, a short machine-readable kind and a message."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 1000  # an error message is never longer than this (plus a note of its real length)


class RequestError(Exception):
    """A request the server refuses; becomes ``{"error": {"kind": kind, "message": message}}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        message = self.message  # messages echo inputs cut short already; this is the last line of defence
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[:MAX_MESSAGE_CHARS]}... ({len(message)} characters)"
        return {"error": {"kind": self.kind, "message": message}}


def bad_request(kind: str, message: str) -> RequestError:
    """400: the request cannot be read (JSON, base64, image bytes)."""
    return RequestError(400, kind, message)


def invalid(kind: str, message: str) -> RequestError:
    """422: the request was read but a value is wrong (task, text, region, generation settings)."""
    return RequestError(422, kind, message)
