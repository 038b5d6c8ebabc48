"""Dynamic batching: concurrent requests with the same decoding options share one ``generate`` call.

One asyncio task collects jobs; one worker thread runs the model, one batch at a time, so the event loop
never blocks. A batch is formed when the model is free: the oldest waiting job fixes the decoding
options, then up to ``max_batch_size`` waiting jobs with equal options join it (oldest first), waiting at
most ``max_wait_ms`` for company. Jobs with other options wait for a later batch.

Results equal unbatched ``Florence2.run``: each job's image goes through the vision encoder once (a job may
ask several tasks of it), then every prompt of the batch shares the text encoder and the decoder
(``tasks.answer_prompts``: token-exact across batch sizes, each row cut after its first EOS).

Confidence scores (``Job.scores``) do not split batches: scores change nothing in the search, so a batch
is generated with scores when any of its jobs asks for them, and the jobs that did not ask get their
answers without (``tasks.confidence.without_scores``: what ``run`` gives without ``scores=True``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from ..engine.native import release_freed_memory
from ..generation import DecodingOptions
from ..inputs.image_size import ImageSize
from ..tasks.batch import PromptItem, answer_prompts
from ..tasks.confidence import without_scores

log = logging.getLogger("florence2.server")


@dataclass(frozen=True)
class Job:
    """One checked request: an RGB image, the processor text and the generation settings."""

    image: Image.Image  # what the model sees (the server keeps it at the model's size, not the original's)
    prompt: str  # build_task_text's output, e.g. "<OD>" or "<REGION_TO_CATEGORY><loc_1>..."
    task: str
    generation: dict[str, Any]  # generate() keyword arguments as the client sent them
    options: DecodingOptions  # the resolved options: jobs batch together only when these are equal
    image_size: ImageSize | None = None  # the original image's size; None: image.size
    more_tasks: tuple[tuple[str, str], ...] = ()  # further (task, prompt) pairs on the same image
    scores: bool = False  # answers with each object's confidence (run(..., scores=True))

    @property
    def prompts(self) -> tuple[tuple[str, str], ...]:
        """Every (task, processor text) of the job; its result holds one answer per task."""
        return ((self.task, self.prompt), *self.more_tasks)

    @property
    def original_size(self) -> ImageSize:
        """The (width, height) the answer's coordinates refer to."""
        return self.image_size or ImageSize.of(self.image.size)


@dataclass(frozen=True)
class Outcome:
    """A job's result (``run()``'s dict) and where its time went."""

    result: dict
    queue_ms: float
    inference_ms: float
    batch_size: int


class QueueFull(Exception):
    """The waiting queue holds ``max_queue`` jobs."""


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Queue + batch former + single inference thread for one ``Florence2`` model."""

    def __init__(
        self, model, max_batch_size: int = 8, max_wait_ms: float = 5.0, max_queue: int = 64, on_batch=None
    ):
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch  # called with the batch size of every batch run
        self._pending: deque[_Pending] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="florence2-infer")
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.running = 0  # jobs in the batch the worker is running now

    @property
    def queue_depth(self) -> int:
        return sum(not p.future.done() for p in self._pending)

    async def submit(self, job: Job) -> Outcome:
        """Queue ``job`` and wait for its outcome. Raises QueueFull at once when the queue is full.

        Cancelling the caller (a timeout) drops the job if it has not started.
        """
        wakeup = self._ensure_started()
        if self.queue_depth >= self.max_queue:
            raise QueueFull()
        pending = _Pending(job, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        wakeup.set()
        return await pending.future

    def _ensure_started(self) -> asyncio.Event:
        """Start the batching loop if it is not running; returns the event that wakes it up."""
        if self._task is None or self._task.done() or self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._loop(self._wakeup), name="florence2-batcher"
            )
        return self._wakeup

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for p in self._pending:
            if not p.future.done():
                p.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _loop(self, wakeup: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if not self._pending:
                wakeup.clear()
                await wakeup.wait()
                continue
            await self._wait_for_company(wakeup)
            batch = self._take_batch()
            if not batch:
                continue
            self.running = len(batch)
            try:
                outcomes = await loop.run_in_executor(self._executor, self._run_batch, batch)
            except Exception as e:  # never lose the loop; fail this batch only
                log.exception("batch of %d failed", len(batch))
                outcomes = [e] * len(batch)
            finally:
                self.running = 0
            _deliver(batch, outcomes)
            del batch, outcomes  # the jobs' images are freed before the heap is trimmed
            self._drop_cancelled()
            if not self._pending:  # the burst is over: hand the freed heap back to the OS
                await loop.run_in_executor(self._executor, release_freed_memory)

    async def _wait_for_company(self, wakeup: asyncio.Event) -> None:
        """Wait up to max_wait for the queue to fill a batch (no wait when batching is off)."""
        if self.max_batch_size <= 1 or self.max_wait_s <= 0:
            return
        deadline = time.perf_counter() + self.max_wait_s
        while self.queue_depth < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            wakeup.clear()
            try:
                await asyncio.wait_for(wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _drop_cancelled(self) -> None:
        if any(p.future.done() for p in self._pending):
            self._pending = deque(p for p in self._pending if not p.future.done())

    def _take_batch(self) -> list[_Pending]:
        """The oldest live job and up to max_batch_size - 1 later ones with equal options, in order."""
        self._drop_cancelled()
        if not self._pending:
            return []
        key = self._pending[0].job.options
        batch: list[_Pending] = []
        rest: deque[_Pending] = deque()
        for p in self._pending:
            (batch if len(batch) < self.max_batch_size and p.job.options == key else rest).append(p)
        self._pending = rest
        return batch

    # --- worker thread ---------------------------------------------------------------------------------
    def _run_batch(self, batch: list[_Pending]) -> list[Outcome | BaseException]:
        start = time.perf_counter()
        jobs = [p.job for p in batch]
        results: list[dict] | list[dict | Exception]
        try:
            results = self._infer(jobs)
        except Exception:
            if len(jobs) == 1:
                raise
            log.exception("batch of %d failed; running its jobs one by one", len(jobs))
            results = [_try(self._infer, job) for job in jobs]
        end = time.perf_counter()
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        inference_ms = (end - start) * 1000.0
        return [
            r
            if isinstance(r, BaseException)
            else Outcome(r, (start - p.enqueued) * 1000.0, inference_ms, len(jobs))
            for p, r in zip(batch, results)
        ]

    def _infer(self, jobs: list[Job]) -> list[dict]:
        """One vision encoding per job, then every prompt of the batch through one ``answer_prompts`` (equal
        options), with scores when any job asks for them; each job's result merges the answers of its tasks."""
        items = []
        for job in jobs:
            # the queued image is at the model's size; answers are in the original image's pixels
            encoded = replace(self.model.encode_image(job.image), image_size=job.original_size)
            items += [PromptItem(encoded, task, prompt) for task, prompt in job.prompts]
        scored = any(job.scores for job in jobs)
        answers = iter(answer_prompts(self.model, items, jobs[0].options, scores=scored))
        results = []
        for job in jobs:
            result: dict = {}
            for _ in job.prompts:
                result.update(next(answers))
            if scored and not job.scores:
                result = {task: without_scores(answer) for task, answer in result.items()}
            results.append(result)
        return results


def _try(infer: Callable[[list[Job]], list[dict]], job: Job) -> dict | Exception:
    """One job alone: its result, or the exception it raised."""
    try:
        return infer([job])[0]
    except Exception as e:
        return e


def _deliver(batch: list[_Pending], outcomes: Sequence[Outcome | BaseException]) -> None:
    """Each waiting caller gets its outcome (an exception is raised in the caller)."""
    for p, outcome in zip(batch, outcomes):
        if p.future.done():  # timed out / cancelled meanwhile
            continue
        if isinstance(outcome, BaseException):
            p.future.set_exception(outcome)
        else:
            p.future.set_result(outcome)
