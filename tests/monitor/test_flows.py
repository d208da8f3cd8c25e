"""Task and flow status derived from their members, and what spreads between tasks."""

from __future__ import annotations

import pytest

from services.monitor.core import CommandRejected, DuplicateDropped, check_command, derive, step
from shared.events import CommandKind, EntityKind, JobAction, Phase, StateChanged, Status

from tests.monitor.builders import Feed, algo_of, command, job, of_type, plan, progress, rejected, run, seen

S = Status


@pytest.mark.parametrize("members, expected", [
    ((S.FAILED, S.RUNNING), S.FAILED),
    ((S.FAILED, S.CANCELLED, S.SUCCEEDED), S.FAILED),
    ((S.SUCCEEDED, S.SUCCEEDED), S.SUCCEEDED),
    ((S.CANCELLED, S.SUCCEEDED), S.CANCELLED),
    ((S.CANCELLED, S.CANCELLING), S.CANCELLING),
    ((S.CANCELLING, S.RUNNING), S.CANCELLING),
    ((S.RETRYING, S.SUSPENDING), S.RETRYING),
    ((S.SUSPENDING, S.RUNNING), S.SUSPENDING),
    ((S.RESUMING, S.SUSPENDED), S.RESUMING),
    ((S.SUSPENDED, S.SUCCEEDED), S.SUSPENDED),
    ((S.SUSPENDED, S.RUNNING), S.SUSPENDING),
    ((S.RUNNING, S.PENDING), S.RUNNING),
    ((S.SUCCEEDED, S.PENDING), S.RUNNING),
    ((S.SCHEDULED, S.PENDING), S.SCHEDULED),
    ((S.PENDING, S.PENDING), S.PENDING),
])
def test_task_status_precedence(members, expected):
    assert derive.task_status(members) is expected


@pytest.mark.parametrize("tasks, expected", [
    ((S.FAILED, S.RUNNING), S.RUNNING),
    ((S.FAILED, S.SUCCEEDED, S.CANCELLED), S.FAILED),
    ((S.CANCELLED, S.SUCCEEDED), S.CANCELLED),
    ((S.SUCCEEDED, S.SUCCEEDED), S.SUCCEEDED),
    ((S.CANCELLING, S.SUSPENDING), S.CANCELLING),
    ((S.SUSPENDING, S.RESUMING), S.SUSPENDING),
    ((S.RESUMING, S.RUNNING), S.RESUMING),
    ((S.SUSPENDED, S.SUCCEEDED), S.SUSPENDED),
    ((S.SUSPENDED, S.RUNNING), S.RUNNING),
    ((S.RETRYING, S.PENDING), S.RUNNING),
    ((S.SUCCEEDED, S.PENDING), S.RUNNING),
    ((S.SCHEDULED, S.PENDING), S.SCHEDULED),
    ((S.PENDING,), S.PENDING),
])
def test_flow_status_precedence(tasks, expected):
    assert derive.flow_status(tasks) is expected


def _chain(feed: Feed):
    """t1 <- t2 <- t3 (each depends on the previous) and an independent t4."""
    ids = ("t1", "t2", "t3", "t4")
    deps = {"t1": (), "t2": ("t1",), "t3": ("t2",), "t4": ()}
    return run(feed, [plan(t, algos=(f"{t}-a",), depends_on=deps[t], flow_task_ids=ids) for t in ids])


def _finish(task_id: str, phase: Phase, **kw):
    algo = f"{task_id}-a"
    return [job(JobAction.CREATED, algo, task_id=task_id), seen(Phase.RUNNING, algo, task_id=task_id),
            seen(phase, algo, task_id=task_id, **kw)]


def test_a_failed_task_cancels_its_dependants_but_not_independent_tasks():
    feed = Feed()
    state, _ = _chain(feed)
    state, effects = run(feed, _finish("t1", Phase.FAILED, exit_code=2), state)
    statuses = {t: state.tasks[t].status for t in ("t1", "t2", "t3", "t4")}
    assert statuses == {"t1": S.FAILED, "t2": S.CANCELLED, "t3": S.CANCELLED, "t4": S.PENDING}
    assert state.tasks["t3"].reason.endswith("dependency t2 ended CANCELLED")
    assert state.flows["f1"].status is S.RUNNING  # t4 can still run
    state, effects = run(feed, _finish("t4", Phase.SUCCEEDED), state)
    assert state.flows["f1"].status is S.FAILED
    [flow_end] = [e for e in of_type(effects, StateChanged) if e.entity is EntityKind.FLOW][-1:]
    assert flow_end.to_status is S.FAILED


def test_a_task_planned_after_its_dependency_failed_is_cancelled_at_once():
    feed = Feed()
    ids = ("t1", "t2")
    state, _ = run(feed, [plan("t1", algos=("t1-a",), flow_task_ids=ids)] + _finish("t1", Phase.FAILED))
    assert state.flows["f1"].status is S.RUNNING  # t2 is not planned: counts as PENDING
    state, _ = run(feed, [plan("t2", algos=("t2-a",), depends_on=("t1",), flow_task_ids=ids)], state)
    assert state.tasks["t2"].status is S.CANCELLED
    assert state.flows["f1"].status is S.FAILED


def test_unplanned_tasks_keep_a_flow_from_finishing():
    feed = Feed()
    state, _ = run(feed, [plan("t1", algos=("t1-a",), flow_task_ids=("t1", "t2"))] + _finish("t1", Phase.SUCCEEDED))
    assert state.flows["f1"].status is S.RUNNING


def test_suspending_a_flow_skips_finished_tasks_and_holds_later_ones():
    feed = Feed()
    ids = ("t1", "t2", "t3")
    events = [plan(t, algos=(f"{t}-a",), flow_task_ids=ids) for t in ("t1", "t2")]
    events += _finish("t1", Phase.SUCCEEDED)
    events += [job(JobAction.CREATED, "t2-a", task_id="t2"), seen(Phase.RUNNING, "t2-a", task_id="t2")]
    state, _ = run(feed, events + [command(CommandKind.SUSPEND)])
    assert [state.tasks[t].status for t in ("t1", "t2")] == [S.SUCCEEDED, S.SUSPENDING]
    assert state.flows["f1"].status is S.SUSPENDING
    state, _ = run(feed, [seen(Phase.SUSPENDED, "t2-a", task_id="t2"), plan("t3", ("t3-a",), flow_task_ids=ids)],
                   state)
    assert state.tasks["t3"].status is S.SUSPENDED
    assert state.flows["f1"].status is S.SUSPENDED
    state, _ = run(feed, [command(CommandKind.RESUME)], state)
    assert [state.tasks[t].status for t in ids] == [S.SUCCEEDED, S.RESUMING, S.PENDING]
    assert state.flows["f1"].hold is None


def test_a_flow_suspend_with_only_unplanned_tasks_left_is_accepted_as_a_hold():
    feed = Feed()
    state, _ = run(feed, [plan("t1", ("t1-a",), flow_task_ids=("t1", "t2"))] + _finish("t1", Phase.SUCCEEDED))
    assert check_command(state, command(CommandKind.SUSPEND)) is None
    state, _ = run(feed, [command(CommandKind.SUSPEND)], state)
    assert state.flows["f1"].hold is CommandKind.SUSPEND
    assert "none of its tasks" in check_command(state, command(CommandKind.SUSPEND))


def test_cancelling_a_flow_cancels_tasks_planned_later():
    feed = Feed()
    ids = ("t1", "t2")
    state, _ = run(feed, [plan("t1", ("t1-a",), flow_task_ids=ids), command(CommandKind.CANCEL),
                          plan("t2", ("t2-a",), flow_task_ids=ids)])
    assert [state.tasks[t].status for t in ids] == [S.CANCELLED, S.CANCELLED]
    assert state.flows["f1"].status is S.CANCELLED
    assert "cancelled before this task was planned" in state.tasks["t2"].algos[0].reason


def test_a_rejected_flow_is_failed_with_the_splitters_reasons():
    feed = Feed()
    envelope = feed(rejected())
    state, effects = step(run(feed, [])[0], envelope)
    flow = state.flows["f1"]
    assert (flow.status, flow.task_ids) == (S.FAILED, ())
    assert flow.reason == "steps[0].algorithm: unknown algorithm 'x'"
    [change] = of_type(effects, StateChanged)
    assert (change.entity, change.from_status, change.to_status) == (EntityKind.FLOW, None, S.FAILED)
    again, effects = step(state, envelope)
    assert again is state and isinstance(effects[0], DuplicateDropped)
    assert check_command(state, command(CommandKind.CANCEL)) == "flow f1 was rejected and has no tasks"
    _, effects = run(feed, [command(CommandKind.CANCEL)], state)
    assert of_type(effects, CommandRejected)


def test_task_status_changes_are_emitted_with_their_cause():
    feed = Feed()
    state, _ = run(feed, [plan(algos=("a1", "a2")), job(JobAction.CREATED, "a1")])
    envelope = feed(seen(Phase.RUNNING, "a1"))
    _, effects = step(state, envelope)
    task_change = [e for e in of_type(effects, StateChanged) if e.entity is EntityKind.TASK]
    assert [(e.from_status, e.to_status, e.cause_event_id, e.at_ms) for e in task_change] == [
        (S.SCHEDULED, S.RUNNING, envelope.event_id, envelope.timestamp_ms)]


def test_progress_while_scheduled_means_running():
    feed = Feed()
    state, _ = run(feed, [plan(), job(JobAction.CREATED), progress(1)])
    assert algo_of(state).status is S.RUNNING and state.tasks["t1"].status is S.RUNNING


def test_a_dependant_that_already_has_a_job_is_left_to_the_scheduler():
    feed = Feed()
    ids = ("t1", "t2")
    state, _ = run(feed, [plan("t1", ("t1-a",), flow_task_ids=ids),
                          plan("t2", ("t2-a",), depends_on=("t1",), flow_task_ids=ids),
                          job(JobAction.CREATED, "t2-a", task_id="t2")] + _finish("t1", Phase.FAILED))
    assert (state.tasks["t1"].status, state.tasks["t2"].status) == (S.FAILED, S.SCHEDULED)
