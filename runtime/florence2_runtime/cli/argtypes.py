"""argparse ``type=`` converters shared by the commands: each refuses a bad value with a message naming it."""

from __future__ import annotations

import argparse


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
