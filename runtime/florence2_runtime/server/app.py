"""The FastAPI app: ``/health``, ``/metrics``, ``/v1/infer``, the NVIDIA-compatible route and assets API,
the try-it page at ``/`` and the API docs (``web.py``).

Every refusal is a JSON ``{"error": {"kind", "message"}}`` with a 4xx status (503/504 for overload and
timeouts). Image decoding runs in a thread pool, inference in the batcher's single worker thread: the
event loop only parses and routes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ..errors import brief, require
from .batching import DynamicBatcher, Job, Outcome, QueueFull
from .hosted import archive as hosted
from .hosted.assets import AssetStore, sweep_interval
from .hosted.protocol import asset_id, build_response, generation_of, parse_request
from .hosted.routes import UPLOAD_ROUTE, asset_routes
from .images import decode_base64, decode_for_model, decode_image
from .jobs import INFER_FIELDS, brief_names, build_prompt, check_generation, check_task, check_tasks
from .metrics import Metrics
from .problems import RequestError, bad_request, invalid
from .settings import ServerLimits

NIM_ROUTE = "/v1/vlm/microsoft/florence-2"
OPEN_ROUTES = frozenset({"/health", UPLOAD_ROUTE})  # no API key: probes; uploads carry their URL's token
DISCONNECTED = 499  # the status a request is counted under when its client left before the answer (nginx's)


class ClientGone(Exception):
    """The client closed the connection while its request waited: the job is dropped, nothing is sent."""


def _fastapi():
    return require("fastapi", "serve", "The Florence-2 server")


def create_app(
    model,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
    *,
    ui: bool = True,
    docs: bool = True,
):
    """A FastAPI app serving ``model`` (a loaded ``Florence2``) under ``limits``; ``ui``: the page at ``/``,
    ``docs``: ``/openapi.json`` and ``/docs``."""
    fastapi = _fastapi()
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    from . import page as web  # pydantic models of the API docs: imported once FastAPI is known to be there

    limits = limits or ServerLimits()
    name = model_name or _model_name(model)
    metrics = Metrics()
    batcher = DynamicBatcher(
        model, limits.max_batch_size, limits.max_wait_ms, limits.max_queue, on_batch=metrics.record_batch
    )
    decodes = asyncio.Semaphore(limits.max_concurrent_decodes)  # full-resolution images alive at once

    store = AssetStore(limits)

    async def sweep_assets():  # expired assets are deleted even when nobody asks for them
        while True:
            await asyncio.sleep(sweep_interval(store.limits))
            store.purge()

    @asynccontextmanager
    async def lifespan(_app):
        sweeper = asyncio.create_task(sweep_assets())
        yield
        sweeper.cancel()
        await batcher.close()

    app = fastapi.FastAPI(
        title="Florence-2 (ONNX Runtime)", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.batcher, app.state.metrics, app.state.limits, app.state.assets = batcher, metrics, limits, store

    def error_response(e: RequestError) -> JSONResponse:
        metrics.record_error(e.kind)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    def endpoint(route: str, handler: Callable[[Request], Awaitable[Any]]):
        """Wrap a handler: API key, RequestError -> JSON error, metrics."""

        async def wrapped(request: Request):
            start = time.perf_counter()
            try:
                if route not in OPEN_ROUTES:
                    _check_api_key(request, limits.api_key)
                response = await handler(request)
            except RequestError as e:
                response = error_response(e)
            except (ClientGone, ClientDisconnect):  # nobody to answer: counted, not an error of ours
                metrics.record_error("client_disconnected")
                response = Response(status_code=DISCONNECTED)
            except Exception as e:  # a bug: still JSON, still counted, the worker lives on
                response = error_response(
                    RequestError(500, "internal", f"internal error ({type(e).__name__})")
                )
            metrics.record_request(route, response.status_code, time.perf_counter() - start)
            return response

        return wrapped

    async def run_job(job: Job, request: Request) -> Outcome:
        """Queue ``job``; a timeout or the client hanging up takes it out of the queue (it never runs)."""
        submit = asyncio.ensure_future(batcher.submit(job))
        gone = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            done, _ = await asyncio.wait(
                {submit, gone}, timeout=limits.request_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            gone.cancel()
            if not submit.done():
                submit.cancel()  # cancels the job's future: the batcher drops it unstarted
        if submit in done:
            try:
                return submit.result()
            except QueueFull:
                raise RequestError(
                    503,
                    "queue_full",
                    f"the server is busy ({limits.max_queue} requests waiting); retry later",
                    headers={"Retry-After": str(limits.retry_after_s)},
                ) from None
        if gone in done:
            raise ClientGone()
        raise RequestError(504, "timeout", f"the request took longer than {limits.request_timeout_s} s")

    async def infer_fields(
        task, text, region, region_format, generation, image_bytes: bytes, tasks=None
    ) -> tuple[Job, float]:
        """Checked fields + image bytes -> a Job (image decoded and prompts tokenised off the event loop, the
        image kept at the model's size) and the decode time.

        ``tasks`` (a list, instead of ``task``): several tasks on the image, one vision encoding."""
        if tasks is not None and task is not None:
            raise invalid("invalid_task_input", "give either 'task' or 'tasks', not both")
        entries = (
            check_tasks(tasks, text, region, region_format, limits.max_text_bytes)
            if tasks is not None
            else None
        )
        if entries is None:
            check_task(task, text, region, region_format, limits.max_text_bytes)
        gen, options = check_generation(generation, limits, model)
        t0 = time.perf_counter()
        async with decodes:
            image, size = await asyncio.to_thread(
                decode_for_model,
                image_bytes,
                limits.max_pixels,
                model.config.image_size,
                model.config.resample,
                limits.jpeg_draft,
            )
        decode_ms = (time.perf_counter() - t0) * 1000.0
        if entries is None:
            prompt = await asyncio.to_thread(build_prompt, task, text, region, region_format, size, model)
            return Job(image, prompt, task, gen, options, size), decode_ms
        prompts = await asyncio.to_thread(
            lambda: [
                (e.task, build_prompt(e.task, e.text, e.region, region_format, size, model)) for e in entries
            ]
        )
        return Job(
            image, prompts[0][1], prompts[0][0], gen, options, size, more_tasks=tuple(prompts[1:])
        ), decode_ms

    async def infer(request: Request):
        t0 = time.perf_counter()
        fields = await _read_infer_request(request, limits)
        unexpected = sorted(set(fields) - INFER_FIELDS)
        if unexpected:
            raise invalid(
                "unexpected_field",
                f"unexpected field(s) {brief_names(unexpected)}; allowed: {', '.join(sorted(INFER_FIELDS))}",
            )
        if fields.get("image") is None:
            raise invalid("missing_field", "'image' is required (base64, a data URL, or a multipart file)")
        image = fields["image"]
        image_bytes = image if isinstance(image, bytes) else await asyncio.to_thread(decode_base64, image)
        job, decode_ms = await infer_fields(
            fields.get("task"),
            fields.get("text"),
            fields.get("region"),
            fields.get("region_format", "pixels"),
            fields.get("generation"),
            image_bytes,
            fields.get("tasks"),
        )
        outcome = await run_job(job, request)
        timing = {
            "decode_image": decode_ms,
            "queue": outcome.queue_ms,
            "inference": outcome.inference_ms,
            "total": (time.perf_counter() - t0) * 1000.0,
        }
        return JSONResponse(
            {
                "result": outcome.result,
                "timing_ms": {k: round(v, 3) for k, v in timing.items()},
                "batch_size": outcome.batch_size,
            }
        )

    async def nim(request: Request):
        as_json = hosted.wants_json(request.query_params, request.headers)
        body = await asyncio.to_thread(_parse_json, await _read_body(request, limits))
        task, text, src = await asyncio.to_thread(parse_request, body)  # a regex over up to max_body_bytes
        asset = asset_id(src)
        image_bytes = store.resolve(asset) if asset else await asyncio.to_thread(decode_base64, src)
        job, _ = await infer_fields(task, text, None, "pixels", generation_of(body), image_bytes)
        outcome = await run_job(job, request)
        answer = build_response(task, outcome.result, name)
        if as_json:
            return JSONResponse(answer)
        async with decodes:  # the overlay is drawn on the full image (the job kept only the model's size)
            original = await asyncio.to_thread(decode_image, image_bytes, limits.max_pixels)
            data = await asyncio.to_thread(hosted.zip_answer, task, answer, outcome.result, original)
        return Response(
            data,
            media_type=hosted.ZIP_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{answer["id"]}.zip"'},
        )

    async def health(_request: Request):
        return JSONResponse(
            {
                "status": "ok",
                "model": name,
                "providers": list(model.providers),
                "queue_depth": batcher.queue_depth,
                "running": batcher.running,
                "max_batch_size": limits.max_batch_size,
                "rss_mib": _rss_mib(),
            }
        )

    async def metrics_route(_request: Request):
        gauges = {
            "queue_depth": ("Requests waiting for the model.", batcher.queue_depth),
            "running": ("Requests in the batch being run.", batcher.running),
            "resident_memory_mib": ("Resident memory of the server process (MiB).", _rss_mib()),
        }
        return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")

    for route, handler, method in (
        ("/health", health, "GET"),
        ("/metrics", metrics_route, "GET"),
        ("/v1/infer", infer, "POST"),
        (NIM_ROUTE, nim, "POST"),
        *asset_routes(store, lambda r, **kw: _read_body(r, limits, **kw), _parse_json, limits.max_pixels),
    ):
        app.add_route(
            route, endpoint(route, handler), methods=[method], include_in_schema=False
        )  # plain Starlette
    web.install(app, model, limits, name, ui=ui, docs=docs)  # the page, /openapi.json and /docs

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc):  # 404 / 405 in the same JSON shape
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(RequestError(exc.status_code, kind, str(exc.detail)))

    return app


def _rss_mib() -> float:
    """Resident memory of this process in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_api_key(request, api_key: str | None) -> None:
    """``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in constant time."""
    if api_key is None:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if given is None or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), api_key.encode("utf-8", "surrogateescape")
    ):
        raise RequestError(
            401,
            "unauthorized",
            "missing or wrong API key (send 'Authorization: Bearer <key>')",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _wait_for_disconnect(request) -> None:
    """Returns when the client hangs up. Called once the body is read, when ``receive`` only reports that."""
    for _ in range(1000):  # a server that answers receive() at once with empty bodies must not spin forever
        if (await request.receive())["type"] == "http.disconnect":
            return
    await asyncio.Event().wait()


async def _read_body(request, limits: ServerLimits, max_bytes: int | None = None) -> bytes:
    """The whole body within ``body_timeout_s`` (408), refusing (413) as soon as it is known to exceed
    ``max_bytes`` (``max_body_bytes``)."""
    max_bytes = limits.max_body_bytes if max_bytes is None else max_bytes
    try:
        return await asyncio.wait_for(_collect_body(request, max_bytes), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(
            408,
            "body_timeout",
            f"the request body did not arrive within {limits.body_timeout_s} s",
            headers={"Connection": "close"},
        ) from None


async def _collect_body(request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > max_bytes
        except ValueError:
            raise bad_request("invalid_request", f"bad Content-Length header {brief(declared)}") from None
        if too_big:
            raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> RequestError:
    return RequestError(413, "body_too_large", f"request body exceeds {max_bytes} bytes")


def _parse_json(body: bytes) -> Any:
    if not body:
        raise bad_request("invalid_json", "request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request("invalid_json", f"request body is not valid JSON ({e})") from None
    except RecursionError:
        raise bad_request("invalid_json", "request body is nested too deeply") from None
    except ValueError as e:  # an integer with more digits than Python converts (sys.get_int_max_str_digits)
        raise bad_request("invalid_json", f"request body has a number too long to read ({e})") from None


async def _read_infer_request(request, limits: ServerLimits) -> dict:
    """JSON or multipart -> a dict of fields; a multipart image stays bytes, JSON-valued fields are parsed."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    body = await _read_body(request, limits)
    if content_type in ("application/json", ""):
        fields = await asyncio.to_thread(_parse_json, body)  # large bodies take milliseconds: off the loop
        if not isinstance(fields, dict):
            raise bad_request(
                "invalid_json", f"request body must be a JSON object, got {type(fields).__name__}"
            )
        return fields
    if content_type == "multipart/form-data":
        return await _read_multipart(request, body, limits)
    raise RequestError(
        415,
        "unsupported_media_type",
        f"Content-Type {brief(content_type)} is not supported; send application/json or multipart/form-data",
    )


async def _read_multipart(request, body: bytes, limits: ServerLimits) -> dict:
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    sent = False

    async def replay():  # the body was already read (and size-checked): hand it to the form parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=1, max_fields=16, max_part_size=limits.max_body_bytes
        )
    except Exception as e:  # python-multipart / starlette parse errors
        raise bad_request(
            "invalid_multipart", f"cannot parse the multipart body ({getattr(e, 'detail', e)})"
        ) from None
    fields: dict[str, Any] = {}
    try:
        for key, value in form.multi_items():
            if key in fields:
                raise bad_request("invalid_multipart", f"field {brief(key)} is given more than once")
            if isinstance(value, UploadFile):
                if key != "image":
                    raise invalid(
                        "unexpected_field", f"only 'image' may be a file, got a file in {brief(key)}"
                    )
                fields[key] = await value.read()
            elif key == "image":
                fields[key] = value  # base64 text in a form field
            elif key in ("region", "generation", "tasks"):
                fields[key] = _form_json(key, value)
            else:
                fields[key] = value
    finally:
        await form.close()
    return fields


def _form_json(key: str, value: str) -> Any:
    """A multipart ``region`` ('[x1, y1, x2, y2]' or 'x1,y1,x2,y2'), ``generation`` (a JSON object) or
    ``tasks`` (a JSON list)."""
    text = value.strip()
    if key == "region" and text and not text.startswith("["):
        text = f"[{text}]"
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, or an int past Python's digit limit
        what = {"region": "[x1, y1, x2, y2] or x1,y1,x2,y2", "tasks": "a JSON list"}.get(key, "a JSON object")
        raise invalid(
            f"invalid_{key}" if key == "generation" else "invalid_task_input",
            f"multipart field {brief(key)} must be {what}, got {brief(value)}",
        ) from None


def _model_name(model) -> str:
    """A folder's name, or the hub id / alias the model was loaded by (its folder is a commit hash then)."""
    given = str(getattr(model, "name_or_path", "") or "")
    if given and not Path(given).is_dir():
        return given
    return Path(getattr(model, "folder", "florence2")).name
