"""``label``: a folder, list, PDF or video -> a COCO, YOLO or Pascal VOC dataset, resumable.

    from florence2_runtime import Florence2
    from florence2_runtime.datasets import label
    report = label(Florence2.from_pretrained("florence-2-base-ft"), "photos/", "dataset/", classes="cat,dog")

The loop: pictures are read one batch ahead in a worker thread while the model runs the current batch
(:func:`.batching.detect_batch`); each batch's images are written, then its records appended to the
journal (:mod:`.journal`), then the progress advances. Batches are cut from the full sequence of the
source's pictures, done ones included, so a resumed run gives the model the same batches as an
uninterrupted one. At the end, and on a stop (``stop`` set: the batch in flight is finished; or
KeyboardInterrupt: it is dropped, and raised again once the dataset is written), the annotation files
are written from the whole journal (:func:`.writers.write_dataset`), so what is there always loads.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks.batch import task_decoding_options
from .batching import detect_batch
from .detections import LabelSpec
from .journal import ERRORS_FILE, OutputFolder, Record, check_output
from .progress import Progress
from .sources import Item, Picture, Read, count_pictures, iter_pictures, list_source
from .writers import FORMATS, image_folder, kept, parse_split, save_picture, split_of, write_dataset

__all__ = ["LabelReport", "label"]

DEFAULT_BATCH = 8


@dataclass(frozen=True)
class LabelReport:
    """What a run did: pictures labelled now, done before (skipped), failed now (see ``errors``), the
    dataset's images per split and its classes; ``interrupted``: stopped before the end."""

    out: Path
    format: str
    labelled: int
    skipped: int
    failed: int
    images: Mapping[str, int]
    classes: tuple[str, ...]
    interrupted: bool
    seconds: float

    @property
    def errors(self) -> Path:
        return self.out / ERRORS_FILE

    def summary(self) -> str:
        splits = ", ".join(f"{name} {count}" for name, count in self.images.items())
        rate = self.labelled / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.out} ({self.format}): {splits} images; labelled {self.labelled} now "
            f"({rate:.2f} images/s), {self.skipped} done before; {len(self.classes)} classes"
        )
        if self.failed:
            text += f"; {self.failed} failed, see {self.errors}"
        if self.interrupted:
            text += "; stopped early: run the same command again to go on"
        return text


@dataclass(frozen=True)
class _Job:
    """The checked options of one ``label`` call (what the loop and the writer need)."""

    spec: LabelSpec
    format: str
    splits: tuple[tuple[str, float], ...]
    seed: int
    every: float
    dpi: float
    batch_size: int
    min_score: float | None
    generation: Mapping[str, Any]


def label(
    model,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    task: str | None = None,
    classes: str | Sequence[str] | None = None,
    format: str = "coco",
    min_score: float | None = None,
    split: str | Sequence[tuple[str, float]] | None = None,
    seed: int = 0,
    every: float = 1.0,
    dpi: float = 150.0,
    batch_size: int = DEFAULT_BATCH,
    overwrite: bool = False,
    progress: str | None = None,
    stop: threading.Event | None = None,
    model_options: Mapping[str, Any] | None = None,
    **generation: Any,
) -> LabelReport:
    """Label every picture of ``source`` into the dataset folder ``out``; rerun to resume.

    model: a ``Florence2`` or what ``Florence2.from_pretrained`` takes. task / classes: see
    :class:`.detections.LabelSpec` (default ``<OD>``; with classes ``<OPEN_VOCABULARY_DETECTION>``).
    format: coco, yolo or voc. min_score: drop detections scored below it (every detection has a
    score; one without would be kept). split: ``"train=0.8,valid=0.2"`` (default: everything in
    ``train``), drawn per picture from ``seed``. every: seconds between video frames; dpi: PDF rendering. progress: "bar", "log",
    "off" or None (bar on a terminal). stop: set it to stop after the batch in flight (the report says
    ``interrupted``); a KeyboardInterrupt drops that batch and is raised again once the dataset is
    written. model_options:
    ``from_pretrained`` keywords when ``model`` is a name (its precision and revision are part of the
    settings a resumed run must match). Generation keywords as ``run``.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    _check_numbers(min_score, every, dpi, batch_size)
    job = _Job(
        LabelSpec.make(task, classes),
        format,
        parse_split(split),
        seed,
        every,
        dpi,
        batch_size,
        min_score,
        generation,
    )
    out = Path(out)
    files = list_source(source, exclude=out)
    loading = dict(model_options or {})
    by_name = isinstance(model, (str, os.PathLike))
    settings = {
        "model": str(model) if by_name else getattr(model, "name_or_path", type(model).__name__),
        "model_options": {k: loading[k] for k in ("precision", "revision") if loading.get(k) is not None},
        "source": str(Path(source).resolve()),
        "task": job.spec.task,
        "classes": list(job.spec.classes),
        "format": format,
        "split": [list(pair) for pair in job.splits],
        "seed": seed,
        "every": every,
        "dpi": dpi,
        "generation": {k: generation[k] for k in sorted(generation)},
    }
    check_output(out, settings, overwrite)  # before a model load that may take a while
    if by_name:
        from ..model import Florence2

        model = Florence2.from_pretrained(os.fspath(model), **loading)
    task_decoding_options(model, **generation)  # bad generation options: an error before anything is written
    folder = OutputFolder.open(out, settings, overwrite)
    try:
        return _run(model, job, folder, files, progress, stop)
    finally:
        folder.close()


def _check_numbers(min_score, every, dpi, batch_size) -> None:
    if min_score is not None and not 0 <= min_score <= 1:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    if not every > 0:
        raise ValueError(f"every must be a number of seconds > 0, got {every}")
    if not dpi > 0:
        raise ValueError(f"dpi must be > 0, got {dpi}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _run(model, job: _Job, folder: OutputFolder, files, progress, stop) -> LabelReport:
    """The labelling loop, then the dataset written from the journal (whatever stopped the loop)."""
    started = time.perf_counter()
    done = set(folder.records)
    meter = Progress(count_pictures(files, job.every), len(done), mode=progress)
    labelled = failed = 0
    interrupted = False
    batches = _Prefetched(
        iter_pictures(files, lambda key: key not in done, job.every, job.dpi), job.batch_size
    )
    try:
        for batch in batches:
            if stop is not None and stop.is_set():  # e.g. Ctrl-C while the model was loading
                break
            new, errors = _label_batch(model, job, folder, batch)
            labelled += new
            failed += errors
            meter.update(new + errors, errors)
            if stop is not None and stop.is_set():
                break
        interrupted = stop is not None and stop.is_set()
    except KeyboardInterrupt:  # raised on: the dataset so far is written first (finally)
        interrupted = True
        raise
    finally:
        batches.close()
        meter.close(finished=not interrupted)
        records = list(folder.records.values())
        classes = job.spec.fixed_classes or tuple(
            sorted({d.label for r in records for d in kept(r.detections, job.min_score)})
        )
        images = write_dataset(folder.root, job.format, records, classes, job.splits, job.min_score)
    seconds = time.perf_counter() - started
    return LabelReport(
        folder.root, job.format, labelled, len(done), failed, images, classes, interrupted, seconds
    )


def _label_batch(model, job: _Job, folder: OutputFolder, batch: list[Read]) -> tuple[int, int]:
    """Label one batch: errors logged, images written, records journalled. (labelled, failed)."""
    todo: list[tuple[Item, Picture]] = []
    failed = 0
    for item, picture in batch:
        if isinstance(picture, Exception):
            folder.error(item.key, item.file.path, str(picture))
            failed += 1
        elif picture is not None:
            todo.append((item, picture))
    if not todo:
        return 0, failed
    results = detect_batch(model, job.spec, [p.image for _, p in todo], job.generation)
    records = []
    for (item, picture), found in zip(todo, results):
        if isinstance(found, Exception):
            folder.error(
                item.key, item.file.path, f"the model failed on it ({type(found).__name__}: {found})"
            )
            failed += 1
            continue
        split = split_of(item.key, job.splits, job.seed)
        file = save_picture(folder.root, image_folder(job.format, split), item, picture)
        records.append(Record(item.key, file, split, picture.image.size, tuple(found)))
    folder.append(records)
    return len(records), failed


class _Prefetched(Iterator[list[Read]]):
    """Batches of ``size`` pictures, the next one read in a worker thread while the caller works."""

    def __init__(self, pictures: Iterator[Read], size: int):
        self._pictures = pictures
        self._size = size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="florence2-label-read")
        self._next = self._pool.submit(self._take)

    def _take(self) -> list[Read]:
        return list(itertools.islice(self._pictures, self._size))

    def __next__(self) -> list[Read]:
        batch = self._next.result()
        if not batch:
            raise StopIteration
        self._next = self._pool.submit(self._take)
        return batch

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
