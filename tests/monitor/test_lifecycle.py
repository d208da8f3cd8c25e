"""Whole journeys of one task through the fold, in the orders the runners really produce."""

from __future__ import annotations

from services.monitor.core import Anomaly, CancelSiblings, MonitorState
from services.monitor.core.facts import PARKED_LIMIT
from shared.events import (CommandKind, EntityKind, JobAction, Phase, RoundKind, RoundMessage, StateChanged,
                           Status)

from tests.monitor.builders import Feed, algo_of, command, job, of_type, plan, progress, run, seen


def _task_path(effects, entity=EntityKind.TASK) -> list[Status]:
    return [e.to_status for e in of_type(effects, StateChanged) if e.entity is entity]


def test_happy_path_of_a_two_member_task():
    feed = Feed()
    events = [plan(algos=("a1", "a2"))]
    for a in ("a1", "a2"):
        events += [job(JobAction.CREATED, a), seen(Phase.RUNNING, a), progress(1, a), seen(Phase.SUCCEEDED, a)]
    state, effects = run(feed, events)
    assert _task_path(effects) == [Status.PENDING, Status.SCHEDULED, Status.RUNNING, Status.SUCCEEDED]
    assert _task_path(effects, EntityKind.FLOW) == [Status.PENDING, Status.SCHEDULED, Status.RUNNING,
                                                   Status.SUCCEEDED]
    assert state.flows["f1"].status is Status.SUCCEEDED


def test_the_local_runner_reports_running_before_the_scheduler_reports_the_job():
    feed = Feed()
    state, effects = run(feed, [plan(), seen(Phase.RUNNING), job(JobAction.CREATED)])
    assert algo_of(state).status is Status.RUNNING
    assert algo_of(state).job_name == "job-a1-1"
    assert not of_type(effects, Anomaly)


def test_a_retriable_failure_retries_with_the_next_attempt():
    feed = Feed()
    events = [plan(), job(JobAction.CREATED), seen(Phase.RUNNING),
              seen(Phase.FAILED, exit_code=75, retriable=True, reason="broker away")]
    state, effects = run(feed, events)
    algo = algo_of(state)
    assert (algo.status, algo.attempt) == (Status.RETRYING, 2)
    [retry] = [e for e in of_type(effects, StateChanged) if e.to_status is Status.RETRYING
               and e.entity is EntityKind.ALGORITHM_TASK]
    assert retry.attempt == 2 and "broker away" in retry.reason and "exit code 75" in retry.reason
    state, _ = run(feed, [job(JobAction.CREATED, attempt=2), seen(Phase.RUNNING, attempt=2),
                          seen(Phase.SUCCEEDED, attempt=2)], state)
    assert algo_of(state).status is Status.SUCCEEDED and state.tasks["t1"].status is Status.SUCCEEDED


def test_a_retriable_dispatch_failure_retries_too():
    feed = Feed()
    state, _ = run(feed, [plan(), job(JobAction.DISPATCH_FAILED, retriable=True, reason="api timeout")])
    assert (algo_of(state).status, algo_of(state).attempt) == (Status.RETRYING, 2)


def test_attempts_run_out():
    feed = Feed()
    events = [plan()]
    for attempt in (1, 2, 3):
        events += [job(JobAction.CREATED, attempt=attempt),
                   seen(Phase.FAILED, attempt=attempt, exit_code=137, retriable=True)]
    state, _ = run(feed, events)
    algo = algo_of(state)
    assert (algo.status, algo.attempt) == (Status.FAILED, 3)
    assert "no attempts left of 3" in algo.reason


def test_a_non_retriable_failure_fails_at_once():
    feed = Feed()
    state, _ = run(feed, [plan(), job(JobAction.CREATED), seen(Phase.FAILED, exit_code=2, reason="bad params")])
    assert algo_of(state).status is Status.FAILED and "not retriable" in algo_of(state).reason


def test_suspend_and_resume_as_the_local_runner_reports_them():
    feed = Feed()
    state, _ = run(feed, [plan(), job(JobAction.CREATED), seen(Phase.RUNNING), progress(3)])
    steps = [
        (command(CommandKind.SUSPEND), Status.SUSPENDING),
        (seen(Phase.SUSPENDED, exit_code=143), Status.SUSPENDED),
        (job(JobAction.SUSPENDED), Status.SUSPENDED),
        (command(CommandKind.RESUME), Status.RESUMING),
        (seen(Phase.RUNNING), Status.RUNNING),
        (job(JobAction.RESUMED), Status.RUNNING),
        (progress(4), Status.RUNNING),
        (seen(Phase.SUCCEEDED), Status.SUCCEEDED),
    ]
    for event, expected in steps:
        state, _ = run(feed, [event], state)
        assert algo_of(state).status is expected, event
    assert algo_of(state).round == 4 and algo_of(state).attempt == 1


def test_an_executor_killed_by_sigterm_while_suspending_is_suspended_not_failed():
    feed = Feed()
    state, _ = run(feed, [plan(), job(JobAction.CREATED), seen(Phase.RUNNING), command(CommandKind.SUSPEND),
                          seen(Phase.FAILED, exit_code=143)])
    assert algo_of(state).status is Status.SUSPENDED


def test_a_real_failure_while_suspending_still_fails():
    feed = Feed()
    state, _ = run(feed, [plan(), job(JobAction.CREATED), seen(Phase.RUNNING), command(CommandKind.SUSPEND),
                          seen(Phase.FAILED, exit_code=3, reason="data error")])
    assert algo_of(state).status is Status.FAILED


def test_the_suspended_executors_exit_seen_while_resuming_is_not_a_failure():
    feed = Feed()
    state, _ = run(feed, [plan(), job(JobAction.CREATED), seen(Phase.RUNNING), command(CommandKind.SUSPEND),
                          job(JobAction.SUSPENDED), command(CommandKind.RESUME),
                          seen(Phase.FAILED, exit_code=143)])
    assert algo_of(state).status is Status.RESUMING


def test_cancel_a_running_task():
    feed = Feed()
    state, effects = run(feed, [plan(), job(JobAction.CREATED), seen(Phase.RUNNING), command(CommandKind.CANCEL),
                                seen(Phase.DELETED), job(JobAction.DELETED)])
    assert _task_path(effects)[-2:] == [Status.CANCELLING, Status.CANCELLED]
    assert state.flows["f1"].status is Status.CANCELLED


def test_a_task_that_never_had_a_job_is_suspended_resumed_and_cancelled_without_the_scheduler():
    feed = Feed()
    state, _ = run(feed, [plan(), command(CommandKind.SUSPEND)])
    assert algo_of(state).status is Status.SUSPENDED
    state, _ = run(feed, [command(CommandKind.RESUME)], state)
    assert algo_of(state).status is Status.PENDING
    state, _ = run(feed, [command(CommandKind.SUSPEND), command(CommandKind.CANCEL)], state)
    assert algo_of(state).status is Status.CANCELLED


def test_a_task_whose_job_was_created_while_suspended_resumes_through_the_scheduler():
    feed = Feed()
    state, _ = run(feed, [plan(), command(CommandKind.SUSPEND), job(JobAction.CREATED),
                          command(CommandKind.RESUME)])
    assert algo_of(state).status is Status.RESUMING


def test_a_member_failing_for_good_cancels_its_siblings():
    feed = Feed()
    events = [plan(algos=("a1", "a2", "a3"))]
    for a in ("a1", "a2"):
        events += [job(JobAction.CREATED, a), seen(Phase.RUNNING, a)]
    events.append(seen(Phase.FAILED, "a1", exit_code=2))
    state, effects = run(feed, events)
    assert [a.status for a in state.tasks["t1"].algos] == [Status.FAILED, Status.CANCELLING, Status.CANCELLED]
    [cancel] = of_type(effects, CancelSiblings)
    assert cancel.algo_task_ids == ("a2", "a3") and "a1 ended FAILED" in cancel.reason
    assert state.tasks["t1"].status is Status.FAILED


def test_a_retriable_failure_does_not_cancel_siblings():
    feed = Feed()
    _, effects = run(feed, [plan(algos=("a1", "a2")), seen(Phase.FAILED, "a1", exit_code=75, retriable=True)])
    assert of_type(effects, CancelSiblings) == []


def test_facts_before_the_plan_are_parked_and_replayed_in_order():
    feed = Feed()
    early = [job(JobAction.CREATED), seen(Phase.RUNNING), progress(2)]
    state, effects = run(feed, early)
    assert state.tasks["t1"].status is None and len(state.tasks["t1"].parked) == 3
    assert effects == []
    state, effects = run(feed, [plan()], state)
    algo = algo_of(state)
    assert (algo.status, algo.round, state.tasks["t1"].parked) == (Status.RUNNING, 2, ())
    causes = [e.cause_type for e in of_type(effects, StateChanged) if e.entity is EntityKind.ALGORITHM_TASK]
    assert causes == ["TaskPlanned", "JobEvent", "Observation"]


def test_parking_is_bounded():
    feed = Feed()
    state, effects = run(feed, [progress(i) for i in range(1, PARKED_LIMIT + 2)])
    assert len(state.tasks["t1"].parked) == PARKED_LIMIT
    assert len(of_type(effects, Anomaly)) == 1


def test_unknown_event_types_are_anomalies():
    feed = Feed()
    message = RoundMessage("f1", "t1", "s", 1, 1, "p", RoundKind.ANNOUNCE)
    state, effects = run(feed, [feed(message, key="t1", producer="x")])
    assert state == MonitorState() and isinstance(effects[0], Anomaly)
