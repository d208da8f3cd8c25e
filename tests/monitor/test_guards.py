"""The fold's guards: terminal absorption, attempt fencing, dedup, anomalies, rejections."""

from __future__ import annotations

from services.monitor.core.state import UNAPPLIED_HISTORY_LIMIT
from services.monitor.core import (Anomaly, CommandRejected, DuplicateDropped, MonitorState, Outcome,
                                   check_command, step)
from shared.events import CommandKind, Envelope, JobAction, Phase, StateChanged, Status

from tests.monitor.builders import (Feed, algo_of, command, job, of_type, plan, progress, run, seen)


def _running(feed: Feed, algos=("a1",)) -> MonitorState:
    events = [plan(algos=algos)]
    for a in algos:
        events += [job(JobAction.CREATED, a), seen(Phase.RUNNING, a)]
    state, _ = run(feed, events)
    return state


def test_a_late_running_observation_never_reopens_a_succeeded_task():
    feed = Feed()
    state, _ = run(feed, [seen(Phase.SUCCEEDED)], _running(feed))
    after, effects = run(feed, [seen(Phase.RUNNING), seen(Phase.PENDING), progress(9)], state)
    assert algo_of(after).status is Status.SUCCEEDED
    assert after.tasks["t1"].status is Status.SUCCEEDED
    assert after.flows["f1"].status is Status.SUCCEEDED
    assert of_type(effects, StateChanged) == []
    assert [r.outcome for r in algo_of(after).history[-2:]] == [Outcome.IGNORED] * 2
    # The executor's last report can trail its exit (another topic): its numbers are kept,
    # the status is not touched.
    assert algo_of(after).round == 9


def test_a_pod_restart_after_failure_does_not_revive_the_task():
    feed = Feed()
    state, _ = run(feed, [seen(Phase.FAILED, exit_code=2)], _running(feed))
    after, _ = run(feed, [seen(Phase.PENDING), seen(Phase.RUNNING), seen(Phase.SUCCEEDED)], state)
    assert algo_of(after).status is Status.FAILED
    assert after.tasks["t1"].status is Status.FAILED


def test_facts_of_an_older_attempt_are_recorded_as_ignored_and_not_applied():
    feed = Feed()
    state, _ = run(feed, [seen(Phase.FAILED, exit_code=1, retriable=True), job(JobAction.CREATED, attempt=2),
                          seen(Phase.RUNNING, attempt=2)], _running(feed))
    stale = [seen(Phase.FAILED, attempt=1, exit_code=1, retriable=True), seen(Phase.SUCCEEDED, attempt=1),
             progress(7, attempt=1)]
    after, effects = run(feed, stale, state)
    algo = algo_of(after)
    assert (algo.status, algo.attempt, algo.round) == (Status.RUNNING, 2, 0)
    assert of_type(effects, StateChanged) == []
    ignored = algo.history[-3:]
    assert all(r.outcome is Outcome.IGNORED and "stale attempt 1" in r.reason for r in ignored)


def test_a_fact_from_a_future_attempt_is_an_anomaly():
    feed = Feed()
    after, effects = run(feed, [seen(Phase.SUCCEEDED, attempt=2)], _running(feed))
    assert algo_of(after).status is Status.RUNNING
    [anomaly] = of_type(effects, Anomaly)
    assert "attempt 2" in anomaly.reason and anomaly.entity_id == "a1"


def test_an_older_attempts_stop_confirms_a_cancel_when_the_retry_never_had_a_job():
    feed = Feed()
    state, _ = run(feed, [seen(Phase.FAILED, exit_code=1, retriable=True),
                          command(CommandKind.CANCEL, task_id="t1")], _running(feed))
    assert algo_of(state).status is Status.CANCELLING
    after, _ = run(feed, [job(JobAction.DELETED, attempt=1)], state)
    assert algo_of(after).status is Status.CANCELLED


def test_an_older_attempts_stop_is_stale_once_the_retry_has_a_job():
    feed = Feed()
    state, _ = run(feed, [seen(Phase.FAILED, exit_code=1, retriable=True), job(JobAction.CREATED, attempt=2),
                          command(CommandKind.CANCEL, task_id="t1"), job(JobAction.DELETED, attempt=1)],
                   _running(feed))
    assert algo_of(state).status is Status.CANCELLING
    assert algo_of(state).history[-1].outcome is Outcome.IGNORED


def test_a_redelivered_envelope_is_dropped():
    feed = Feed()
    state = _running(feed)
    envelope = feed(seen(Phase.SUCCEEDED))
    once, _ = step(state, envelope)
    twice, effects = step(once, envelope)
    assert twice is once
    [dropped] = effects
    assert isinstance(dropped, DuplicateDropped) and dropped.sequence == dropped.last_sequence


def test_a_lower_sequence_from_the_same_producer_and_key_is_a_duplicate():
    feed = Feed()
    state = _running(feed)
    old = Envelope(seen(Phase.FAILED, exit_code=2), "ev-old", "t1", 1, "watcher/0", 5)
    after, effects = step(state, old)
    assert after is state and isinstance(effects[0], DuplicateDropped)


def test_sequences_are_per_producer():
    feed = Feed()
    state = _running(feed)
    other = Envelope(seen(Phase.SUCCEEDED), "ev-x", "t1", 1, "watcher/1", 5)
    after, _ = step(state, other)
    assert algo_of(after).status is Status.SUCCEEDED


def test_an_unsequenced_envelope_is_always_applied():
    feed = Feed()
    state = _running(feed)
    bare = Envelope(progress(4), "ev-x", "t1", 0, "executor/0", 5)
    after, effects = step(state, bare)
    assert algo_of(after).round == 4 and not of_type(effects, DuplicateDropped)
    assert after.tasks["t1"].sequences == state.tasks["t1"].sequences


def test_an_illegal_transition_is_recorded_as_an_anomaly_with_its_reason():
    feed = Feed()
    state = _running(feed)
    envelope = feed(job(JobAction.DISPATCH_FAILED, retriable=True, reason="suspend failed"))
    after, effects = step(state, envelope)
    assert algo_of(after).status is Status.RUNNING
    [anomaly] = of_type(effects, Anomaly)
    assert anomaly == Anomaly("a1", "runner action failed is not expected while RUNNING", envelope.event_id, "f1")
    assert algo_of(after).history[-1].outcome is Outcome.ANOMALY
    assert of_type(effects, StateChanged) == []


def test_a_fact_for_an_unknown_member_is_an_anomaly_on_the_task():
    feed = Feed()
    after, effects = run(feed, [seen(Phase.RUNNING, algo="zz")], _running(feed))
    [anomaly] = of_type(effects, Anomaly)
    assert anomaly.entity_id == "t1" and "'zz'" in anomaly.reason
    assert after.tasks["t1"].history[-1].outcome is Outcome.ANOMALY


def test_resuming_a_running_task_is_rejected_with_a_reason():
    feed = Feed()
    state = _running(feed)
    resume = command(CommandKind.RESUME, task_id="t1", command_id="c9")
    reason = check_command(state, resume)
    assert reason == ("task t1: cannot resume a RUNNING task; only SUSPENDED tasks can be resumed")
    after, effects = run(feed, [resume], state)
    assert of_type(effects, CommandRejected) == [
        CommandRejected("c9", reason, "f1", "t1", effects[0].cause_event_id)]
    assert algo_of(after).status is Status.RUNNING
    assert after.tasks["t1"].history[-1].outcome is Outcome.REJECTED


def test_suspending_a_finished_task_or_flow_is_rejected():
    feed = Feed()
    state, _ = run(feed, [seen(Phase.SUCCEEDED)], _running(feed))
    assert "SUCCEEDED" in check_command(state, command(CommandKind.SUSPEND, task_id="t1"))
    assert "none of its tasks can be suspended" in check_command(state, command(CommandKind.SUSPEND))
    _, effects = run(feed, [command(CommandKind.SUSPEND)], state)
    assert len(of_type(effects, CommandRejected)) == 1


def test_check_command_accepts_a_legal_command_and_changes_nothing():
    feed = Feed()
    state = _running(feed)
    before = dict(state.tasks.items())
    assert check_command(state, command(CommandKind.SUSPEND)) is None
    assert check_command(state, command(CommandKind.CANCEL, task_id="t1")) is None
    assert dict(state.tasks.items()) == before


def test_commands_naming_unknown_things_are_rejected():
    feed = Feed()
    state, _ = run(feed, [plan(flow_task_ids=("t1", "t2"))])
    assert check_command(state, command(CommandKind.CANCEL, flow_id="nope")) == "unknown flow nope"
    assert check_command(state, command(CommandKind.CANCEL, task_id="t9")) == "task t9 is not part of flow f1"
    assert check_command(state, command(CommandKind.CANCEL, task_id="t2")) == "task t2 is not planned yet"


def test_progress_updates_data_of_the_current_attempt_but_not_the_status():
    feed = Feed()
    after, effects = run(feed, [progress(4, metrics={"loss": 0.25})], _running(feed))
    algo = algo_of(after)
    assert (algo.status, algo.round, algo.total_rounds, algo.stage, dict(algo.metrics)) == (
        Status.RUNNING, 4, 10, "training", {"loss": 0.25})
    assert list(effects) == []


def test_history_keeps_every_transition_but_only_the_newest_ignored_facts():
    feed = Feed()
    state, _ = run(feed, [seen(Phase.SUCCEEDED)], _running(feed))
    applied = [r for r in algo_of(state).history if r.outcome is Outcome.APPLIED]
    state, _ = run(feed, [seen(Phase.RUNNING) for _ in range(UNAPPLIED_HISTORY_LIMIT + 10)], state)
    history = algo_of(state).history
    assert [r for r in history if r.outcome is Outcome.APPLIED] == applied
    ignored = [r for r in history if r.outcome is Outcome.IGNORED]
    assert len(ignored) == UNAPPLIED_HISTORY_LIMIT
    assert ignored[-1].cause_event_id == f"ev-{feed.count}"
