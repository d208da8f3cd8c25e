"""step(state, event) -> (state, runner commands), with no I/O.

The scheduler learns the plan from TaskPlanned, the truth about progress from
the monitor's StateChanged events, and intent from TaskCommands. It releases a
task's algorithm tasks once every task it depends on has SUCCEEDED, dispatches
a new attempt when the monitor moves an algorithm task to RETRYING (cancelling
the attempt it supersedes first: a lost attempt may still be alive), and turns
suspend/resume/cancel commands into runner commands for the algorithm tasks
that have a job. Each (algorithm task, attempt) is dispatched at most once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Union

from shared.events import (AlgorithmTaskSpec, CommandKind, EntityKind, Event, StateChanged, Status,
                           TaskCommand, TaskPlanned)


@dataclass(frozen=True)
class Dispatch:
    spec: AlgorithmTaskSpec


@dataclass(frozen=True)
class Suspend:
    spec: AlgorithmTaskSpec


@dataclass(frozen=True)
class Resume:
    spec: AlgorithmTaskSpec


@dataclass(frozen=True)
class Cancel:
    spec: AlgorithmTaskSpec
    reason: str = ""


RunnerCommand = Union[Dispatch, Suspend, Resume, Cancel]


@dataclass(frozen=True)
class SchedulerState:
    planned: dict[str, TaskPlanned] = field(default_factory=dict)
    task_status: dict[str, Status] = field(default_factory=dict)
    # algo_task_id -> the attempt most recently dispatched (0: never)
    dispatched: dict[str, int] = field(default_factory=dict)
    # algo_task_id -> latest status the monitor reported
    algo_status: dict[str, Status] = field(default_factory=dict)
    held: frozenset[str] = frozenset()        # task ids suspended before release
    cancelled: frozenset[str] = frozenset()   # task ids cancelled by a user


def _with(state: SchedulerState, **changes) -> SchedulerState:
    return dataclasses.replace(state, **changes)


def _ready(state: SchedulerState, task: TaskPlanned) -> bool:
    return (task.task_id not in state.held and task.task_id not in state.cancelled
            and all(state.task_status.get(dep) == Status.SUCCEEDED for dep in task.depends_on))


def _release(state: SchedulerState, task_ids) -> tuple[SchedulerState, list[RunnerCommand]]:
    commands: list[RunnerCommand] = []
    dispatched = dict(state.dispatched)
    for task_id in task_ids:
        task = state.planned.get(task_id)
        if task is None or not _ready(state, task):
            continue
        for spec in task.algorithm_tasks:
            if dispatched.get(spec.algo_task_id, 0) == 0:
                dispatched[spec.algo_task_id] = spec.attempt
                commands.append(Dispatch(spec))
    return _with(state, dispatched=dispatched), commands


def _dependants(state: SchedulerState, task_id: str) -> list[str]:
    return [t.task_id for t in state.planned.values() if task_id in t.depends_on]


def _on_state_changed(state: SchedulerState, change: StateChanged) -> tuple[SchedulerState, list[RunnerCommand]]:
    if change.entity == EntityKind.TASK:
        state = _with(state, task_status={**state.task_status, change.entity_id: change.to_status})
        if change.to_status == Status.SUCCEEDED:
            return _release(state, _dependants(state, change.entity_id))
        return state, []
    if change.entity != EntityKind.ALGORITHM_TASK:
        return state, []
    state = _with(state, algo_status={**state.algo_status, change.entity_id: change.to_status})
    task = state.planned.get(change.task_id)
    if change.to_status != Status.RETRYING or task is None:
        return state, []
    previous = state.dispatched.get(change.entity_id, 0)
    if previous >= change.attempt:
        return state, []
    spec = next(s for s in task.algorithm_tasks if s.algo_task_id == change.entity_id)
    retry = dataclasses.replace(spec, attempt=change.attempt)
    state = _with(state, dispatched={**state.dispatched, spec.algo_task_id: change.attempt})
    return state, [*_fence(spec, previous, change.attempt), Dispatch(retry)]


def _fence(spec: AlgorithmTaskSpec, previous: int, retry: int) -> list[RunnerCommand]:
    """Cancel the attempt a retry supersedes, before the retry is dispatched.

    The monitor retries an attempt it declared lost (silent past its limit), and a
    silent executor may be alive: a loaded node, a long import. Left running, it
    would train beside its retry under the same party identity, and a later
    suspend or cancel (which names the current attempt) would never reach it.
    Cancelling an attempt that already ended is a no-op for the runners, and the
    monitor ignores every report of a superseded attempt.
    """
    if previous == 0:
        return []
    return [Cancel(dataclasses.replace(spec, attempt=previous), f"superseded by attempt {retry}")]


def _live_specs(state: SchedulerState, task: TaskPlanned) -> list[AlgorithmTaskSpec]:
    """Algorithm tasks with a job that has not finished, at their current attempt.

    A finished task may still have live members: it is FAILED as soon as one member
    failed, while the others run until they are cancelled (the monitor's CancelSiblings).
    Of a finished task, only members the monitor reported unfinished count as live.
    """
    task_done = (state.task_status.get(task.task_id) or Status.PENDING).terminal
    out = []
    for spec in task.algorithm_tasks:
        attempt = state.dispatched.get(spec.algo_task_id, 0)
        status = state.algo_status.get(spec.algo_task_id)
        live = not task_done if status is None else not status.terminal
        if attempt and live:
            out.append(dataclasses.replace(spec, attempt=attempt))
    return out


def _on_command(state: SchedulerState, command: TaskCommand) -> tuple[SchedulerState, list[RunnerCommand]]:
    task_ids = [command.task_id] if command.task_id else [
        t.task_id for t in state.planned.values() if t.flow_id == command.flow_id]
    tasks = [state.planned[t] for t in task_ids if t in state.planned]
    unfinished = [t for t in tasks if not (state.task_status.get(t.task_id) or Status.PENDING).terminal]
    if command.kind == CommandKind.SUSPEND:
        state = _with(state, held=state.held | {t.task_id for t in unfinished})
        return state, [Suspend(s) for t in unfinished for s in _live_specs(state, t)]
    if command.kind == CommandKind.RESUME:
        state = _with(state, held=state.held - {t.task_id for t in unfinished})
        resumes: list[RunnerCommand] = [Resume(s) for t in unfinished for s in _live_specs(state, t)]
        state, released = _release(state, [t.task_id for t in unfinished])
        return state, resumes + released
    if command.kind == CommandKind.CANCEL:
        # Finished tasks too: a FAILED task's other members still run until cancelled.
        state = _with(state, cancelled=state.cancelled | {t.task_id for t in unfinished})
        return state, [Cancel(s, command.reason) for t in tasks for s in _live_specs(state, t)]
    return state, []


def step(state: SchedulerState, event: Event) -> tuple[SchedulerState, list[RunnerCommand]]:
    if isinstance(event, TaskPlanned):
        if event.task_id in state.planned:
            return state, []  # redelivered plan
        state = _with(state, planned={**state.planned, event.task_id: event})
        return _release(state, [event.task_id])
    if isinstance(event, StateChanged):
        return _on_state_changed(state, event)
    if isinstance(event, TaskCommand):
        return _on_command(state, event)
    return state, []
