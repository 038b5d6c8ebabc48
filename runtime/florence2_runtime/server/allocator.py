"""Memory a request frees goes back to the operating system (glibc only).

glibc serves allocations of at least its *mmap threshold* with their own ``mmap`` and unmaps them on free;
smaller ones come from its heaps, whose free space at the top is returned once it exceeds the *trim
threshold*. Both start low (128 KiB) and rise as mmapped blocks are freed: the mmap threshold to the size of
the block (up to 32 MiB), the trim threshold to twice that. Loading a model frees such blocks, and so does
decoding a photo (a 3000x3000 RGB image is 27 MB, in Pillow blocks of up to 16 MB), so a server soon keeps
its decoded images in its heaps, and how much of a burst stays in the process depends on how the requests
interleaved: 10 to 80 MB after 16 concurrent 27 MB images, measured. Fixing both thresholds turns that
adjustment off: blocks of :data:`MMAP_THRESHOLD` and more are unmapped on free, and the heaps shrink as
they did at start-up. The cost is mapping such blocks anew: page faults of a few milliseconds for a large
photo, against the model's hundreds.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 4 * 2**20  # bytes: blocks at least this large are mapped on their own
TRIM_THRESHOLD = 128 * 2**10  # bytes: glibc's start-up value, before the adjustment raises it
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers, from glibc's malloc.h
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's own knobs, read at start-up


def return_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (:data:`MMAP_THRESHOLD`,
    :data:`TRIM_THRESHOLD`); True if they were set.

    Leaves them alone where the C library is not glibc, or where the environment sets either threshold
    (the operator's choice wins).
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: no such thresholds
            return False
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False
