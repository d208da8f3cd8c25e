"""Freed model-sized buffers go back to the operating system between rounds, not between steps.

glibc serves an allocation of 128 KiB or more with its own mmap and unmaps it
when it is freed, but each time such a block is freed it raises that
threshold to the block's size (up to 32 MiB), and it gives the top of its heap
back whenever more than twice that is free there. After an executor's first
round every record, chunk and model buffer below 32 MiB comes from the heap,
and freed heap pages between live ones stay resident: with 10 parties on one
node each executor kept the high-water mark of its own transient copies. So
the executor hands free heap pages back (malloc_trim) once a round's buffers
are dropped (return_freed_memory).

Within a round, though, glibc's own give-backs cost: local training frees
and reallocates the same buffers every SGD step (a 26 MiB weight gradient and
8 MiB activations for the 7.3M-parameter MLP, a 34 MiB gradient at 10M, above
the 32 MiB ceiling, so unmapped every step), and every give-back is paid
again as page faults on the next step: 551,000 minor faults in 60 steps of
that MLP, 146 ms a step. The executor fixes the thresholds high
instead while a client trains (heap_kept_while_training: blocks below 64 MiB
from the heap, its top kept up to 1 GiB): 144,000 faults (the start-up's),
94-100 ms a step on the same loaded machine. Kept for the whole process, the
same settings let buffers freed between trims linger (peak PSS of the
10-party 10M run 3.22 GB against 2.66), so they hold only around training.
Fixing them low (every activation an mmap/munmap pair) was the wrong way:
1,034,000 faults and 202 ms a step. malloc_trim between rounds still returns
the heap whatever the thresholds. Other C libraries (musl) have neither call;
nothing happens there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import contextmanager
from functools import cache


HEAP_BLOCK_BYTES = 64 << 20    # allocations below this come from the heap (M_MMAP_THRESHOLD)
HEAP_TOP_KEPT_BYTES = 1 << 30  # free heap top kept until malloc_trim (M_TRIM_THRESHOLD)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


@cache
def _libc(name: str):
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


@contextmanager
def heap_kept_while_training():
    """Within: freed blocks below 64 MiB stay in the heap, so the next SGD step remakes them
    without page faults. After: the freed pages go back, and glibc's thresholds are fixed where
    its own policy leaves them after a first round (mmap from 32 MiB, give back a free heap top
    over 64 MiB), so buffers freed between rounds do not linger."""
    mallopt = _libc("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)
        mallopt(_M_TRIM_THRESHOLD, HEAP_TOP_KEPT_BYTES)
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            mallopt(_M_TRIM_THRESHOLD, 64 << 20)
        return_freed_memory()


def return_freed_memory() -> bool:
    """Return the heap's free pages to the OS now (a few ms); True when glibc could."""
    trim = _libc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
