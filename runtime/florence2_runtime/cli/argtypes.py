"""What the commands share: argparse ``type=`` converters (each refuses a bad value with a message naming it)
and the MODEL argument's options (``--precision``, ``--revision``)."""

from __future__ import annotations

import argparse

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
        help=f"graph variant{of}: fp32, fp16, int8, q4, ... (default: fp32 on the CPU, fp16 on a GPU where "
        "the repository has it)",
    )
    p.add_argument(f"--revision{tail}", help=f"hub branch, tag or commit{of} (hub ids and aliases only)")


def model_options(args: argparse.Namespace, which: str = "") -> dict:
    """The ``Florence2.from_pretrained`` keywords from :func:`add_model_arguments`' options."""
    tail = f"_{which}" if which else ""
    return {"precision": getattr(args, f"precision{tail}"), "revision": getattr(args, f"revision{tail}")}
