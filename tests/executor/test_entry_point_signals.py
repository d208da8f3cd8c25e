"""A suspend that reaches an executor while it is still starting ends it as suspended.

In a pod the executor is PID 1, which the kernel shields from signals it has no handler for;
a SIGTERM during start-up used to be dropped, and the kubelet's SIGKILL then failed the Job
(exit 137) instead of suspending it (exit 143, which the Job's podFailurePolicy ignores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.errors import Suspended

ROOT = Path(__file__).resolve().parents[2]


def _catches_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("command", [["-m", "services.executor"], ["-m", "services.cli", "executor"]],
                         ids=["python -m services.executor", "ferry executor"])
def test_sigterm_while_the_executor_imports_exits_as_suspended(command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not _catches_sigterm(proc.pid):  # the handler comes first, the imports after it
            assert proc.poll() is None and time.monotonic() < deadline, "the executor never handled SIGTERM"
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == Suspended.exit_code, proc.stderr.read()[-2000:]
    finally:
        proc.kill()
        proc.wait()
