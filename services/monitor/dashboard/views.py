"""The dashboard's JSON: flow summaries, one flow's detail with histories, and new round points.

Pure functions of the monitor's state (plus, for rounds, what a stream has
already sent), so the page shows exactly what the API would answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping

from services.monitor.core.state import AlgoTask, Flow, MonitorState, Record, Task

FLOW_LIST_LIMIT = 200


def _finite(metrics: Mapping[str, float]) -> dict:
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def _name(status) -> str | None:
    return None if status is None else status.name


def _record(r: Record) -> dict:
    return {"outcome": r.outcome.value, "from": _name(r.from_status), "to": _name(r.to_status),
            "attempt": r.attempt, "cause": r.cause_type, "event_id": r.cause_event_id, "at_ms": r.at_ms,
            "reason": r.reason}


def _started_at(state: MonitorState, flow: Flow) -> int:
    times = [flow.history[0].at_ms] if flow.history else []
    times += [t.planned_at_ms for t in (state.tasks.get(i) for i in flow.task_ids) if t is not None and t.planned_at_ms]
    return min(times, default=flow.updated_at_ms)


def flow_summary(state: MonitorState, flow: Flow) -> dict:
    tasks = [state.tasks.get(i) for i in flow.task_ids]
    statuses = [_name(t.status) if t is not None else None for t in tasks]
    training = [a for t in tasks if t is not None for a in t.algos if a.total_rounds]
    return {"flow_id": flow.flow_id, "status": flow.status.name, "reason": flow.reason,
            "started_at_ms": _started_at(state, flow), "updated_at_ms": flow.updated_at_ms,
            "steps": len(flow.task_ids), "steps_succeeded": statuses.count("SUCCEEDED"),
            "round": max((a.round for a in training), default=0),
            "total_rounds": max((a.total_rounds for a in training), default=0)}


def flow_summaries(state: MonitorState, flow_ids: Iterable[str] | None = None) -> list[dict]:
    """Newest first; every flow (up to FLOW_LIST_LIMIT) when flow_ids is None."""
    if flow_ids is None:
        flows = sorted(state.flows.values(), key=lambda f: (-f.updated_at_ms, f.flow_id))[:FLOW_LIST_LIMIT]
    else:
        flows = [f for f in (state.flows.get(i) for i in flow_ids) if f is not None]
    return [flow_summary(state, f) for f in flows]


def _algo(a: AlgoTask) -> dict:
    return {"algo_task_id": a.algo_task_id, "party": a.party, "role": a.role, "status": a.status.name,
            "attempt": a.attempt, "round": a.round, "total_rounds": a.total_rounds, "stage": a.stage,
            "metrics": _finite(a.metrics), "reason": a.reason, "updated_at_ms": a.updated_at_ms,
            "history": [_record(r) for r in a.history]}


def _task(task: Task) -> dict:
    return {"task_id": task.task_id, "step": task.step, "index": task.index, "algorithm": task.algorithm,
            "version": task.version, "status": _name(task.status), "reason": task.reason,
            "depends_on": list(task.depends_on), "planned_at_ms": task.planned_at_ms,
            "updated_at_ms": task.updated_at_ms, "algos": [_algo(a) for a in task.algos],
            "history": [_record(r) for r in task.history]}


def flow_detail(state: MonitorState, flow_id: str) -> dict | None:
    flow = state.flows.get(flow_id)
    if flow is None:
        return None
    tasks = [t for t in (state.tasks.get(i) for i in flow.task_ids) if t is not None]
    return {**flow_summary(state, flow), "hold": _name(flow.hold),
            "history": [_record(r) for r in flow.history], "tasks": [_task(t) for t in tasks]}


def new_rounds(state: MonitorState, task_ids: Iterable[str], sent: MutableMapping[str, dict]) -> list[dict]:
    """Round points of these tasks a stream has not sent yet, and `sent` (algo task id -> round ->
    point) brought up to date. A round re-reported (evaluation added, or retrained by a retry)
    is a new point, so it is sent again and the page replaces it by round number."""
    out = []
    for task_id in task_ids:
        task = state.tasks.get(task_id)
        if task is None:
            continue
        series = []
        for a in task.algos:
            known = sent.setdefault(a.algo_task_id, {})
            points = [p for p in a.rounds if known.get(p.round) != p]
            if points:
                known.update((p.round, p) for p in points)
                series.append({"algo_task_id": a.algo_task_id, "party": a.party, "role": a.role,
                               "points": [{"round": p.round, "attempt": p.attempt, "at_ms": p.at_ms,
                                           "metrics": _finite(p.metrics)} for p in points]})
        if series:
            out.append({"task_id": task.task_id, "step": task.step, "total_rounds": max(
                (a.total_rounds for a in task.algos), default=0), "series": series})
    return out
