"""TaskCommand: suspend, resume or cancel a whole flow or one of its tasks.

A command applies to every algorithm task it makes sense for and skips the
rest (suspending a flow leaves its finished tasks alone); it is rejected only
when it fits nothing. A flow-wide command also sets the flow's hold, which
applies it to tasks planned later. check_command() runs the same code on a
throw-away draft so the API can answer 409 before publishing.
"""

from __future__ import annotations

from services.monitor.core.changes import command_algos, settle_task
from services.monitor.core.dedup import duplicate, seen
from services.monitor.core.draft import Draft
from services.monitor.core.effects import CommandRejected
from services.monitor.core.state import MonitorState, Outcome, append_record, evolve
from services.monitor.core.decide import why_not
from services.monitor.core.transitions import COMMAND_FACTS, PAST_TENSE, Fact
from shared.events import CommandKind, Envelope, TaskCommand

def on_command(draft: Draft) -> None:
    env = draft.env
    command: TaskCommand = env.event
    flow = draft.flow(command.flow_id)
    if flow is not None:
        if duplicate(draft, flow.sequences):
            return
        draft.put_flow(evolve(flow, sequences=seen(flow.sequences, env)))
    reason = apply_command(draft, command)
    if reason is not None:
        _reject(draft, command, reason)


def check_command(state: MonitorState, command: TaskCommand) -> str | None:
    """Why `command` makes no sense now, or None if step() would apply it."""
    probe = Envelope(command, event_id="check", key=command.flow_id, sequence=0, producer="check",
                     timestamp_ms=0)
    return apply_command(Draft(state, probe), command)


def apply_command(draft: Draft, command: TaskCommand) -> str | None:
    fact = COMMAND_FACTS[command.kind]
    flow = draft.flow(command.flow_id)
    if flow is None:
        return f"unknown flow {command.flow_id}"
    if not flow.task_ids:
        return f"flow {flow.flow_id} was rejected and has no tasks"
    because = _because(fact, command)
    if command.task_id:
        return _command_task(draft, flow.task_ids, command, fact, because)
    accepted = False
    unplanned = False
    for task_id in flow.task_ids:
        task = draft.task(task_id)
        if task is None or not task.planned:
            unplanned = True
            continue
        moved = command_algos(draft, task, fact, because)
        if moved is not None:
            settle_task(draft, moved)
            accepted = True
    hold = _next_hold(flow.hold, fact)
    if not accepted and not (unplanned and hold is not flow.hold):
        return (f"cannot {fact.value} flow {flow.flow_id}: it is {flow.status.name} and none of "
                f"its tasks can be {PAST_TENSE[fact]}")
    if hold is not flow.hold:
        draft.put_flow(evolve(draft.flow(flow.flow_id), hold=hold))
    draft.unsettle(flow.flow_id)
    return None


def _command_task(draft: Draft, task_ids, command: TaskCommand, fact: Fact, because: str) -> str | None:
    if command.task_id not in task_ids:
        return f"task {command.task_id} is not part of flow {command.flow_id}"
    task = draft.task(command.task_id)
    if task is None or not task.planned:
        return f"task {command.task_id} is not planned yet"
    moved = command_algos(draft, task, fact, because)
    if moved is None:
        return f"task {task.task_id}: {why_not(fact, task.status)}"
    settle_task(draft, moved)
    return None


def _next_hold(hold: CommandKind | None, fact: Fact) -> CommandKind | None:
    if fact is Fact.CANCEL or hold is CommandKind.CANCEL:
        return CommandKind.CANCEL
    return CommandKind.SUSPEND if fact is Fact.SUSPEND else None


def _because(fact: Fact, command: TaskCommand) -> str:
    who = f" by {command.requested_by}" if command.requested_by else ""
    why = f": {command.reason}" if command.reason else ""
    return f"{fact.value} requested{who}{why}"


def _reject(draft: Draft, command: TaskCommand, reason: str) -> None:
    env = draft.env
    draft.emit(CommandRejected(command.command_id, reason, command.flow_id, command.task_id, env.event_id))
    task = draft.task(command.task_id) if command.task_id else None
    if task is not None and task.planned:
        record = draft.record(Outcome.REJECTED, task.status, None, 0, reason)
        draft.put_task(evolve(task, history=append_record(task.history, record)))
        return
    flow = draft.flow(command.flow_id)
    if flow is not None:
        record = draft.record(Outcome.REJECTED, flow.status, None, 0, reason)
        draft.put_flow(evolve(flow, history=append_record(flow.history, record)))
