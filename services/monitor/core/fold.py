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


def fold(state: MonitorState, envelopes) -> tuple[MonitorState, list[Effect]]:
    """step() over many envelopes; the effects in order."""
    effects: list[Effect] = []
    for env in envelopes:
        state, emitted = step(state, env)
        effects.extend(emitted)
    return state, effects
