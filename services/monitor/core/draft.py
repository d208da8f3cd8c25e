"""Draft: the entries one step() replaces and the effects it emits, before commit.

A step may touch several tasks (a cancel cascades to dependants) and a flow;
staging them here lets the step read its own writes and then build exactly one
new MonitorState, sharing every untouched entry with the old one.
"""

from __future__ import annotations

from services.monitor.core.effects import Effect
from services.monitor.core.state import Flow, MonitorState, Outcome, Record, Task, evolve
from shared.events import EntityKind, Envelope, StateChanged, Status
from shared.plain import has_plain_fields, new, set_attr, slots_constructor

_record = slots_constructor(Record)  # Record(...) without a frozen setattr per field: one per transition
_PLAIN_STATE_CHANGED = has_plain_fields(StateChanged, (
    "entity", "entity_id", "flow_id", "task_id", "from_status", "to_status", "attempt", "cause_event_id",
    "cause_type", "reason", "at_ms"))


class Draft:
    __slots__ = ("base", "env", "tasks", "flows", "algo_to_task", "effects", "unsettled_flows")

    def __init__(self, base: MonitorState, env: Envelope | None):
        self.base = base
        self.env = env  # the cause of every record and effect; swapped while replaying parked facts
        self.tasks: dict[str, Task] = {}
        self.flows: dict[str, Flow] = {}
        self.algo_to_task: dict[str, str] = {}
        self.effects: list[Effect] = []
        self.unsettled_flows: list[str] = []  # flows whose tasks changed status

    def begin(self, env: Envelope) -> None:
        """Stage the next envelope of a batch (fold.Batch) on top of the writes of those before:
        its own effects and unsettled flows start empty."""
        self.env = env
        self.effects = []
        if self.unsettled_flows:
            self.unsettled_flows = []

    def task(self, task_id: str) -> Task | None:
        task = self.tasks.get(task_id)
        return task if task is not None else self.base.tasks.get(task_id)

    def put_task(self, task: Task) -> None:
        self.tasks[task.task_id] = task

    def flow(self, flow_id: str) -> Flow | None:
        flow = self.flows.get(flow_id)
        return flow if flow is not None else self.base.flows.get(flow_id)

    def put_flow(self, flow: Flow) -> None:
        self.flows[flow.flow_id] = flow

    def unsettle(self, flow_id: str) -> None:
        if flow_id not in self.unsettled_flows:
            self.unsettled_flows.append(flow_id)

    def emit(self, effect: Effect) -> None:
        self.effects.append(effect)

    def record(self, outcome: Outcome, from_status: Status | None, to_status: Status | None,
               attempt: int, reason: str) -> Record:
        env = self.env
        return _record(outcome, from_status, to_status, attempt, env.event_id, env.type_name,
                      env.timestamp_ms, reason)

    def changed(self, entity: EntityKind, entity_id: str, flow_id: str, task_id: str,
                from_status: Status | None, to_status: Status, attempt: int, reason: str) -> None:
        env = self.env
        if not _PLAIN_STATE_CHANGED:
            self.effects.append(StateChanged(entity, entity_id, flow_id, task_id, from_status, to_status,
                                             attempt, env.event_id, env.type_name, reason, env.timestamp_ms))
            return
        # StateChanged(...) as its frozen __init__ builds it, without a setattr per field: one
        # or more per event folded.
        changed = new(StateChanged)
        set_attr(changed, "__dict__", {
            "entity": entity, "entity_id": entity_id, "flow_id": flow_id, "task_id": task_id,
            "from_status": from_status, "to_status": to_status, "attempt": attempt,
            "cause_event_id": env.event_id, "cause_type": env.type_name, "reason": reason,
            "at_ms": env.timestamp_ms})
        self.effects.append(changed)

    def commit(self) -> tuple[MonitorState, tuple[Effect, ...]]:
        base = self.base
        if not (self.tasks or self.flows):
            return base, tuple(self.effects)
        if not (self.flows or self.algo_to_task) and len(self.tasks) == 1:  # the common case
            (task_id, task), = self.tasks.items()
            return evolve(base, tasks=base.tasks.set(task_id, task)), tuple(self.effects)
        state = evolve(
            base,
            tasks=base.tasks.update(self.tasks) if self.tasks else base.tasks,
            flows=base.flows.update(self.flows) if self.flows else base.flows,
            algo_to_task=base.algo_to_task.update(self.algo_to_task) if self.algo_to_task else base.algo_to_task,
        )
        return state, tuple(self.effects)
