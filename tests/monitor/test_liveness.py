"""Lost executors: a silent RUNNING executor is declared lost after lost_after; one that has not
yet spoken at all (still starting: importing torch on a loaded node) gets the startup grace too."""

from __future__ import annotations

from services.monitor.core.liveness import lost_executors
from shared.events import HEARTBEAT_STAGE, ExecutorProgress, JobAction, Phase

from tests.monitor.builders import ALGO, FLOW, TASK, Feed, job, plan, run, seen

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
