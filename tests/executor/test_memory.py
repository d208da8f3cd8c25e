"""Executors give freed model-sized buffers back to the OS (services/executor/memory.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
sys.path.insert(0, {root!r})
from services.executor.memory import return_freed_memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

big = bytearray(8 << 20); del big   # an executor's first round: glibc now keeps blocks below 8 MiB in its heap
base = rss_mb()
blocks = [bytearray(1 << 20) for _ in range(100)]   # a model's chunks
kept = blocks[1::2]                                 # half of them still referenced, interleaved
del blocks
if {trim}:
    assert return_freed_memory()
print(round(rss_mb() - base))
"""


def _retained_mb(trim: bool) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT), trim=trim)],
                         capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout.strip())


def test_freed_chunks_leave_the_executor_instead_of_staying_resident():
    # 100 MiB allocated, 50 MiB still referenced: the freed half goes back only when trimmed.
    assert _retained_mb(trim=True) < 70
    assert _retained_mb(trim=False) > 90  # glibc alone keeps them: the probe can tell


STEPS = """
import resource, sys
sys.path.insert(0, {root!r})
import contextlib
from services.executor.memory import heap_kept_while_training

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with heap_kept_while_training() if {keep} else contextlib.nullcontext():
    grad = bytearray(34 << 20); del grad        # a 10M-parameter model's weight gradient, freed ...
    before = faults()
    for _ in range(5):                           # ... and made again at every SGD step
        grad = bytearray(34 << 20); del grad
    steps = faults() - before
    inside = rss_mb()
print(steps, round(inside - rss_mb()))
"""


def _step_faults(keep: bool) -> tuple[int, int]:
    """(page faults of 5 steps, MiB handed back when training ends)."""
    out = subprocess.run([sys.executable, "-c", STEPS.format(root=str(ROOT), keep=keep)],
                         capture_output=True, text=True, timeout=60, check=True)
    faults, returned = out.stdout.split()
    return int(faults), int(returned)


def test_a_buffer_freed_and_made_again_every_step_is_not_faulted_in_again_and_leaves_after_training():
    # 5 x 34 MiB = 43,520 pages: glibc alone unmaps and faults every one back in.
    assert _step_faults(keep=False)[0] > 40_000
    faults, returned = _step_faults(keep=True)
    assert faults < 1_000 and returned >= 30  # kept while training, given back after
