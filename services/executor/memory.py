"""Freed model-sized buffers go back to the operating system at once.

glibc serves an allocation of 128 KiB or more with its own mmap and unmaps it
when it is freed, but each time such a block is freed it raises that
threshold to the block's size (up to 32 MiB). After an executor's first round
every record, chunk and model buffer below 32 MiB came from the heap instead,
and freed heap pages in the middle stay resident: with 10 parties on one node
each executor kept the high-water mark of its own transient copies. Fixing
the thresholds turns the dynamic policy off. Other C libraries (musl) keep
their own policy; nothing is changed there.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024


def return_freed_memory(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """True when glibc took the fixed thresholds."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * threshold))
