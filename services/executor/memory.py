"""Freed model-sized buffers go back to the operating system between rounds.

glibc serves an allocation of 128 KiB or more with its own mmap and unmaps it
when it is freed, but each time such a block is freed it raises that
threshold to the block's size (up to 32 MiB). After an executor's first round
every record, chunk and model buffer below 32 MiB comes from the heap, and
freed heap pages between live ones stay resident: with 10 parties on one node
each executor kept the high-water mark of its own transient copies. Fixing
the thresholds instead (mallopt) made every torch activation buffer an
mmap/munmap pair with fresh page faults, and local training twice as slow; so
the executor keeps glibc's policy and hands free heap pages back
(malloc_trim) once a round's buffers are dropped. Other C libraries (musl)
have no malloc_trim; nothing happens there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> bool:
    """Return the heap's free pages to the OS now (a few ms); True when glibc could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
