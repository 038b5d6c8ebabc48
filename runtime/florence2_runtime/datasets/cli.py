"""The ``florence2 label`` and ``florence2 eval`` sub-commands: their options and what they run.

``label`` exits 0 when every picture was labelled, 1 when some failed (listed in ``DIR/errors.jsonl``),
130 when stopped (Ctrl-C or SIGTERM: the batch in flight is finished and the dataset written; a second
Ctrl-C drops that batch). ``eval`` exits 0, or 1 when some images could not be run. Bad arguments are a
ValueError, which ``florence2`` prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..cli.argtypes import MODEL_HELP, add_model_arguments, fraction, model_options, positive_int
from .detections import LABEL_TASKS
from .writers import FORMATS

EXIT_FAILED = 1
EXIT_STOPPED = 130


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {value}")
    return number


def _add_model_and_run_options(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--provider", default="cpu", help="cpu, cuda, tensorrt or an onnxruntime provider name")
    p.add_argument(
        "--threads", type=positive_int, help="intra-op threads per session (default: chosen by onnxruntime)"
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (default: 8)")
    p.add_argument("--num-beams", type=positive_int, help="beam count (default: the model's, e.g. 3)")
    p.add_argument(
        "--max-new-tokens", type=positive_int, help="longest answer (default: 1024, capped by the model)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log lines")


def _generation(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("num_beams", "max_new_tokens") if getattr(args, k) is not None}


def _loading(args: argparse.Namespace) -> dict:
    return {"providers": args.provider, "threads": args.threads, **model_options(args)}


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``florence2 label MODEL SOURCE --out DIR``."""
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument(
        "source",
        help="a folder (searched recursively for images, PDFs and videos), a .txt list of paths, a PDF or a video",
    )
    p.add_argument(
        "--out", required=True, help="the dataset folder (new or empty, or an earlier run's: resumed)"
    )
    p.add_argument(
        "--task",
        choices=list(LABEL_TASKS),
        metavar="TASK",
        help=f"what finds the objects: {', '.join(LABEL_TASKS)} (default: <OD>; with --classes "
        "<OPEN_VOCABULARY_DETECTION>)",
    )
    p.add_argument(
        "--classes",
        help='class names, e.g. "cat,dog": each asked by name (one vision encoding per image); with <OD> or '
        "<DENSE_REGION_CAPTION> only the objects with these labels are kept (default: every object)",
    )
    p.add_argument("--format", choices=FORMATS, default="coco", help="dataset format")
    p.add_argument(
        "--min-score",
        type=fraction,
        help="drop detections scored below this (default: keep every detection)",
    )
    p.add_argument("--split", help="e.g. train=0.8,valid=0.2 (default: all in train), drawn per image")
    p.add_argument("--seed", type=int, default=0, help="seed of the split draw (default: 0)")
    p.add_argument("--every", type=_seconds, default=1.0, help="seconds between labelled video frames")
    p.add_argument("--dpi", type=_seconds, default=150.0, help="PDF pages are rendered at this DPI")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's dataset in --out")
    _add_model_and_run_options(p)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``florence2 eval MODEL (--coco FILE --images DIR | --yolo DIR)``."""
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--coco", metavar="ANNOTATIONS.json", help="ground truth: a COCO file (with --images)")
    p.add_argument("--images", metavar="DIR", help="the folder holding the COCO file's images")
    p.add_argument("--yolo", metavar="DIR", help="ground truth: a YOLO split folder (images/, labels/)")
    p.add_argument("--data-yaml", help="the YOLO data.yaml (default: in DIR or its parent)")
    p.add_argument(
        "--task",
        choices=list(LABEL_TASKS),
        metavar="TASK",
        help=f"what finds the objects: {', '.join(LABEL_TASKS)} (default: <OD>)",
    )
    p.add_argument(
        "--open-vocabulary",
        action="store_true",
        help="ask for each of the dataset's classes by name (<OPEN_VOCABULARY_DETECTION>, or --task)",
    )
    p.add_argument(
        "--map",
        metavar="FILE",
        help='JSON {"model label": "dataset class"} for synonyms (default: exact names only)',
    )
    p.add_argument(
        "--save",
        metavar="PRED.json",
        help="write the predictions in COCO results format (default: not written)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_model_and_run_options(p)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C or SIGTERM (the run stops after its batch); a second Ctrl-C raises
    KeyboardInterrupt (the batch in flight is dropped). Handlers restored on exit."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print(
            "florence2 label: stopping after the batch in flight (Ctrl-C again: at once); the dataset is kept",
            file=sys.stderr,
            flush=True,
        )

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    earlier = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in earlier.items():
            signal.signal(s, h)


@contextmanager
def _stopped_at_once(out: str) -> Iterator[None]:
    """A second Ctrl-C: the dataset so far is written (label did it); say so and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        print(
            f"florence2 label: stopped; {out} holds what was labelled (run again to go on)", file=sys.stderr
        )
        raise SystemExit(EXIT_STOPPED) from None


def run_label(args: argparse.Namespace) -> int:
    from .labelling import label

    with _stop_on_signals() as stop, _stopped_at_once(args.out):
        report = label(
            args.model,
            args.source,
            args.out,
            task=args.task,
            classes=args.classes,
            format=args.format,
            min_score=args.min_score,
            split=args.split,
            seed=args.seed,
            every=args.every,
            dpi=args.dpi,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            progress="off" if args.quiet else None,
            stop=stop,
            model_options=_loading(args),
            **_generation(args),
        )
    print(report.summary(), flush=True)
    if report.interrupted:
        return EXIT_STOPPED
    return EXIT_FAILED if report.failed else 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, read_label_map

    report = evaluate(
        args.model,
        coco=args.coco,
        images=args.images,
        yolo=args.yolo,
        data_yaml=args.data_yaml,
        task=args.task,
        open_vocabulary=args.open_vocabulary,
        label_map=read_label_map(args.map),
        batch_size=args.batch_size,
        save=args.save,
        progress="off" if args.quiet else None,
        model_options=_loading(args),
        **_generation(args),
    )
    print(report.to_json() if args.json else report.format_text(), flush=True)
    return EXIT_FAILED if report.failed else 0
