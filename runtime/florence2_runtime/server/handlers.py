"""One error shape for every refusal: ``{"error": {"kind", "message"}}``, made by the app's exception handlers.

- :class:`~.problems.RequestError` (the routes' own refusals) as it is;
- pydantic's ``RequestValidationError`` (a request that does not fit the route's models) -> 422, the kind
  from the field (:data:`FIELD_KINDS`), the message naming the field and echoing a short prefix of the value;
- Starlette's ``HTTPException`` (no such route, wrong method) -> its status, kind ``not_found`` etc.;
- a client that hung up -> 499 (nginx's number; nobody reads it), counted as ``client_disconnected``;
- anything else -> 500 ``internal`` (and the traceback in the server's log).

Every kind is counted in ``/metrics``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from ..errors import brief
from .deps import get_server
from .jobs import ClientGone
from .problems import RequestError

DISCONNECTED = 499  # the status a request is counted under when its client left before the answer (nginx's)
SHOWN_ERRORS = 3  # pydantic errors described in one message; the rest are counted

# The kind of a 422 by the request field it is about (fields of every route's models and parameters).
FIELD_KINDS = {
    "image": "invalid_image",
    "task": "invalid_task_input",
    "tasks": "invalid_task_input",
    "text": "invalid_task_input",
    "region": "invalid_task_input",
    "region_format": "invalid_task_input",
    "generation": "invalid_generation",
    "max_tokens": "invalid_generation",
    "messages": "missing_field",
    "format": "invalid_format",
    "contentType": "unsupported_asset_type",
    "description": "invalid_request",
}
KINDS = frozenset({*FIELD_KINDS.values(), "missing_field", "unexpected_field"})


class ErrorDetail(BaseModel):
    kind: str = Field(description="a short machine-readable name, e.g. invalid_task_input")
    message: str = Field(description="what was wrong, in words, naming the field")


class ErrorResponse(BaseModel):
    """Every refusal (4xx; 503 busy, 504 timed out)."""

    error: ErrorDetail


_MEANINGS = {
    400: "the request cannot be read",
    401: "missing or wrong API key",
    404: "not found",
    408: "the body took too long",
    409: "conflict",
    410: "gone (expired)",
    413: "too large",
    415: "unsupported content type",
    422: "a value is wrong",
    429: "too many",
    503: "busy (Retry-After)",
    504: "timed out",
    507: "storage full",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: these statuses, each answered with :class:`ErrorResponse`."""
    return {s: {"model": ErrorResponse, "description": _MEANINGS[s]} for s in statuses}


def validation_problem(errors: Sequence[Any], body: Any = None) -> RequestError:
    """pydantic's errors (and the body they are about) -> one 422: the kind of the first error, the first
    few fields described (where, what is wrong, a short prefix of the value)."""
    if not errors:
        return RequestError(422, "invalid_request", "the request does not fit this route")
    places: dict[str, tuple[list[str], str]] = {}  # a union's branches fail at one place: one entry
    for error in errors:
        where, what, got = _describe(error, body)
        places.setdefault(where, ([], got))[0].append(what)
    parts = [
        f"{where}{': ' if where else ''}{' or '.join(whats)}{got}" for where, (whats, got) in places.items()
    ]
    more = len(parts) - SHOWN_ERRORS
    text = "; ".join(parts[:SHOWN_ERRORS]) + (f" (and {more} more)" if more > 0 else "")
    return RequestError(422, _kind(errors[0], body), text)


def _names(error: dict, body: Any) -> list[str | int]:
    """The error's location without its source ('body', 'query', ...) and without the names pydantic gives
    a union's branches ('str', 'TaskEntry', ...): a body location is walked through ``body``, and a name
    found neither there nor at the end of a missing or unexpected field is a branch."""
    source, *loc = error.get("loc") or ("body",)
    if source != "body":
        return list(loc)
    names: list[str | int] = []
    value = body
    for i, name in enumerate(loc):
        inside = (isinstance(value, dict) and name in value) or (
            isinstance(value, list) and isinstance(name, int) and 0 <= name < len(value)
        )
        if inside:
            names.append(name)
            value = value[name]
        elif i == len(loc) - 1 and error["type"] in ("missing", "extra_forbidden"):
            names.append(name)
    return names


def _kind(error: dict, body: Any) -> str:
    names = _names(error, body)
    if error["type"] in KINDS:  # the models' own checks name their kind (PydanticCustomError)
        return error["type"]
    if len(names) == 1 and error["type"] == "missing":
        return "missing_field"
    if len(names) == 1 and error["type"] == "extra_forbidden":
        return "unexpected_field"
    return FIELD_KINDS.get(str(names[0]), "invalid_request") if names else "invalid_request"


def _path(names: Sequence[str | int]) -> str:
    path = ""
    for name in names:
        path += f"[{name}]" if isinstance(name, int) else f"{'.' if path else ''}{name}"
    return path


def _describe(error: dict, body: Any) -> tuple[str, str, str]:
    """(where, what is wrong, ", got <a short prefix of the value>" or "") of one pydantic error."""
    names = _names(error, body)
    if error["type"] == "extra_forbidden" and names:
        return _path(names[:-1]), f"unexpected field {brief(names[-1], 40)}", ""
    if error["type"] == "missing" or not names:
        return _path(names), error["msg"], ""
    return _path(names), error["msg"], f", got {brief(error.get('input'))}"


def _count(request: Request, kind: str) -> None:
    get_server(request).metrics.record_error(kind)


def _answer(request: Request, e: RequestError) -> JSONResponse:
    _count(request, e.kind)
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def request_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, RequestError)
    return _answer(request, e)


async def validation_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, RequestValidationError)
    # the values echoed may be megabytes: describing them (repr, cut short) is no work for the event loop
    return _answer(request, await asyncio.to_thread(validation_problem, e.errors(), e.body))


async def http_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, HTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
    return _answer(request, RequestError(e.status_code, kind, str(e.detail), dict(e.headers or {})))


async def client_gone(request: Request, _e: Exception) -> Response:
    _count(request, "client_disconnected")  # nobody to answer: counted, not an error of ours
    return Response(status_code=DISCONNECTED)


async def internal_error(request: Request, e: Exception) -> Response:
    return _answer(request, RequestError(500, "internal", f"internal error ({type(e).__name__})"))


HANDLERS: dict[Any, Callable[[Request, Exception], Any]] = {
    RequestError: request_error,
    RequestValidationError: validation_error,
    HTTPException: http_error,
    ClientDisconnect: client_gone,
    ClientGone: client_gone,
    Exception: internal_error,
}
