"""TaskPlanned and FlowRejected: how tasks and flows come to exist.

A newly planned task is decided at once when it can never run: its flow was
cancelled as a whole, or a task it depends on already ended FAILED/CANCELLED.
Under a flow-wide suspend it starts SUSPENDED. Then the facts parked while it
waited for its plan are replayed.
"""

from __future__ import annotations

from services.monitor.core.changes import command_algos, dead_dependency, settle_task
from services.monitor.core.dedup import duplicate, seen
from services.monitor.core.draft import Draft
from services.monitor.core.effects import Anomaly
from services.monitor.core.facts import apply_fact, task_anomaly
from services.monitor.core.state import AlgoTask, Flow, Outcome, Task, append_record, evolve
from services.monitor.core.transitions import Fact
from shared.events import CommandKind, EntityKind, Status, TaskPlanned


def on_plan(draft: Draft) -> None:
    env = draft.env
    plan: TaskPlanned = env.event
    existing = draft.task(plan.task_id)
    if existing is not None and duplicate(draft, existing.sequences):
        return
    if existing is not None and existing.planned:
        task = evolve(existing, sequences=seen(existing.sequences, env))
        task_anomaly(draft, task, "task planned again; the first plan stands")
        return
    task = _new_task(draft, plan, existing)
    flow = _flow_with(draft, plan)
    draft.put_task(task)
    _decide_early(draft, flow, task)
    draft.unsettle(flow.flow_id)
    for parked in existing.parked if existing is not None else ():
        draft.env = parked
        apply_fact(draft, draft.task(plan.task_id), parked)
    draft.env = env


def _new_task(draft: Draft, plan: TaskPlanned, placeholder: Task | None) -> Task:
    env, at = draft.env, draft.env.timestamp_ms
    algos = []
    for spec in plan.algorithm_tasks:
        reason = f"planned as {spec.party}/{spec.role}"
        draft.changed(EntityKind.ALGORITHM_TASK, spec.algo_task_id, plan.flow_id, plan.task_id, None,
                      Status.PENDING, spec.attempt, reason)
        record = draft.record(Outcome.APPLIED, None, Status.PENDING, spec.attempt, reason)
        algos.append(AlgoTask(spec.algo_task_id, spec.party, spec.role, Status.PENDING, spec.attempt,
                              updated_at_ms=at, history=(record,)))
        draft.algo_to_task[spec.algo_task_id] = plan.task_id
    first = plan.algorithm_tasks[0] if plan.algorithm_tasks else None
    reason = f"planned step {plan.step!r} with {len(algos)} algorithm tasks"
    draft.changed(EntityKind.TASK, plan.task_id, plan.flow_id, plan.task_id, None, Status.PENDING, 0, reason)
    return Task(
        plan.task_id, plan.flow_id, Status.PENDING, plan.step, plan.index,
        first.algorithm if first else "", first.version if first else "", tuple(plan.depends_on),
        tuple(algos), plan.planned_at_ms, at, reason,
        (draft.record(Outcome.APPLIED, None, Status.PENDING, 0, reason),),
        seen(placeholder.sequences if placeholder is not None else {}, env),
    )


def _flow_with(draft: Draft, plan: TaskPlanned) -> Flow:
    flow = draft.flow(plan.flow_id)
    task_ids = tuple(plan.flow_task_ids) or (plan.task_id,)
    if flow is None:
        reason = f"planned with {len(task_ids)} tasks"
        draft.changed(EntityKind.FLOW, plan.flow_id, plan.flow_id, "", None, Status.PENDING, 0, reason)
        record = draft.record(Outcome.APPLIED, None, Status.PENDING, 0, reason)
        flow = Flow(plan.flow_id, Status.PENDING, task_ids, reason=reason,
                    updated_at_ms=draft.env.timestamp_ms, history=(record,))
    elif not flow.task_ids:
        draft.emit(Anomaly(plan.task_id, f"task planned for the rejected flow {plan.flow_id}",
                           draft.env.event_id, plan.flow_id))
        return flow
    else:
        missing = tuple(t for t in (*task_ids, plan.task_id) if t not in flow.task_ids)
        if not missing:
            return flow
        flow = evolve(flow, task_ids=flow.task_ids + tuple(dict.fromkeys(missing)))
    draft.put_flow(flow)
    return flow


def _decide_early(draft: Draft, flow: Flow, task: Task) -> None:
    dependency = dead_dependency(draft, task)
    if flow.hold is CommandKind.CANCEL:
        fact, reason = Fact.CANCEL, "the flow was cancelled before this task was planned"
    elif dependency is not None:
        fact, reason = Fact.CANCEL, f"dependency {dependency.task_id} ended {dependency.status.name}"
    elif flow.hold is CommandKind.SUSPEND:
        fact, reason = Fact.SUSPEND, "the flow was suspended before this task was planned"
    else:
        return
    decided = command_algos(draft, task, fact, reason)
    if decided is not None:
        settle_task(draft, decided)


def on_flow_rejected(draft: Draft) -> None:
    env = draft.env
    flow_id = env.event.flow_id
    flow = draft.flow(flow_id)
    if flow is not None and duplicate(draft, flow.sequences):
        return
    reason = "; ".join(str(e) for e in env.event.errors) or "rejected by the splitter"
    if not flow_id.strip():  # nothing to show it under; the splitter no longer sends these
        draft.emit(Anomaly(flow_id, f"FlowRejected without a flow id: {reason}", env.event_id, flow_id))
        return
    if flow is None:
        draft.changed(EntityKind.FLOW, flow_id, flow_id, "", None, Status.FAILED, 0, reason)
        record = draft.record(Outcome.APPLIED, None, Status.FAILED, 0, reason)
        draft.put_flow(Flow(flow_id, Status.FAILED, reason=reason, updated_at_ms=env.timestamp_ms,
                            history=(record,), sequences=seen({}, env)))
        return
    flow = evolve(flow, sequences=seen(flow.sequences, env))
    if flow.task_ids or flow.status.terminal:
        # A later submission under this id (the splitter answers a conflicting one so).
        why = f"a later submission was rejected ({reason}); the flow as first decided stands"
        record = draft.record(Outcome.ANOMALY, flow.status, None, 0, why)
        flow = evolve(flow, history=append_record(flow.history, record))
        draft.emit(Anomaly(flow_id, why, env.event_id, flow_id))
    draft.put_flow(flow)
