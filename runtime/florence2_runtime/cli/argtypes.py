"""What the commands share: argparse ``type=`` converters (each refuses a bad value with a message naming it),
the MODEL argument's options (``--precision``, ``--revision``), help that states defaults, the region
checks of the command line and the translation of library messages into flags."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence

from ..engine.hub import ALIASES

MODEL_HELP = "model folder, hub repository id (owner/name) or alias (" + ", ".join(ALIASES) + ")"


def positive_int(value: str) -> int:
    """An integer >= 1 (thread counts, sizes)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return number


def fraction(value: str) -> float:
    """A number in [0, 1] (score thresholds, split shares)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {value!r}") from None
    if not 0 <= number <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {value}")
    return number


def port_number(value: str) -> int:
    """A TCP port, 1-65535 (a larger number would silently wrap around to another port)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value!r}") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return number


def add_model_arguments(p: argparse.ArgumentParser, which: str = "") -> None:
    """``--precision`` and ``--revision`` for a command's MODEL argument (``which="a"``: ``--precision-a``)."""
    tail, of = (f"-{which}", f" of model {which.upper()}") if which else ("", "")
    p.add_argument(
        f"--precision{tail}",
        help=f"graph variant{of}: fp32, fp16, int8, q4, ..., or bf16 (the fp32 graphs in bfloat16 through "
        "OpenVINO, CPUs with bf16, extra 'openvino') (default: fp32 on the CPU, fp16 on a GPU where the "
        "repository has it)",
    )
    p.add_argument(
        f"--revision{tail}",
        help=f"hub branch, tag or commit{of} (hub ids and aliases only; default: the default branch)",
    )


def model_options(args: argparse.Namespace, which: str = "") -> dict:
    """The ``Florence2.from_pretrained`` keywords from :func:`add_model_arguments`' options."""
    tail = f"_{which}" if which else ""
    return {"precision": getattr(args, f"precision{tail}"), "revision": getattr(args, f"revision{tail}")}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, unless there is none (None, False) or the text states it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.default is None or action.default is False:
            return text
        if action.default == argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def region(value: str) -> tuple[float, float, float, float]:
    """``--region X1,Y1,X2,Y2``: four numbers."""
    parts = value.split(",")
    try:
        nums = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be four numbers X1,Y1,X2,Y2, got {value!r}") from None
    if len(nums) != 4:
        raise argparse.ArgumentTypeError(f"must be four numbers X1,Y1,X2,Y2, got {value!r}")
    return nums  # a 4-tuple: mypy narrows tuple[float, ...] by the len() check


REGION_FORMAT_HELP = (
    "units of --region: pixels, or normalized fractions of the width and height in [0, 1] (default: "
    "pixels; a --region whose numbers are all <= 1 must say which)"
)


def region_format_for(regions: Sequence[Sequence[float]] | None, region_format: str | None) -> str:
    """``--region-format`` as given, else pixels. Without it, a ``--region`` whose numbers are all <= 1 is
    refused (ValueError): as pixels it is a sliver in the top-left corner, most likely meant as fractions."""
    if region_format is not None:
        return region_format
    for box in regions or ():
        if all(v <= 1 for v in box):
            given = ",".join(f"{v:g}" for v in box)
            raise ValueError(
                f"--region {given}: every number is <= 1; pass --region-format normalized if these are "
                "fractions of the width and height (or --region-format pixels if they are pixels)"
            )
    return "pixels"


GENERATION_FLAGS = {
    "max_new_tokens": "--max-new-tokens",
    "min_new_tokens": "--min-new-tokens",
    "num_beams": "--num-beams",
    "no_repeat_ngram_size": "--no-repeat-ngram-size",
    "length_penalty": "--length-penalty",
    "early_stopping": "--early-stopping",
    "region_format": "--region-format",
}
"""Library keyword -> the flag of ``florence2 run`` that sets it."""
TOKENS_FLAGS = {"max_new_tokens": "--tokens", "num_beams": "--beams", "region_format": "--region-format"}
"""The same for ``florence2 compare`` and ``bench``."""

_TASK_INPUTS = (  # the task-input phrases of the library's messages, in flags
    (re.compile(r"region=\(x1, y1, x2, y2\)"), "--region X1,Y1,X2,Y2"),
    (re.compile(r"\(or '<loc_\.\.>' text\)"), "(or --text '<loc_..>')"),
    (re.compile(r"\b(pass|pass neither|pass either|takes|or) text\b"), r"\1 --text"),
    (re.compile(r"\b(nor|or) region\b"), r"\1 --region"),
    (re.compile(r"\bnot a region\b"), "not --region"),
)


def in_flags(message: str, flags: Mapping[str, str] = GENERATION_FLAGS) -> str:
    """A library message as the command line says it: ``pass region=(x1, y1, x2, y2)`` -> ``pass --region
    X1,Y1,X2,Y2``, ``pass text`` -> ``pass --text``, ``max_new_tokens=5000`` -> ``--max-new-tokens 5000``."""
    for pattern, flag_text in _TASK_INPUTS:
        message = pattern.sub(flag_text, message)
    for name, flag in flags.items():
        message = re.sub(rf"\b{name}=", f"{flag} ", message)
        message = re.sub(rf"(?<![\w-]){name}\b", flag, message)
    return message
