"""From a request's checked fields to its answer, for every inference route (``/v1/infer`` and NVIDIA's).

- :class:`Generation`: the generation settings a request may set (types and lower bounds; pydantic);
  :func:`resolve_generation` adds this server's upper bounds and the task-level defaults (up to 1024 new
  tokens, capped by ``--max-new-tokens`` and the model's positions; the checkpoint's other settings).
- :func:`prepare`: a text over ``max_text_bytes`` is refused before anything is tokenised; the task rules
  are the library's (``tasks.batch.task_items``), so a request is valid exactly when ``Florence2.run``
  would take it; the image is decoded and resized to the model's size in a worker thread; the prompts are
  built and measured by the library (``tasks.prompts.encode_prompts``: the one prompt-length check) in a
  worker thread too.
- :func:`run_job`: the job waits in the batcher's queue (503 when full, 504 past the deadline); a client
  that hangs up takes its job out of the queue.

Every ``ValueError`` of the library becomes a 422 naming the field.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from ..errors import brief
from ..generation import DecodingOptions
from ..inputs.image_size import ImageSize
from ..tasks.batch import TaskInput, decoding_options, task_decoding_options, task_items
from ..tasks.prompts import encode_prompts
from .batching import Job, Outcome, QueueFull
from .images import decode_for_model
from .problems import RequestError, invalid
from .settings import ServerLimits

if TYPE_CHECKING:
    from .deps import Server


class ClientGone(Exception):
    """The client closed the connection while its request waited: the job is dropped, nothing is sent."""


class Generation(BaseModel):
    """Generation settings (transformers' names); unset ones take the model's generation_config.json, except
    max_new_tokens: up to 1024 unless set."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_new_tokens: int | None = Field(
        default=None, ge=1, description="default 1024; at most --max-new-tokens and the model's positions - 1"
    )
    min_new_tokens: int | None = Field(default=None, ge=0)
    num_beams: int | None = Field(default=None, ge=1, description="at most --max-num-beams")
    no_repeat_ngram_size: int | None = Field(default=None, ge=0)
    length_penalty: float | None = None
    early_stopping: bool | Literal["never"] | None = None


def max_new_tokens_cap(limits: ServerLimits, model) -> int:
    """The most new tokens a request may ask for: ``--max-new-tokens``, and the decoder's positions - 1."""
    return min(limits.max_new_tokens, model.config.max_position_embeddings - 1)


def default_max_new_tokens(limits: ServerLimits, model) -> int:
    """The new tokens of a request that sets none: the task-level default (1024), capped."""
    return min(task_decoding_options(model).max_new_tokens, max_new_tokens_cap(limits, model))


def resolve_generation(
    generation: Generation | None, limits: ServerLimits, model
) -> tuple[dict[str, Any], DecodingOptions]:
    """A request's generation settings -> (what it set, the resolved options); 422 beyond this server's
    limits or where the model refuses them."""
    given = generation.model_dump(exclude_none=True) if generation is not None else {}
    ranges = {"max_new_tokens": max_new_tokens_cap(limits, model), "num_beams": limits.max_num_beams}
    for name, high in ranges.items():
        value = given.get(name)
        if value is not None and not 1 <= value <= high:
            raise invalid(
                "invalid_generation", f"generation.{name} must be in [1, {high}], got {brief(value)}"
            )
    kwargs = {"max_new_tokens": default_max_new_tokens(limits, model), **given}
    try:
        options = decoding_options(model, **kwargs)
    except (ValueError, TypeError) as e:  # "length_penalty must be ..." -> generation.length_penalty ...
        named = any(str(e).startswith(name) for name in given)
        raise invalid("invalid_generation", f"generation{'.' if named else ': '}{e}") from None
    for name, high in ranges.items():  # the checkpoint's defaults must respect the limits too
        if not 1 <= getattr(options, name) <= high:
            raise invalid(
                "invalid_generation",
                f"generation.{name}={getattr(options, name)} (from the model's defaults) is "
                f"outside this server's range [1, {high}]; set it explicitly",
            )
    return given, options


def check_text_size(text: str, max_text_bytes: int) -> None:
    """422 when ``text`` is over ``max_text_bytes`` in UTF-8 (a character is at least one byte: long strings
    are refused without encoding them)."""
    size = len(text) if len(text) > max_text_bytes else len(text.encode("utf-8", "surrogatepass"))
    if size > max_text_bytes:
        raise invalid(
            "text_too_long",
            f"text is {'at least ' if len(text) > max_text_bytes else ''}{size} bytes; "
            f"this server takes at most {max_text_bytes} (UTF-8)",
        )


async def prepare(
    server: Server,
    tasks: list[TaskInput],
    region_format: str,
    generation: Generation | None,
    image_bytes: bytes,
    scores: bool = False,
) -> tuple[Job, float]:
    """Checked fields + image bytes -> a Job (the image kept at the model's size) and the decode time (ms);
    ``scores``: the answers carry confidence scores, as ``run(..., scores=True)``'s."""
    limits, model = server.limits, server.model
    for entry in tasks:
        if isinstance(entry.text, str):
            check_text_size(entry.text, limits.max_text_bytes)
    try:
        tasks = task_items(tasks, region_format)
    except (ValueError, TypeError) as e:
        raise invalid("invalid_task_input", str(e)) from None
    given, options = resolve_generation(generation, limits, model)
    t0 = time.perf_counter()
    async with server.decodes:  # full-resolution images alive at once
        image, size = await asyncio.to_thread(
            decode_for_model,
            image_bytes,
            limits.max_pixels,
            model.config.image_size,
            model.config.resample,
            limits.jpeg_draft,
        )
    decode_ms = (time.perf_counter() - t0) * 1000.0
    (task, prompt), *more = await asyncio.to_thread(_prompts, model, tasks, size, region_format)
    return Job(image, prompt, task, given, options, size, more_tasks=tuple(more), scores=scores), decode_ms


def _prompts(model, tasks: list[TaskInput], size: ImageSize, region_format: str) -> list[tuple[str, str]]:
    """(task, processor text) for each task on an image of ``size``, measured by the model's tokenizer."""
    try:
        texts = [entry.prompt(size, region_format) for entry in tasks]
    except (ValueError, TypeError) as e:  # a region outside the image
        raise invalid("invalid_task_input", str(e)) from None
    try:
        encode_prompts(
            model.tokenizer, model.config, texts
        )  # the one check: the prompt must fit next to the image
    except ValueError as e:
        raise invalid("text_too_long", f"text: {e}") from None
    return [(entry.task, text) for entry, text in zip(tasks, texts)]


async def run_job(server: Server, job: Job, request: Request) -> Outcome:
    """Queue ``job``; a timeout or the client hanging up takes it out of the queue (it never runs)."""
    limits = server.limits
    submit = asyncio.ensure_future(server.batcher.submit(job))
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


async def answer(
    server: Server,
    request: Request,
    tasks: list[TaskInput],
    region_format: str,
    generation: Generation | None,
    image_bytes: bytes,
    scores: bool = False,
) -> tuple[Outcome, float]:
    """:func:`prepare`, then :func:`run_job`: the outcome and the decode time (ms)."""
    job, decode_ms = await prepare(server, tasks, region_format, generation, image_bytes, scores)
    return await run_job(server, job, request), decode_ms


async def _wait_for_disconnect(request: Request) -> None:
    """Returns when the client hangs up. Called once the body is read, when ``receive`` only reports that."""
    for _ in range(1000):  # a server that answers receive() at once with empty bodies must not spin forever
        if (await request.receive())["type"] == "http.disconnect":
            return
    await asyncio.Event().wait()
