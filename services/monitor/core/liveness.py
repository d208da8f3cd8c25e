"""Which RUNNING executors have gone silent: the monitor's side of the executors' heartbeat.

An executor heartbeats every few seconds (services/executor/liveness.py), and
every fact about it refreshes its algorithm task's updated_at_ms (the
envelope's time). One not heard from for `lost_after_ms` is declared lost by
an Observation the monitor publishes on ferry.observations, like any watcher:
a retriable failure, which the transition table turns into RETRYING (or
FAILED once no attempts are left), on the log for every consumer to see.

A declaration carries the last-heard time it judged on (observed_at_ms); one
that arrives after the executor was heard from again is ignored (decide.py),
so a late heartbeat and a declaration crossing on the topics never fail a
live executor.
"""

from __future__ import annotations

from typing import Iterator

from services.monitor.core.state import MonitorState
from shared.events import Observation, Phase, Status

LOST_SOURCE = "monitor/liveness"


def lost_executors(state: MonitorState, now_ms: int, lost_after_ms: int,
                   startup_grace_ms: int = 0) -> Iterator[Observation]:
    """An executor that has not yet spoken itself (no heartbeat or report of its attempt) gets
    `startup_grace_ms` more: it may still be importing its libraries on a loaded node."""
    for task in state.tasks.values():
        for algo in task.algos:
            limit = lost_after_ms if algo.spoke_attempt == algo.attempt else lost_after_ms + startup_grace_ms
            if algo.status is Status.RUNNING and algo.updated_at_ms < now_ms - limit:
                silent_s = (now_ms - algo.updated_at_ms) / 1000
                yield Observation(
                    algo_task_id=algo.algo_task_id, task_id=task.task_id, flow_id=task.flow_id,
                    attempt=algo.attempt, phase=Phase.FAILED, object_name=algo.job_name,
                    reason=f"executor lost: not heard from for {silent_s:.0f} s "
                           f"(limit {limit / 1000:g} s)",
                    retriable=True, source=LOST_SOURCE, observed_at_ms=algo.updated_at_ms)


def heard_since(algo_updated_at_ms: int, event) -> bool:
    """Whether `event` is a loss declaration the executor has disproved by speaking since."""
    return (type(event) is Observation and event.source == LOST_SOURCE
            and algo_updated_at_ms > event.observed_at_ms)
