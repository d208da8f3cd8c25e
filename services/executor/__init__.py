"""The executor: runs one algorithm task inside a Job (see services/executor/main.py)."""

import signal
import sys

SUSPENDED_EXIT_CODE = 143  # shared.errors.Suspended.exit_code; not imported, to keep this module light


def stop_as_suspended_on_sigterm() -> None:
    """Until the executor's event loop takes SIGTERM over, a SIGTERM ends the process as suspended.

    In a container the executor is PID 1, and the kernel drops a signal sent to PID 1 that has no
    handler: a suspend arriving during start-up (imports alone take a second or more) was ignored
    until the kubelet's SIGKILL at the end of the grace period, and that exit (137) failed the Job.
    Before the role has started there is nothing to checkpoint, so stopping is a clean suspend.
    Call it first, before the heavy imports.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(SUSPENDED_EXIT_CODE))
