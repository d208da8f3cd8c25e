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


def lost_executors(state: MonitorState, now_ms: int, lost_after_ms: int) -> Iterator[Observation]:
    horizon = now_ms - lost_after_ms
    for task in state.tasks.values():
        for algo in task.algos:
            if algo.status is Status.RUNNING and algo.updated_at_ms < horizon:
                silent_s = (now_ms - algo.updated_at_ms) / 1000
                yield Observation(
                    algo_task_id=algo.algo_task_id, task_id=task.task_id, flow_id=task.flow_id,
                    attempt=algo.attempt, phase=Phase.FAILED, object_name=algo.job_name,
                    reason=f"executor lost: not heard from for {silent_s:.0f} s "
                           f"(limit {lost_after_ms / 1000:g} s)",
                    retriable=True, source=LOST_SOURCE, observed_at_ms=algo.updated_at_ms)


def heard_since(algo_updated_at_ms: int, event) -> bool:
    """Whether `event` is a loss declaration the executor has disproved by speaking since."""
    return (type(event) is Observation and event.source == LOST_SOURCE
            and algo_updated_at_ms > event.observed_at_ms)
