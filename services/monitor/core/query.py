"""Read-only views of the monitor's state, for the HTTP API.

Views are frozen and carry no dedup or replay internals, so the API can turn
them into JSON without knowing how the fold keeps its books.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.monitor.core.commands import check_command
from services.monitor.core.rounds import RoundPoint
from services.monitor.core.state import AlgoTask, Flow, MonitorState, Record, Task
from shared.events import CommandKind, EntityKind, Status

__all__ = ["AlgoTaskView", "TaskView", "FlowView", "get_flow", "get_task", "get_algo_task", "list_flows",
           "list_tasks", "history", "check_command", "RoundSeries", "TaskRounds", "task_rounds"]


@dataclass(frozen=True)
class AlgoTaskView:
    algo_task_id: str
    task_id: str
    flow_id: str
    party: str
    role: str
    status: Status
    attempt: int
    job_name: str
    reason: str
    round: int
    total_rounds: int
    stage: str
    metrics: Mapping[str, float]
    updated_at_ms: int


@dataclass(frozen=True)
class TaskView:
    task_id: str
    flow_id: str
    status: Status | None  # None: facts arrived, plan not yet
    step: str
    index: int
    algorithm: str
    version: str
    depends_on: tuple[str, ...]
    reason: str
    planned_at_ms: int
    updated_at_ms: int
    algorithm_tasks: tuple[AlgoTaskView, ...]


@dataclass(frozen=True)
class FlowView:
    flow_id: str
    status: Status
    reason: str
    hold: CommandKind | None
    task_ids: tuple[str, ...]
    task_statuses: Mapping[str, Status | None]  # None: not planned yet
    updated_at_ms: int


def _algo_view(task: Task, a: AlgoTask) -> AlgoTaskView:
    return AlgoTaskView(a.algo_task_id, task.task_id, task.flow_id, a.party, a.role, a.status, a.attempt,
                        a.job_name, a.reason, a.round, a.total_rounds, a.stage, dict(a.metrics),
                        a.updated_at_ms)


def _task_view(task: Task) -> TaskView:
    return TaskView(task.task_id, task.flow_id, task.status, task.step, task.index, task.algorithm,
                    task.version, task.depends_on, task.reason, task.planned_at_ms, task.updated_at_ms,
                    tuple(_algo_view(task, a) for a in task.algos))


def _flow_view(state: MonitorState, flow: Flow) -> FlowView:
    statuses = {}
    for task_id in flow.task_ids:
        task = state.tasks.get(task_id)
        statuses[task_id] = task.status if task is not None else None
    return FlowView(flow.flow_id, flow.status, flow.reason, flow.hold, flow.task_ids, statuses,
                    flow.updated_at_ms)


def get_flow(state: MonitorState, flow_id: str) -> FlowView | None:
    flow = state.flows.get(flow_id)
    return None if flow is None else _flow_view(state, flow)


def get_task(state: MonitorState, task_id: str) -> TaskView | None:
    task = state.tasks.get(task_id)
    return None if task is None else _task_view(task)


def get_algo_task(state: MonitorState, algo_task_id: str) -> AlgoTaskView | None:
    task = state.tasks.get(state.algo_to_task.get(algo_task_id, ""))
    if task is None:
        return None
    algo = next(a for a in task.algos if a.algo_task_id == algo_task_id)
    return _algo_view(task, algo)


def list_flows(state: MonitorState, status: Status | None = None, limit: int = 100,
               offset: int = 0) -> list[FlowView]:
    """Newest first (by last change, then id), optionally only those in `status`."""
    flows = [f for f in state.flows.values() if status is None or f.status is status]
    flows.sort(key=lambda f: (-f.updated_at_ms, f.flow_id))
    return [_flow_view(state, f) for f in flows[offset:offset + limit]]


def list_tasks(state: MonitorState, flow_id: str) -> list[TaskView]:
    flow = state.flows.get(flow_id)
    tasks = (state.tasks.get(t) for t in flow.task_ids) if flow is not None else ()
    return [_task_view(t) for t in tasks if t is not None]


def history(state: MonitorState, entity: EntityKind, entity_id: str) -> tuple[Record, ...] | None:
    """Every recorded transition, ignored fact, anomaly and rejection of one entity, oldest first."""
    if entity is EntityKind.FLOW:
        flow = state.flows.get(entity_id)
        return None if flow is None else flow.history
    if entity is EntityKind.TASK:
        task = state.tasks.get(entity_id)
        return None if task is None else task.history
    task = state.tasks.get(state.algo_to_task.get(entity_id, ""))
    if task is None:
        return None
    return next(a.history for a in task.algos if a.algo_task_id == entity_id)


@dataclass(frozen=True)
class RoundSeries:
    """One algorithm task's per-round points: a party's curve (the aggregator's is the global model's)."""

    algo_task_id: str
    party: str
    role: str
    status: Status
    attempt: int
    total_rounds: int
    rounds: tuple[RoundPoint, ...]


@dataclass(frozen=True)
class TaskRounds:
    task_id: str
    flow_id: str
    step: str
    algorithm: str
    total_rounds: int
    series: tuple[RoundSeries, ...]


def task_rounds(state: MonitorState, task_id: str, since_round: int = 0,
                party: str | None = None) -> TaskRounds | None:
    """Per-round history of a task's members, rounds after `since_round` only (for incremental reads)."""
    task = state.tasks.get(task_id)
    if task is None:
        return None
    series = tuple(
        RoundSeries(a.algo_task_id, a.party, a.role, a.status, a.attempt, a.total_rounds,
                    tuple(p for p in a.rounds if p.round > since_round))
        for a in task.algos if party is None or a.party == party)
    total = max((a.total_rounds for a in task.algos), default=0)
    return TaskRounds(task.task_id, task.flow_id, task.step, task.algorithm, total, series)
