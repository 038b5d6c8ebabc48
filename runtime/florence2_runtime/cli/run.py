"""``florence2 run``: one task (or several) on one image, several images or folders; JSON out, drawings.

Output records (one per image, and per region when several ``--region`` are given):

- one image, at most one region: one JSON document, ``{task: answer}`` as ``Florence2.run`` returns it
  (``--typed``: ``Florence2Result.to_json_dict()``);
- otherwise JSON lines, each record with ``"image"`` (several images) and ``"region"`` (several regions)
  keys added. An image that fails gives ``{"image": ..., "error": ...}``, the others still run, and the
  exit code is 1.
- several ``--task``: one record per image holding every task's answer (``Florence2.run_tasks``: one
  vision encoding per image); ``--text`` goes to the tasks that take text, one ``--region`` to the region
  tasks. ``--typed``: ``{task: Florence2Result JSON}``.

``--scores`` adds each object's confidence to the answers (``run(..., scores=True)``: a ``"scores"`` list
parallel to the objects; a text answer becomes ``{"text", "scores"}``); ``--min-score X`` (implies
``--scores``) leaves out the objects scored below X, in the records and in the drawings (text answers stay).

``--output FILE`` writes the records to FILE instead of stdout. ``--draw PATH`` saves annotated images:
one image -> the file PATH; several images -> the folder PATH, one ``<name>.png`` per image (all
regions of an image are drawn on one picture). A progress bar goes to stderr when it is a terminal,
unless ``--quiet``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from ..inputs.images import is_url, load_image
from ..tasks.batch import TaskInput, task_items
from ..tasks.confidence import drop_below
from ..tasks.prompts import REGION_FORMATS, check_task_input
from ..tasks.results import Florence2Result
from ..tasks.table import TASKS
from .argtypes import (
    GENERATION_FLAGS,
    REGION_FORMAT_HELP,
    fraction,
    in_flags,
    model_options,
    region_format_for,
)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``florence2 run`` beyond model, images, task, text and region."""
    p.add_argument("--region-format", choices=REGION_FORMATS, help=REGION_FORMAT_HELP)
    p.add_argument(
        "--output",
        "-o",
        help="write the JSON result(s) to this file (JSON lines when there are several; default: stdout)",
    )
    p.add_argument(
        "--draw",
        help="save the annotated image to this file; with several images, a folder "
        "that gets one <name>.png per image",
    )
    p.add_argument(
        "--typed",
        action="store_true",
        help="print Florence2Result JSON (boxes, quad_boxes, polygons, text), not the run() dict",
    )
    p.add_argument(
        "--scores",
        action="store_true",
        help="add each object's confidence in (0, 1] to the answers (a 'scores' list parallel to the "
        "objects; text answers become {text, scores})",
    )
    p.add_argument(
        "--min-score",
        type=fraction,
        metavar="X",
        help="leave out objects scored below X (0-1) in the output and in --draw; implies --scores "
        "(default: keep every object)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class _Plan:
    images: list[Path]
    several_images: bool
    regions: list | None  # None: the task takes no region (or takes text)
    draw_path: Path | None
    region_format: str  # --region-format, or pixels (region_format_for)
    tasks: list[TaskInput] | None = None  # several --task: each with its input
    scores: bool = False  # --scores, or implied by --min-score
    min_score: float | None = None


def expand_images(paths: Sequence[str]) -> tuple[list[Path], bool]:
    """Image files and folders (their image files, sorted, not recursive) -> files, and whether the
    call is about several images (more than one path, or any folder)."""
    files: list[Path] = []
    for raw in paths:
        if is_url(raw):
            raise ValueError(f"{raw}: image URLs are not fetched; download the image and pass the file")
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"image not found: {raw}")
    return files, len(paths) > 1 or any(Path(p).is_dir() for p in paths)


def _check_draw_path(draw: str | None, several_images: bool) -> Path | None:
    if draw is None:
        return None
    path = Path(draw)
    if several_images:
        if path.exists() and not path.is_dir():
            raise ValueError(f"--draw with several images needs a folder, and {path} is a file")
        return path
    from PIL import Image

    if path.suffix.lower() not in Image.registered_extensions():
        raise ValueError(f"--draw {draw}: unknown image file extension (use e.g. .png or .jpg)")
    if path.is_dir():
        raise ValueError(f"--draw {draw} is a folder; give an image file name for a single image")
    if not path.parent.is_dir():
        raise ValueError(f"--draw {draw}: folder {path.parent} does not exist")
    return path


def plan(args: argparse.Namespace) -> _Plan:
    """Check every argument before loading the model; ValueError names the wrong one."""
    regions = args.region
    region_format = region_format_for(regions, args.region_format)
    tasks = _task_list(args, region_format) if len(args.task) > 1 else None
    if tasks is None:
        for region in regions or [None]:
            check_task_input(args.task[0], args.text, region, region_format=region_format)
    images, several = expand_images(args.images)
    if args.output is not None:
        output = Path(args.output)
        if output.is_dir():
            raise ValueError(f"--output {args.output} is a folder; give a file name")
        if not output.parent.is_dir():
            raise ValueError(f"--output {args.output}: folder {output.parent} does not exist")
    draw = _check_draw_path(args.draw, several)
    scores = args.scores or args.min_score is not None
    return _Plan(
        images, several, None if tasks else regions, draw, region_format, tasks, scores, args.min_score
    )


def _task_list(args: argparse.Namespace, region_format: str) -> list[TaskInput]:
    """Several ``--task``: ``--text`` to the tasks that take text, one ``--region`` to the region tasks."""
    if args.region is not None and len(args.region) > 1:
        raise ValueError("several --region need a single --task (or run the region task on its own)")
    region = args.region[0] if args.region else None
    takes_text = [t for t in args.task if t in TASKS and TASKS[t].input == "text"]
    takes_region = [t for t in args.task if t in TASKS and TASKS[t].input == "region"]
    if args.text is not None and not takes_text:
        raise ValueError(f"--text is given but none of the tasks {', '.join(args.task)} takes text")
    if region is not None and not takes_region:
        raise ValueError(f"--region is given but none of the tasks {', '.join(args.task)} takes a region")
    entries = [
        TaskInput(t, args.text if t in takes_text else None, region if t in takes_region else None)
        for t in args.task
    ]
    return task_items(entries, region_format)


class Progress:
    """A one-line progress bar on a stream; silent unless enabled."""

    def __init__(self, total: int, stream: IO[str], enabled: bool, width: int = 30):
        self.total, self.stream, self.enabled, self.width = total, stream, enabled, width

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        filled = round(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{self.total} {note[:40]:<40}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _draw_names(images: list[Path]) -> Iterator[str]:
    """``<stem>.png`` per image, made unique with ``-2``, ``-3``... when stems repeat."""
    seen: dict[str, int] = {}
    for image in images:
        n = seen.get(image.stem, 0) + 1
        seen[image.stem] = n
        yield f"{image.stem}.png" if n == 1 else f"{image.stem}-{n}.png"


def _records(model, image: Path, args, gen: dict, p: _Plan):
    """(records, results) for one image."""
    pil = load_image(image)
    if p.tasks is not None:
        answers = model.run_tasks(pil, p.tasks, region_format=p.region_format, scores=p.scores, **gen)
        results = [
            above_min_score(Florence2Result.from_answer(task, answer, pil.size), p.min_score)
            for task, answer in answers.items()
        ]
        record: dict[str, Any] = {"image": str(image)} if p.several_images else {}
        record.update({r.task: r.to_json_dict() if args.typed else r.raw[r.task] for r in results})
        return pil, [record], results
    if p.regions is None:
        results = [model.predict(pil, args.task[0], text=args.text, scores=p.scores, **gen)]
    else:
        results = model.predict_regions(
            pil, args.task[0], p.regions, region_format=p.region_format, scores=p.scores, **gen
        )
    results = [above_min_score(r, p.min_score) for r in results]
    records = []
    for i, result in enumerate(results):
        record = {}
        if p.several_images:
            record["image"] = str(image)
        if p.regions is not None and len(p.regions) > 1:
            record["region"] = list(p.regions[i])
        record.update(result.to_json_dict() if args.typed else result.raw)
        records.append(record)
    return pil, records, results


def above_min_score(result: Florence2Result, min_score: float | None) -> Florence2Result:
    """``result`` without the objects scored below ``min_score``, in its shapes and in ``raw`` alike (also
    the MCP tools' ``min_score``); None: the result as it is."""
    if min_score is None:
        return result
    return replace(
        result.above(min_score),
        raw={task: drop_below(answer, min_score) for task, answer in result.raw.items()},
    )


def _problem(image: Path, error: Exception) -> str:
    """What went wrong with ``image``, without its path (errors from ``load_image`` start with it)."""
    message, prefix = str(error), f"{image}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def run_command(
    args: argparse.Namespace,
    generation_kwargs: dict,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """``florence2 run``; returns the exit code (0, or 1 when some image of several failed)."""
    from ..model import Florence2

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    p = plan(args)
    model = Florence2.from_pretrained(
        args.model, providers=args.provider, threads=args.threads, **model_options(args)
    )
    if p.draw_path is not None and p.several_images:
        p.draw_path.mkdir(parents=True, exist_ok=True)
    out = open(args.output, "w", encoding="utf-8") if args.output else stdout  # noqa: SIM115 (closed below)
    progress = Progress(len(p.images), stderr, p.several_images and not args.quiet and stderr.isatty())
    failed = 0
    try:
        for done, (image, draw_name) in enumerate(zip(p.images, _draw_names(p.images))):
            progress.update(done, image.name)
            try:
                pil, records, results = _records(model, image, args, generation_kwargs, p)
            except (ValueError, OSError) as e:
                problem = in_flags(_problem(image, e), GENERATION_FLAGS)
                if not p.several_images:
                    raise ValueError(f"{image}: {problem}") from None
                failed += 1
                records, results = [{"image": str(image), "error": problem}], []
                print(f"florence2: {image}: {problem}".splitlines()[0], file=stderr)
            for record in records:
                text = json.dumps(record, ensure_ascii=False)
                out.write(text + "\n")
            out.flush()
            if results and p.draw_path is not None:
                target = p.draw_path / draw_name if p.several_images else p.draw_path
                for result in results:
                    pil = result.draw(pil)
                pil.save(target)
        progress.update(len(p.images))
    finally:
        progress.close()
        if out is not stdout:
            out.close()
    return 1 if failed else 0
