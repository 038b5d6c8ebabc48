"""The one error type of the server: an HTTP status, a short machine-readable kind and a message."""

from __future__ import annotations


class RequestError(Exception):
    """A request the server refuses; becomes ``{"error": {"kind": kind, "message": message}}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"kind": self.kind, "message": self.message}}


def bad_request(kind: str, message: str) -> RequestError:
    """400: the request cannot be read (JSON, base64, image bytes)."""
    return RequestError(400, kind, message)


def invalid(kind: str, message: str) -> RequestError:
    """422: the request was read but a value is wrong (task, text, region, generation settings)."""
    return RequestError(422, kind, message)
