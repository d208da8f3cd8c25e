"""Scheduler decisions: release on dependencies, retries, suspend/resume/cancel, idempotency."""

from __future__ import annotations

import dataclasses

from services.scheduler.core import Cancel, Dispatch, Resume, SchedulerState, Suspend, step
from services.scheduler.core.exits import classify_exit
from services.scheduler.core.naming import MAX_NAME, job_name
from shared.events import (AlgorithmTaskSpec, CommandKind, EntityKind, Peer, Phase, StateChanged, Status,
                           TaskCommand, TaskPlanned)


def spec(task: str, party: str, attempt: int = 1) -> AlgorithmTaskSpec:
    return AlgorithmTaskSpec(f"{task}.{party}", task, "f", task, "ferry.noop", "1", {}, party, "worker",
                             (Peer(party, "worker"),), "", attempt)


def plan(task: str, deps=(), parties=("a", "b")) -> TaskPlanned:
    return TaskPlanned(task, "f", task, tuple(deps), tuple(spec(task, p) for p in parties), ("t1", "t2"), 0)


def task_changed(task: str, to: Status) -> StateChanged:
    return StateChanged(EntityKind.TASK, task, "f", task, None, to)


def run(events, state=None):
    state = state or SchedulerState()
    out = []
    for ev in events:
        state, commands = step(state, ev)
        out.extend(commands)
    return state, out


def test_a_task_without_dependencies_is_released_at_once_for_every_party():
    _, out = run([plan("t1")])
    assert out == [Dispatch(spec("t1", "a")), Dispatch(spec("t1", "b"))]


def test_a_dependant_waits_until_its_dependency_succeeds():
    state, out = run([plan("t1"), plan("t2", deps=["t1"])])
    assert [c.spec.task_id for c in out] == ["t1", "t1"]
    state, out = run([task_changed("t1", Status.RUNNING)], state)
    assert out == []
    state, out = run([task_changed("t1", Status.SUCCEEDED)], state)
    assert [c.spec.algo_task_id for c in out] == ["t2.a", "t2.b"]


def test_a_failed_dependency_never_releases_the_dependant():
    state, _ = run([plan("t1"), plan("t2", deps=["t1"]), task_changed("t1", Status.FAILED)])
    assert run([task_changed("t1", Status.FAILED)], state)[1] == []


def test_redelivered_plan_and_success_do_not_dispatch_twice():
    state, out = run([plan("t1"), plan("t1"), plan("t2", deps=["t1"]),
                      task_changed("t1", Status.SUCCEEDED), task_changed("t1", Status.SUCCEEDED)])
    assert len(out) == 4
    assert len({c.spec.algo_task_id for c in out}) == 4


def test_retrying_dispatches_the_new_attempt_once():
    retry = StateChanged(EntityKind.ALGORITHM_TASK, "t1.a", "f", "t1", Status.FAILED, Status.RETRYING, 2)
    _, out = run([plan("t1"), retry, retry])
    assert out[-1] == Dispatch(spec("t1", "a", attempt=2))
    assert [type(c) for c in out] == [Dispatch, Dispatch, Cancel, Dispatch]


def test_a_retry_of_a_lost_attempt_cancels_that_attempt_before_dispatching():
    # The monitor declared attempt 1 lost (it may still be alive): it must not run beside attempt 2.
    lost = StateChanged(EntityKind.ALGORITHM_TASK, "t1.a", "f", "t1", Status.RUNNING, Status.RETRYING, 2,
                        reason="attempt 1 failed (executor lost: not heard from for 61 s); retrying")
    state, _ = run([plan("t1")])
    state, out = run([lost], state)
    assert out == [Cancel(spec("t1", "a", 1), "superseded by attempt 2"), Dispatch(spec("t1", "a", 2))]
    again = StateChanged(EntityKind.ALGORITHM_TASK, "t1.a", "f", "t1", Status.RUNNING, Status.RETRYING, 3)
    _, out = run([lost, again], state)  # a redelivery does nothing; the next retry fences attempt 2
    assert out == [Cancel(spec("t1", "a", 2), "superseded by attempt 3"), Dispatch(spec("t1", "a", 3))]


def test_a_retry_never_dispatched_before_fences_nothing():
    state, _ = run([plan("t1"), plan("t2", deps=["t1"])])
    retry = StateChanged(EntityKind.ALGORITHM_TASK, "t2.a", "f", "t2", Status.FAILED, Status.RETRYING, 2)
    _, out = run([retry], state)
    assert out == [Dispatch(spec("t2", "a", 2))]  # no attempt of t2 ever ran: nothing to cancel


def test_suspend_before_release_holds_the_task_and_resume_releases_it():
    state, _ = run([plan("t1"), plan("t2", deps=["t1"])])
    state, out = run([TaskCommand("c", CommandKind.SUSPEND, "f", "t2"), task_changed("t1", Status.SUCCEEDED)], state)
    assert out == []
    state, out = run([TaskCommand("c2", CommandKind.RESUME, "f", "t2")], state)
    assert [type(c) for c in out] == [Dispatch, Dispatch]


def test_flow_commands_reach_every_live_algorithm_task_at_its_attempt():
    retry = StateChanged(EntityKind.ALGORITHM_TASK, "t1.a", "f", "t1", Status.FAILED, Status.RETRYING, 2)
    state, _ = run([plan("t1"), retry])
    state, out = run([TaskCommand("c", CommandKind.SUSPEND, "f")], state)
    assert out == [Suspend(spec("t1", "a", 2)), Suspend(spec("t1", "b"))]
    state, out = run([TaskCommand("c2", CommandKind.RESUME, "f")], state)
    assert out == [Resume(spec("t1", "a", 2)), Resume(spec("t1", "b"))]
    done = StateChanged(EntityKind.ALGORITHM_TASK, "t1.b", "f", "t1", Status.RUNNING, Status.SUCCEEDED, 1)
    state, out = run([done, TaskCommand("c3", CommandKind.CANCEL, "f", reason="stop")], state)
    assert out == [Cancel(spec("t1", "a", 2), "stop")]


def test_commands_leave_finished_tasks_alone():
    state, _ = run([plan("t1"), task_changed("t1", Status.SUCCEEDED)])
    assert run([TaskCommand("c", CommandKind.CANCEL, "f", "t1")], state)[1] == []


def test_job_names_are_deterministic_bounded_and_distinct_per_attempt():
    long = dataclasses.replace(spec("t1", "a"), algo_task_id="x" * 200)
    assert job_name(long) == job_name(long)
    assert len(job_name(long)) <= MAX_NAME
    assert job_name(long) != job_name(dataclasses.replace(long, attempt=2))
    assert job_name(spec("t1", "a")) == "ferry-t1-a-a1"


def test_exit_codes_mean_what_was_asked():
    assert classify_exit(0, "suspend").phase == Phase.SUCCEEDED
    assert classify_exit(143, "suspend").phase == Phase.SUSPENDED
    assert classify_exit(143, "run").retriable
    assert classify_exit(-9, "cancel").phase == Phase.DELETED
    assert not classify_exit(2, "run").retriable
    assert classify_exit(75, "run").retriable
