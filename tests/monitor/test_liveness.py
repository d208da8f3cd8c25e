"""Lost executors: a silent RUNNING executor is declared lost after lost_after; one that has not
yet spoken at all (still starting: importing torch on a loaded node) gets the startup grace too."""

from __future__ import annotations

from services.monitor.core.liveness import lost_executors
from shared.events import HEARTBEAT_STAGE, EntityKind, ExecutorProgress, JobAction, Phase, StateChanged, Status

from tests.monitor.builders import ALGO, FLOW, TASK, Feed, algo_of, job, of_type, plan, run, seen

LOST_AFTER_MS, GRACE_MS = 60_000, 120_000


def _running(feed: Feed, *, spoke: bool):
    events = [plan(), job(JobAction.CREATED), seen(Phase.RUNNING)]
    if spoke:
        events.append(ExecutorProgress(ALGO, TASK, FLOW, 1, 0, 0, HEARTBEAT_STAGE, {}))
    state, _ = run(feed, events)
    return state, state.tasks[TASK].algos[0].updated_at_ms


def _lost(state, now_ms: int) -> list[str]:
    return [o.algo_task_id for o in lost_executors(state, now_ms, LOST_AFTER_MS, GRACE_MS)]


def test_an_executor_that_has_spoken_is_lost_after_lost_after():
    state, heard = _running(Feed(), spoke=True)
    assert _lost(state, heard + LOST_AFTER_MS - 1) == []
    assert _lost(state, heard + LOST_AFTER_MS + 1) == [ALGO]


def test_an_executor_still_starting_gets_the_startup_grace_then_is_lost():
    state, heard = _running(Feed(), spoke=False)
    assert _lost(state, heard + LOST_AFTER_MS + 1) == []
    assert _lost(state, heard + LOST_AFTER_MS + GRACE_MS - 1) == []
    (lost,) = lost_executors(state, heard + LOST_AFTER_MS + GRACE_MS + 1, LOST_AFTER_MS, GRACE_MS)
    assert "limit 180 s" in lost.reason


def test_a_retried_attempt_must_speak_again_to_lose_its_grace():
    feed = Feed()
    state, _ = _running(feed, spoke=True)
    state, _ = run(feed, [seen(Phase.FAILED, retriable=True), job(JobAction.CREATED, attempt=2),
                          seen(Phase.RUNNING, attempt=2)], state)
    algo = state.tasks[TASK].algos[0]
    assert (algo.attempt, algo.spoke_attempt) == (2, 1)
    assert _lost(state, algo.updated_at_ms + LOST_AFTER_MS + 1) == []


def test_a_lost_attempt_fenced_by_its_retry_never_moves_the_task_again():
    # Declared lost, the attempt may still be alive: the scheduler cancels it as it dispatches
    # the retry. Its cancellation, and anything it says before it dies, is stale news.
    feed = Feed()
    state, heard = _running(feed, spoke=True)
    (declaration,) = lost_executors(state, heard + LOST_AFTER_MS + 1, LOST_AFTER_MS, GRACE_MS)
    state, _ = run(feed, [declaration], state)
    assert (algo_of(state).status, algo_of(state).attempt) == (Status.RETRYING, 2)
    late = [job(JobAction.DELETED), seen(Phase.DELETED, exit_code=137),
            ExecutorProgress(ALGO, TASK, FLOW, 1, 0, 0, HEARTBEAT_STAGE, {}), seen(Phase.SUCCEEDED)]
    after, effects = run(feed, late, state)  # before and after the retry's job exists
    after, more = run(feed, [job(JobAction.CREATED, attempt=2), seen(Phase.RUNNING, attempt=2)] + late, after)
    assert (algo_of(after).status, algo_of(after).attempt) == (Status.RUNNING, 2)
    changes = of_type(effects + more, StateChanged)
    assert [(c.to_status, c.attempt) for c in changes if c.entity is EntityKind.ALGORITHM_TASK] == [
        (Status.SCHEDULED, 2), (Status.RUNNING, 2)]
