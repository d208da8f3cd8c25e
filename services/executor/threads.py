"""How many CPU threads an executor's numerical libraries use: one setting for every path.

Executors of one node share its cores (on a 2-core machine, torch's default of
one thread per core made a round of a small model 8x slower than one thread:
3.6 s against 0.43 s). So every way of running executors applies the same
number, FERRY_EXECUTOR__TORCH_THREADS (default 1): the executor process
(local runner, Kubernetes Job), the embedded platform (`ferry flow run`,
`ferry demo`, tests) and the local runner's pre-imported interpreter. Raise
it for one large job on a node of its own.
"""

from __future__ import annotations

import os
import sys

HOW_TO_CHANGE = "set FERRY_EXECUTOR__TORCH_THREADS (or --torch-threads on `ferry flow run`) to change"
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a process that has not imported torch or numpy yet."""
    return {name: str(threads) for name in _ENV} | {"FERRY_EXECUTOR__TORCH_THREADS": str(threads)}


def apply_torch_threads(threads: int) -> None:
    """This process and the ones it starts use `threads` intra-op threads.

    The environment covers torch imported later (it reads OMP_NUM_THREADS when it
    loads) and child processes; an already imported torch is told directly.
    Importing torch here would defeat executors that do not need it.
    """
    if threads < 1:
        raise ValueError(f"torch_threads must be at least 1, not {threads}")
    os.environ.update(thread_env(threads))
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
