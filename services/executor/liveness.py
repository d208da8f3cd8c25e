"""How an executor proves it is alive and says how it ended, whoever supervises it.

A scheduler may die while its executors run on; the executors must not be
orphaned in the monitor's eyes. So an executor
- sends a heartbeat (ExecutorProgress with stage HEARTBEAT) every few seconds:
  the monitor declares a RUNNING executor lost when they stop, and retries it;
- touches its lease file on each heartbeat, when the local runner gave it one,
  so a restarted scheduler can tell a live executor from a hung one;
- reports its own exit as its last act: an Observation on ferry.observations
  (the same fact a runner reports; the monitor takes whichever comes first and
  ignores the other) and the exit code next to its lease, for a runner that
  cannot wait() on it because an earlier scheduler started it.

An exit by signal (a suspend or cancel, or an eviction) is not reported here:
only whoever sent the signal knows whether it meant "suspended" or "lost", and
the runner's observation says that.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from services.scheduler.core.exits import SIGKILL_EXITS, SIGTERM_EXITS, classify_exit
from shared import topics
from shared.clock import Clock
from shared.events import HEARTBEAT_STAGE, AlgorithmTaskSpec, ExecutorProgress, Observation, Phase
from shared.messaging import EventPublisher

HEARTBEAT = HEARTBEAT_STAGE
EXIT_SUFFIX = ".exit"


def exit_file(lease: Path) -> Path:
    return lease.with_name(lease.name + EXIT_SUFFIX)


def write_exit_code(lease: Path | None, code: int) -> None:
    """Leave the exit code next to the lease (atomically): a runner that did not start us reads it."""
    if lease is None:
        return
    target = exit_file(lease)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(str(code))
        os.replace(tmp, target)
    except OSError:
        pass  # the runner then reports the exit as a kill: retried, nothing lost


def touch(lease: Path | None) -> None:
    if lease is None:
        return
    try:
        os.utime(lease)
    except OSError:
        pass


async def heartbeat(publisher: EventPublisher, spec: AlgorithmTaskSpec, every_s: float, clock: Clock,
                    lease: Path | None = None) -> None:
    """Run until cancelled; a failed send is retried at the next beat (the bus may be down a while)."""
    while True:
        touch(lease)
        try:
            await asyncio.wait_for(publisher.publish(topics.PROGRESS.name, spec.task_id, ExecutorProgress(
                algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id,
                attempt=spec.attempt, stage=HEARTBEAT)), timeout=max(every_s, 1.0))
        except (Exception, TimeoutError):
            pass
        await clock.sleep(every_s)


def is_signal_exit(code: int) -> bool:
    return code in SIGTERM_EXITS or code in SIGKILL_EXITS


async def report_exit(publisher: EventPublisher, spec: AlgorithmTaskSpec, code: int, clock: Clock,
                      message: str = "", timeout_s: float = 10.0) -> bool:
    """Publish this attempt's end as an Observation; True if the bus took it."""
    if is_signal_exit(code):
        return False
    meaning = classify_exit(code, "run")
    observation = Observation(
        algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id, attempt=spec.attempt,
        phase=Phase.SUCCEEDED if code == 0 else Phase.FAILED, exit_code=code, reason=meaning.reason,
        message=message[:2000], retriable=meaning.retriable, source="executor", observed_at_ms=clock.now_ms())
    try:
        await asyncio.wait_for(publisher.publish(topics.OBSERVATIONS.name, spec.task_id, observation), timeout_s)
        return True
    except (Exception, TimeoutError):
        return False  # the runner's observation of the exit is the backstop
