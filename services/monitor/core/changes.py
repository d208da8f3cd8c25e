"""Applying decisions to entries, and the consequences that spread from them.

A member that ends FAILED or CANCELLED dooms its task's other members (they
wait for their peer forever), so they are cancelled and the scheduler is told
(CancelSiblings). A task that ends FAILED or CANCELLED dooms the tasks that
depend on it, and those were never started (the scheduler releases a task
only after its dependencies SUCCEEDED), so they are CANCELLED outright.
"""

from __future__ import annotations

from services.monitor.core import derive
from services.monitor.core.decide import Verdict, decide
from services.monitor.core.draft import Draft
from services.monitor.core.effects import CancelSiblings
from services.monitor.core.state import AlgoTask, Flow, Outcome, Task, append_record, evolve
from services.monitor.core.transitions import Fact
from shared.events import CommandKind, EntityKind, Status

_DEAD = (Status.FAILED, Status.CANCELLED)
_UNPLANNED_UNDER_HOLD = {None: Status.PENDING, CommandKind.SUSPEND: Status.SUSPENDED,
                         CommandKind.CANCEL: Status.CANCELLING}


def move_algo(draft: Draft, task: Task, algo: AlgoTask, to_status: Status, attempt: int,
              reason: str, changes: dict | None = None) -> AlgoTask:
    """`algo` moved to `to_status`; `changes` (evolve() keywords, not its status, attempt, reason
    or history) applied in the same copy."""
    draft.changed(EntityKind.ALGORITHM_TASK, algo.algo_task_id, task.flow_id, task.task_id,
                  algo.status, to_status, attempt, reason)
    record = draft.record(Outcome.APPLIED, algo.status, to_status, attempt, reason)
    moved = {"status": to_status, "attempt": attempt, "reason": reason, "updated_at_ms": draft.env.timestamp_ms,
             "history": append_record(algo.history, record)}
    return evolve(algo, **({**changes, **moved} if changes else moved))


def note_algo(draft: Draft, algo: AlgoTask, outcome: Outcome, reason: str) -> AlgoTask:
    """Record a fact that was not applied (ignored or anomalous) in the member's history."""
    record = draft.record(outcome, algo.status, None, algo.attempt, reason)
    return evolve(algo, history=append_record(algo.history, record))


def with_algo(task: Task, index: int, algo: AlgoTask, **changes) -> Task:
    algos = task.algos[:index] + (algo,) + task.algos[index + 1:]
    return evolve(task, algos=algos, **changes)


def command_algos(draft: Draft, task: Task, fact: Fact, reason: str) -> Task | None:
    """Apply a command to every member it makes sense for; None if it fits none."""
    algos, moved = list(task.algos), False
    for i, algo in enumerate(algos):
        decision = decide(algo, fact, None, 0)
        if decision.verdict is Verdict.APPLY:
            algos[i] = move_algo(draft, task, algo, decision.to_status, decision.attempt, reason)
            moved = True
    return evolve(task, algos=tuple(algos)) if moved else None


def settle_task(draft: Draft, task: Task) -> None:
    """Put `task` after its members changed: cancel orphans, re-derive, spread to dependants."""
    task = _cancel_orphans(draft, task)
    status = derive.task_status([a.status for a in task.algos])
    if status is task.status:
        draft.put_task(task)
        return
    reason = _task_reason(task, status)
    draft.changed(EntityKind.TASK, task.task_id, task.flow_id, task.task_id, task.status, status, 0, reason)
    record = draft.record(Outcome.APPLIED, task.status, status, 0, reason)
    task = evolve(task, status=status, reason=reason, updated_at_ms=draft.env.timestamp_ms,
                  history=append_record(task.history, record))
    draft.put_task(task)
    draft.unsettle(task.flow_id)
    if status in _DEAD:
        _cancel_dependants(draft, task)


def _task_reason(task: Task, status: Status) -> str:
    for algo in task.algos:
        if algo.status is status:
            return f"{algo.algo_task_id}: {algo.reason}" if algo.reason else algo.algo_task_id
    return ""


def _cancel_orphans(draft: Draft, task: Task) -> Task:
    dead = next((a for a in task.algos if a.status is Status.FAILED), None) or next(
        (a for a in task.algos if a.status is Status.CANCELLED), None)
    if dead is None:
        return task
    reason = f"algorithm task {dead.algo_task_id} ended {dead.status.name}"
    algos, moved = list(task.algos), []
    for i, algo in enumerate(algos):
        decision = decide(algo, Fact.CANCEL, None, 0)
        if decision.verdict is Verdict.APPLY:
            algos[i] = move_algo(draft, task, algo, decision.to_status, decision.attempt, reason)
            moved.append(algo.algo_task_id)
    if not moved:
        return task
    draft.emit(CancelSiblings(task.flow_id, task.task_id, tuple(moved), reason, draft.env.event_id))
    return evolve(task, algos=tuple(algos))


def _cancel_dependants(draft: Draft, task: Task) -> None:
    flow = draft.flow(task.flow_id)
    if flow is None:
        return
    reason = f"dependency {task.task_id} ended {task.status.name}"
    for task_id in flow.task_ids:
        dependant = draft.task(task_id)
        if (dependant is None or not dependant.planned or task.task_id not in dependant.depends_on
                or dependant.status.terminal or dependant.dispatched):
            continue
        cancelled = command_algos(draft, dependant, Fact.CANCEL, reason)
        if cancelled is not None:
            settle_task(draft, cancelled)


def dead_dependency(draft: Draft, task: Task) -> Task | None:
    for task_id in task.depends_on:
        dependency = draft.task(task_id)
        if dependency is not None and dependency.status in _DEAD:
            return dependency
    return None


def settle_flows(draft: Draft) -> None:
    for flow_id in draft.unsettled_flows:
        flow = draft.flow(flow_id)
        if flow is not None and flow.task_ids:
            _settle_flow(draft, flow)


def _settle_flow(draft: Draft, flow: Flow) -> None:
    unplanned = _UNPLANNED_UNDER_HOLD[flow.hold]
    statuses = []
    for task_id in flow.task_ids:
        task = draft.task(task_id)
        statuses.append(unplanned if task is None or task.status is None else task.status)
    status = derive.flow_status(statuses)
    if status is flow.status:
        return
    reason = _flow_reason(draft, flow, status)
    draft.changed(EntityKind.FLOW, flow.flow_id, flow.flow_id, "", flow.status, status, 0, reason)
    record = draft.record(Outcome.APPLIED, flow.status, status, 0, reason)
    draft.put_flow(evolve(flow, status=status, reason=reason, updated_at_ms=draft.env.timestamp_ms,
                          history=append_record(flow.history, record)))


def _flow_reason(draft: Draft, flow: Flow, status: Status) -> str:
    for task_id in flow.task_ids:
        task = draft.task(task_id)
        if task is not None and task.status is status:
            return f"{task_id}: {task.reason}" if task.reason else task_id
    return ""
