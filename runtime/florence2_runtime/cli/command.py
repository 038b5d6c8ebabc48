"""The ``florence2`` command and its sub-commands: export, run, demo, bench, compare, serve, mcp, label,
eval.

Bad arguments and bad input print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..engine.int8cpu import DEFAULT_RECIPE as DEFAULT_INT8_RECIPE
from ..engine.int8cpu import RECIPES as INT8_RECIPES
from ..errors import Florence2Error, MissingDependencyError, install_hint
from .argtypes import (
    GENERATION_FLAGS,
    MODEL_HELP,
    REGION_FORMAT_HELP,
    TOKENS_FLAGS,
    DefaultsHelpFormatter,
    add_model_arguments,
    in_flags,
    model_options,
    positive_int,
    region,
    region_format_for,
)

EXIT_USAGE = 2
EXIT_FAILED = 1  # the command ran but its result failed (an export's check)


class UsageError(Exception):
    """A command-line argument is wrong; the message says which."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, no usage dump
        raise UsageError(message)


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "generation (defaults: up to 1024 new tokens, capped by the model's positions; the "
        "rest from the model's generation_config.json, e.g. 3 beams)"
    )
    config = "default: the model's generation_config.json"
    g.add_argument("--max-new-tokens", type=int, help="default: 1024, capped by the model's positions")
    g.add_argument("--min-new-tokens", type=int, help=config)
    g.add_argument("--num-beams", type=int, help=config)
    g.add_argument("--no-repeat-ngram-size", type=int, help=config)
    g.add_argument("--length-penalty", type=float, help=config)
    g.add_argument("--early-stopping", choices=["true", "false", "never"], help=config)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", default="cpu", help="cpu, cuda, tensorrt or an onnxruntime provider name")
    p.add_argument(
        "--threads", type=positive_int, help="intra-op threads per session (default: onnxruntime's choice)"
    )


def _generation_kwargs(args: argparse.Namespace) -> dict:
    names = ["max_new_tokens", "min_new_tokens", "num_beams", "no_repeat_ngram_size", "length_penalty"]
    kwargs = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.early_stopping is not None:
        kwargs["early_stopping"] = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    return kwargs


def build_parser() -> argparse.ArgumentParser:
    """The ``florence2`` parser: one sub-parser per entry of :data:`COMMANDS`."""
    parser = _Parser(
        prog="florence2",
        description="Florence-2 with ONNX Runtime, without PyTorch.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"florence2 {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, formatter_class=command.formatter))
    return parser


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src",
        nargs="?",
        help="checkpoint folder or hub id (with --adapter: default the adapter's base_model_name_or_path)",
    )
    p.add_argument("out", help="output model folder")
    p.add_argument(
        "--adapter",
        action="append",
        metavar="ADAPTER",
        help="PEFT adapter folder or hub id merged into the model before export; repeat it to merge "
        "several, in order",
    )
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |onnx - torch| allowed per graph")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument(
        "--layout",
        choices=["native", "onnx-community"],
        default="native",
        help="native (this runtime's folder) or onnx-community (also loads in transformers.js)",
    )
    p.add_argument(
        "--dtype",
        choices=["fp32", "fp16", "int8"],
        default="fp32",
        help="graph precision: fp32, fp16 (GPUs; float32 inputs/outputs) or int8 (dynamic "
        "quantisation, CPUs); checked against PyTorch with a per-dtype tolerance",
    )
    p.add_argument(
        "--int8-recipe",
        choices=list(INT8_RECIPES),
        default=DEFAULT_INT8_RECIPE,
        help="int8 weights: 7bit (right on every CPU), full-range (only for x86 CPUs with "
        "VNNI/AMX and ARM: wrong on x86 CPUs without VNNI) or u8u8 (uint8 weights)",
    )


def _run_arguments(p: argparse.ArgumentParser) -> None:
    from .run import add_output_arguments

    p.add_argument("model", help=MODEL_HELP)
    add_model_arguments(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s) or folder(s) of images")
    p.add_argument(
        "--task",
        required=True,
        action="append",
        help='task token, e.g. "<OD>"; repeat it for several tasks on each image (one vision encoding '
        "per image, one JSON line per image with every task's answer)",
    )
    p.add_argument("--text", help="text input of the task (phrase grounding, segmentation, ...)")
    p.add_argument(
        "--region",
        type=region,
        action="append",
        metavar="X1,Y1,X2,Y2",
        help="region for the region tasks (units: --region-format); repeat it for several regions",
    )
    _add_engine_args(p)
    add_output_arguments(p)
    _add_generation_args(p)


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="demo_out", help="where the export and pictures go")
    p.add_argument("--checkpoint", help="a trained checkpoint folder (default: models/florence2-tiny-shapes)")
    p.add_argument(
        "--random", action="store_true", help="build a RANDOM-weight checkpoint instead (answers are noise)"
    )


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    add_model_arguments(p)
    p.add_argument("--image", help="image file (default: a generated 640x480 image)")
    p.add_argument("--task", default="<OD>", help="task token, optionally followed by its text input")
    p.add_argument("--tokens", type=int, default=20, help="new tokens per sequence, forced exactly")
    p.add_argument("--beams", type=int, default=1, help="beam count")
    p.add_argument("--batch", type=int, default=1, help="images per generate call")
    p.add_argument("--runs", type=int, default=3, help="measured runs after one warm-up run")
    p.add_argument(
        "--scores", action="store_true", help="keep the token scores too (what run(..., scores=True) costs)"
    )
    _add_engine_args(p)
    p.add_argument("--json", action="store_true", help="print every run as JSON instead of a table")


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_a", help="reference model (" + MODEL_HELP + ")")
    p.add_argument("model_b", help="model to compare with it")
    add_model_arguments(p, "a")
    add_model_arguments(p, "b")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s) or folder(s) of images")
    p.add_argument("--task", default="<MORE_DETAILED_CAPTION>", help="task token")
    p.add_argument("--text", help="text input of the task, if it takes one")
    p.add_argument("--region", type=region, metavar="X1,Y1,X2,Y2", help="region, for the region tasks")
    p.add_argument("--region-format", choices=["pixels", "normalized"], help=REGION_FORMAT_HELP)
    p.add_argument(
        "--tokens",
        type=int,
        help="max new tokens (default: full answers, up to 1024 capped by the models' positions, as run)",
    )
    p.add_argument("--beams", type=int, help="beam count (default: the models' generation config)")
    _add_engine_args(p)
    p.add_argument("--json", action="store_true", help="print the full report as JSON")


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    from ..server.cli import add_arguments

    add_arguments(p)


def _mcp_arguments(p: argparse.ArgumentParser) -> None:
    from ..mcp.cli import add_arguments

    add_arguments(p)


def _label_arguments(p: argparse.ArgumentParser) -> None:
    from ..datasets.cli import add_label_arguments

    add_label_arguments(p)


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    from ..datasets.cli import add_eval_arguments

    add_eval_arguments(p)


def _cmd_export(args) -> int:
    try:
        from florence2_export import ExportCheckError, export
    except ImportError as e:
        raise MissingDependencyError(
            f"'florence2 export' needs PyTorch and transformers ({e}); install the 'export' extra: "
            + install_hint("export")
        ) from None
    if args.src is None and not args.adapter:
        raise UsageError("the following arguments are required: src (or --adapter, whose base model is used)")
    from florence2_export.precision import Int8Options

    options = Int8Options(recipe=args.int8_recipe) if args.dtype == "int8" else None
    try:
        export(
            args.src,
            args.out,
            tolerance=args.tolerance,
            check=not args.no_check,
            overwrite=args.overwrite,
            layout=args.layout,
            dtype=args.dtype,
            adapter=args.adapter,
            precision_options=options,
        )
    except ExportCheckError as e:  # the summary above shows every graph; this is the verdict, once
        print(f"florence2: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _cmd_run(args) -> int:
    from .run import run_command

    return run_command(args, _generation_kwargs(args))


def _cmd_demo(args) -> int:
    try:
        from florence2_export.toy.demo import run_demo
    except ImportError as e:
        raise MissingDependencyError(
            f"'florence2 demo' builds a checkpoint with PyTorch ({e}); install the 'export' extra: "
            + install_hint("export")
        ) from None
    if args.checkpoint is not None and not Path(args.checkpoint, "config.json").is_file():
        raise UsageError(f"not a checkpoint folder (no config.json): {args.checkpoint}")
    run_demo(
        Path(args.workdir), checkpoint=args.checkpoint and Path(args.checkpoint), random_weights=args.random
    )
    return 0


def _cmd_bench(args) -> int:
    from ..model import Florence2
    from .bench import BenchOptions, report_json, run_bench

    options = BenchOptions(
        task=args.task,
        tokens=args.tokens,
        beams=args.beams,
        batch=args.batch,
        runs=args.runs,
        scores=args.scores,
    )
    if args.image is not None and not Path(args.image).is_file():
        raise UsageError(f"image not found: {args.image}")
    model = Florence2.from_pretrained(
        args.model, providers=args.provider, threads=args.threads, **model_options(args)
    )
    report = run_bench(model, options, images=args.image)
    print(report_json(report) if args.json else report.table())
    return 0


def _cmd_compare(args) -> int:
    from .compare import CompareOptions, compare_models

    options = CompareOptions(
        task=args.task,
        text=args.text,
        region=args.region,
        region_format=region_format_for(args.region and [args.region], args.region_format),
        max_new_tokens=args.tokens,
        num_beams=args.beams,
    )
    report = compare_models(
        args.model_a,
        args.model_b,
        args.images,
        options,
        providers=args.provider,
        threads=args.threads,
        options_a=model_options(args, "a"),
        options_b=model_options(args, "b"),
    )
    print(report.to_json() if args.json else report.format_text())
    return 0


def _cmd_serve(args) -> int:
    from ..server.cli import run as run_server

    return run_server(args)


def _cmd_mcp(args) -> int:
    from ..mcp.cli import run as run_mcp

    return run_mcp(args)


def _cmd_label(args) -> int:
    from ..datasets.cli import run_label

    return run_label(args)


def _cmd_eval(args) -> int:
    from ..datasets.cli import run_eval

    return run_eval(args)


@dataclass(frozen=True)
class Command:
    """A sub-command: its one-line help, its arguments and what runs it (returns the exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    formatter: type[argparse.HelpFormatter] = DefaultsHelpFormatter  # serve's help states its own defaults


COMMANDS = {
    "export": Command(
        "export a Florence-2 checkpoint to an ONNX model folder (needs the 'export' extra)",
        _export_arguments,
        _cmd_export,
    ),
    "run": Command(
        "run one task on images (files or folders) and print the results as JSON", _run_arguments, _cmd_run
    ),
    "demo": Command(
        "export the toy model trained on generated shapes (models/florence2-tiny-shapes), run every task "
        "on fresh images and draw the answers (needs the 'export' extra)",
        _demo_arguments,
        _cmd_demo,
    ),
    "bench": Command(
        "time each stage of an exported model (forces exactly --tokens new tokens)",
        _bench_arguments,
        _cmd_bench,
    ),
    "compare": Command(
        "measure how far two exports agree on your images (e.g. fp32 vs int8)",
        _compare_arguments,
        _cmd_compare,
    ),
    "serve": Command(
        "serve a model over HTTP with dynamic batching (needs the 'serve' extra; --ray: Ray Serve, the "
        "'ray' extra)",
        _serve_arguments,
        _cmd_serve,
        argparse.HelpFormatter,
    ),
    "mcp": Command(
        "serve a model's tasks as tools for AI agents over MCP (stdio or --http; the 'mcp' extra)",
        _mcp_arguments,
        _cmd_mcp,
    ),
    "label": Command(
        "label a folder, list, PDF or video into a COCO / YOLO / VOC dataset, resumably (the 'label' extra)",
        _label_arguments,
        _cmd_label,
    ),
    "eval": Command(
        "mAP of a model on a COCO or YOLO dataset (the 'label' extra)", _eval_arguments, _cmd_eval
    ),
}


FLAGS = {"run": GENERATION_FLAGS, "compare": TOKENS_FLAGS, "bench": TOKENS_FLAGS}
"""Per command, the flags that set the library's keywords (error messages are translated into them)."""


def main(argv: Sequence[str] | None = None) -> int:
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        return COMMANDS[command].run(args)
    except (UsageError, ValueError, FileExistsError, Florence2Error, ImportError) as e:
        message = (
            in_flags(str(e), FLAGS[command]) if isinstance(e, ValueError) and command in FLAGS else str(e)
        )
        print(f"florence2: error: {message}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
