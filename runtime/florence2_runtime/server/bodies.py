"""Request bodies read under the server's limits and parsed off the event loop, before FastAPI sees them.

:class:`BodyRoute` is the ``route_class`` of the API routers. For a route whose signature takes a
pydantic model as its body, it runs before FastAPI's own handler and

- checks the API key first when the route needs one (``deps.API_KEY``): the body of a client without
  the key is never read;
- reads the body within ``body_timeout_s`` (else 408) and ``max_body_bytes`` (413 as soon as the
  Content-Length or the bytes so far pass it: an oversize body is not read to its end);
- parses a JSON body in a worker thread (a 20 MB body with a 15 MB base64 image: ~75 ms here),
  refusing what is not a JSON object (400); a multipart form becomes the same fields
  (:meth:`BodyRoute.form_fields`, routes that take one; parsed on the loop, as Starlette parses forms);
  other content types get 415. ``json.loads`` holds the GIL: a body of many tiny values still stalls
  the loop while it is parsed, bounded by ``max_body_bytes``;
- hands FastAPI a :class:`ParsedRequest`: its ``body()`` and ``json()`` (what FastAPI's handler awaits)
  return what was read, so the route's model validates the fields as it would any JSON body, and its
  errors become the server's 422 (``handlers.py``). That validation runs on the event loop and is
  quick for any body: no JSON object may have more than :data:`MAX_KEYS` keys (a million unexpected
  keys would be a million pydantic errors) and the models bound every list they take.

FastAPI 0.165's ``get_request_handler`` reads the body with ``await request.body()`` and, for a JSON
content type, ``await request.json()``; that is all this relies on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from ..errors import brief
from .deps import check_api_key, get_server, require_api_key
from .problems import RequestError, bad_request
from .settings import ServerLimits

FORM_LIMITS = {"max_files": 1, "max_fields": 16}  # a form holds one file (the image) and a few fields
MAX_KEYS = 256  # keys of one JSON object in a body (the models have a handful; more is junk)


class ParsedRequest(Request):
    """A request whose body was read and parsed already: FastAPI's handler sees a JSON request."""

    def __init__(self, scope: Scope, receive: Receive, body: bytes, fields: dict[str, Any]):
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        super().__init__({**scope, "headers": [*headers, (b"content-type", b"application/json")]}, receive)
        self._read, self._fields = body, fields

    async def body(self) -> bytes:
        return self._read

    async def json(self) -> dict[str, Any]:
        return self._fields


class BodyRoute(APIRoute):
    """The route class of the API routers: the API key, then the body, as the module docstring says."""

    takes_forms: ClassVar[bool] = False  # multipart bodies too (then form_fields reads them)

    async def form_fields(self, form: FormData) -> dict[str, Any]:
        """A multipart form -> the fields of the route's model (routes with ``takes_forms``)."""
        raise NotImplementedError

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        keyed = any(d.dependency is require_api_key for d in self.dependencies)
        takes_body = self.body_field is not None

        async def guarded(request: Request) -> Response:
            if keyed:
                await check_api_key(request)
            if takes_body:
                request = await self._parsed(request)
            return await handler(request)

        return guarded

    async def _parsed(self, request: Request) -> ParsedRequest:
        limits: ServerLimits = get_server(request).limits
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        form = media == "multipart/form-data" and self.takes_forms
        if not (form or media in ("", "application/json") or media.endswith("+json")):
            raise _unsupported(media, self.takes_forms)
        body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
        if form:
            fields = await self.form_fields(await read_form(request, body, limits.max_body_bytes))
        else:
            fields = await asyncio.to_thread(parse_json_object, body)
        return ParsedRequest(request.scope, request.receive, body, fields)


def _unsupported(media: str, takes_forms: bool) -> RequestError:
    wanted = "application/json or multipart/form-data" if takes_forms else "application/json"
    return RequestError(
        415, "unsupported_media_type", f"Content-Type {brief(media)} is not supported; send {wanted}"
    )


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body within ``timeout_s`` (408), refusing (413) as soon as it is known to exceed
    ``max_bytes``."""
    try:
        return await asyncio.wait_for(_collect_body(request, max_bytes), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(
            408,
            "body_timeout",
            f"the request body did not arrive within {timeout_s} s",
            headers={"Connection": "close"},
        ) from None


async def _collect_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > max_bytes
        except ValueError:
            raise bad_request("invalid_request", f"bad Content-Length header {brief(declared)}") from None
        if too_big:
            raise too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(max_bytes: int) -> RequestError:
    return RequestError(413, "body_too_large", f"request body exceeds {max_bytes} bytes")


class TooManyKeys(ValueError):
    """A JSON object with more than MAX_KEYS keys (the message is the count)."""


def _bounded_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_KEYS:
        raise TooManyKeys(len(pairs))
    return dict(pairs)


def load_json(text: str | bytes) -> Any:
    """``json.loads``, refusing (:class:`TooManyKeys`) an object with more than :data:`MAX_KEYS` keys."""
    return json.loads(text, object_pairs_hook=_bounded_object)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON body -> its object (400 ``invalid_json`` for anything else)."""
    if not body:
        raise bad_request("invalid_json", "request body is empty; send a JSON object")
    try:
        value = load_json(body)
    except TooManyKeys as e:
        raise bad_request(
            "invalid_json", f"a JSON object in the body has {e} keys; at most {MAX_KEYS}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request("invalid_json", f"request body is not valid JSON ({e})") from None
    except RecursionError:
        raise bad_request("invalid_json", "request body is nested too deeply") from None
    except ValueError as e:  # an integer with more digits than Python converts (sys.get_int_max_str_digits)
        raise bad_request("invalid_json", f"request body has a number too long to read ({e})") from None
    if not isinstance(value, dict):
        raise bad_request("invalid_json", f"request body must be a JSON object, got {type(value).__name__}")
    return value


async def read_form(request: Request, body: bytes, max_part_bytes: int) -> FormData:
    """The multipart form in ``body`` (already read and size-checked); 400 when it cannot be parsed."""
    sent = False

    async def replay():  # hand the bytes read to the form parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(**FORM_LIMITS, max_part_size=max_part_bytes)
    except Exception as e:  # python-multipart / starlette parse errors
        raise bad_request(
            "invalid_multipart", f"cannot parse the multipart body ({getattr(e, 'detail', e)})"
        ) from None
