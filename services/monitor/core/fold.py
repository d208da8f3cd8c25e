"""step(state, envelope) -> (state, effects): the monitor's whole fold.

Routing: TaskPlanned, JobEvent, Observation and ExecutorProgress belong to a
task (key = task_id); TaskCommand and FlowRejected belong to a flow (key =
flow_id). Time comes only from the envelope: every record and StateChanged
carries envelope.timestamp_ms, so replaying a log reproduces the state exactly.
"""

from __future__ import annotations

from services.monitor.core.commands import on_command
from services.monitor.core.changes import settle_flows
from services.monitor.core.draft import Draft
from services.monitor.core.effects import Anomaly, Effect
from services.monitor.core.facts import on_fact
from services.monitor.core.planning import on_flow_rejected, on_plan
from services.monitor.core.state import MonitorState
from shared.events import (Envelope, ExecutorProgress, FlowRejected, JobEvent, Observation, TaskCommand,
                           TaskPlanned)

_HANDLERS = {
    JobEvent: on_fact, Observation: on_fact, ExecutorProgress: on_fact,
    TaskPlanned: on_plan, TaskCommand: on_command, FlowRejected: on_flow_rejected,
}


def step(state: MonitorState, env: Envelope) -> tuple[MonitorState, tuple[Effect, ...]]:
    handler = _HANDLERS.get(type(env.event))
    if handler is None:
        return state, (Anomaly(env.key, f"the monitor does not consume {env.type_name}", env.event_id),)
    draft = Draft(state, env)
    handler(draft)
    if draft.unsettled_flows:
        settle_flows(draft)
    return draft.commit()


class Batch:
    """step() over many envelopes with one new MonitorState at the end, not one per envelope.

    Each envelope's step reads the entries the ones before it wrote (a Draft reads its own
    writes), so `apply` returns, envelope by envelope, the very effects successive step()
    calls return, and `commit` the state the last of them returns; only the persistent maps
    are rebuilt once, over every entry the batch touched. A Batch lives inside one fold of a
    batch (it is mutable, like a Draft) and is never shared: what escapes is the committed
    state, as frozen as any other.
    """

    __slots__ = ("_draft",)

    def __init__(self, state: MonitorState):
        self._draft = Draft(state, None)

    def apply(self, env: Envelope) -> list[Effect]:
        """The effects of step(state so far, env); the state so far now includes env."""
        handler = _HANDLERS.get(type(env.event))
        if handler is None:
            return [Anomaly(env.key, f"the monitor does not consume {env.type_name}", env.event_id)]
        draft = self._draft
        draft.begin(env)
        handler(draft)
        if draft.unsettled_flows:
            settle_flows(draft)
        return draft.effects

    def task(self, task_id: str):
        """The task as the envelopes applied so far left it (None if it does not exist)."""
        return self._draft.task(task_id)

    def commit(self) -> MonitorState:
        return self._draft.commit()[0]

    def written(self) -> tuple[list[str], list[str]]:
        """(task ids, flow ids) whose entries the committed state replaced: touched_since() of
        the batch, read off the writes instead of looked up over every id the events named."""
        draft = self._draft
        tasks, flows = draft.base.tasks, draft.base.flows
        return ([t for t, task in draft.tasks.items() if task is not tasks.get(t)],
                [f for f, flow in draft.flows.items() if flow is not flows.get(f)])


def fold(state: MonitorState, envelopes) -> tuple[MonitorState, list[Effect]]:
    """step() over many envelopes; the effects in order."""
    batch, effects = Batch(state), []
    for env in envelopes:
        effects.extend(batch.apply(env))
    return batch.commit(), effects
