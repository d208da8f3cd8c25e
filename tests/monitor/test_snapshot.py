"""Snapshots: exact round trips, and restart = uninterrupted fold."""

from __future__ import annotations

import json
import math
import random

import pytest

from services.monitor.core import (MonitorState, fold, restore, snapshot_all, snapshot_flow, snapshot_task, step,
                                   touched, touched_since)
from shared.events import JobAction, Phase

from tests.monitor.builders import Feed, job, plan, progress, run, seen
from tests.monitor.scenarios import deliver, generate


def _incremental(envelopes, snapshots: dict[str, bytes], state: MonitorState | None = None) -> MonitorState:
    """Fold while rewriting only the snapshots each step touched, as the service will."""
    state = state if state is not None else MonitorState()
    for env in envelopes:
        after, _ = step(state, env)
        tasks, flows = touched(state, after, env)
        for task_id in tasks:
            snapshots[f"task:{task_id}"] = snapshot_task(after, task_id)
        for flow_id in flows:
            snapshots[f"flow:{flow_id}"] = snapshot_flow(after, flow_id)
        state = after
    return state


def test_a_snapshot_round_trips_every_field():
    feed = Feed()
    state, _ = run(feed, [plan(algos=("a1", "a2")), job(JobAction.CREATED, "a1"), seen(Phase.RUNNING, "a1"),
                          progress(2, "a1", metrics={"loss": 0.1, "auc": 1e-300}), seen(Phase.RUNNING, "zz"),
                          seen(Phase.FAILED, "a1", exit_code=137, retriable=True),
                          progress(1, task_id="t2")])  # parked: t2 is not planned
    restored = restore(snapshot_all(state))
    assert restored == state
    assert restored.tasks["t2"].parked == state.tasks["t2"].parked != ()


def test_metrics_that_are_not_finite_round_trip():
    """A diverging model reports a NaN or infinite loss; its snapshot must restore it as such,
    not as null (which the fast JSON writer would make of it)."""
    feed = Feed()
    state, _ = run(feed, [plan(algos=("a1",)), job(JobAction.CREATED, "a1"), seen(Phase.RUNNING, "a1"),
                          progress(1, "a1", metrics={"loss": float("nan")}),
                          progress(2, "a1", metrics={"loss": float("inf"), "auc": 0.5})])
    algo = restore(snapshot_all(state)).tasks["t1"].algos[0]
    assert math.isinf(algo.metrics["loss"]) and algo.metrics["auc"] == 0.5
    assert math.isnan(algo.rounds[0].metrics["loss"]) and math.isinf(algo.rounds[1].metrics["loss"])


def test_snapshots_are_versioned_json():
    feed = Feed()
    state, _ = run(feed, [plan()])
    data = json.loads(snapshot_task(state, "t1"))
    assert (data["format"], data["kind"], data["sequences"]) == (1, "task", [["splitter/0", "t1", 1]])
    with pytest.raises(ValueError):
        restore([json.dumps({**data, "format": 99}).encode()])


@pytest.mark.parametrize("seed", range(40))
def test_restart_from_snapshot_and_replay_equals_an_uninterrupted_fold(seed):
    rng = random.Random(seed)
    envelopes = deliver(rng, generate(rng, flows=3))
    uninterrupted, _ = fold(MonitorState(), envelopes)
    cut = rng.randint(0, len(envelopes))
    snapshots: dict[str, bytes] = {}
    before_crash = _incremental(envelopes[:cut], snapshots)
    restarted = restore(snapshots.values())
    assert restarted == before_crash
    # The offsets committed with the snapshot may lag it: the replayed overlap must be dropped.
    replay_from = max(0, cut - rng.randint(0, 5))
    finished = _incremental(envelopes[replay_from:], snapshots, restarted)
    assert finished == uninterrupted
    assert restore(snapshots.values()) == uninterrupted


def test_touched_names_every_entry_a_step_replaced():
    for seed in range(20):
        rng = random.Random(seed)
        state = MonitorState()
        for env in deliver(rng, generate(rng, flows=2)):
            after, _ = step(state, env)
            tasks, flows = touched(state, after, env)
            assert set(tasks) == {t for t in after.tasks if after.tasks[t] is not state.tasks.get(t)}
            assert set(flows) == {f for f in after.flows if after.flows[f] is not state.flows.get(f)}
            state = after


@pytest.mark.parametrize("seed", range(20))
def test_touched_since_names_every_entry_a_batch_replaced_and_batched_snapshots_restore_exactly(seed):
    """The service snapshots once per batch what the batch's events touched (touched_since); a
    restart from those snapshots equals the state at the end of the batch."""
    rng = random.Random(seed)
    state, snapshots = MonitorState(), {}
    envelopes = deliver(rng, generate(rng, flows=3))
    i = 0
    while i < len(envelopes):
        batch = envelopes[i:i + rng.randint(1, 40)]
        i += len(batch)
        after, _ = fold(state, batch)
        flow_ids = {getattr(env.event, "flow_id", "") for env in batch}
        task_ids = {getattr(env.event, "task_id", "") for env in batch}
        tasks, flows = touched_since(state, after, flow_ids, task_ids)
        assert set(tasks) == {t for t in after.tasks if after.tasks[t] is not state.tasks.get(t)}
        assert set(flows) == {f for f in after.flows if after.flows[f] is not state.flows.get(f)}
        snapshots.update({f"task:{t}": snapshot_task(after, t) for t in tasks})
        snapshots.update({f"flow:{f}": snapshot_flow(after, f) for f in flows})
        assert restore(snapshots.values()) == after
        state = after


def test_parked_facts_are_snapshotted_from_the_bytes_they_arrived_as():
    """The service hands snapshot_task the record bytes parked envelopes were decoded from; the
    snapshot then restores to the same state as one that encodes them again."""
    from shared.wire import codec

    feed = Feed()
    arriving = [progress(1, task_id="t2"), seen(Phase.RUNNING, task_id="t2")]  # before t2's plan: parked
    received = [codec.decode(codec.encode(feed(event))) for event in arriving]
    state, _ = fold(MonitorState(), received)
    assert len(state.tasks["t2"].parked) == 2
    wire = {id(env): (env, codec.encode(env)) for env in received}
    assert restore([snapshot_task(state, "t2", wire)]).tasks["t2"] == state.tasks["t2"]
    assert snapshot_task(state, "t2", wire) == snapshot_task(state, "t2")
