"""Progress lines of an export, on stderr (stdout stays free for the CLI's own output)."""

from __future__ import annotations

import sys


def log(msg: str, quiet: bool) -> None:
    """Print ``msg`` on stderr unless ``quiet``."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
