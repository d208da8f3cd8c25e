"""Asynchronous (FedBuff) training with one party five times slower, as processes on a real broker.

The same flow (tests/e2e/straggler.py: equal IID rows, hospital-c's executor
limited to a fifth of the others' CPU by a cgroup quota) runs with
`aggregation: sync` and `async` through the splitter, scheduler (local runner:
executors are processes, so parties really train in parallel) and monitor,
and the monitor's per-round history shows what a user would notice:
synchronous rounds all wait for hospital-c, while asynchronously the fast
parties go on training newer versions, hospital-c's late updates are taken
in, down-weighted by their staleness, and the model reaches the synchronous
run's final accuracy sooner. How much sooner is bench/fedbuff.py's to measure;
here only the direction is asserted, with room for a loaded machine.
"""

from __future__ import annotations

from tests.e2e.platform import new_flow_id, platform_fixture
from tests.e2e.straggler import (PLATFORM_ENV, ROWS, SLOW, accuracy_curve, prepare_straggler_parties, round_series,
                                 straggler_flow, time_to, trained_versions)

platform = platform_fixture("fedbuff-e2e", env=PLATFORM_ENV)
ROUNDS = 6
VERSIONS = 3 * ROUNDS  # a version applies two updates, not a round's three


def test_a_slow_party_does_not_stall_async_training_and_its_stale_updates_still_count(platform, work_dir):
    prepare_straggler_parties(work_dir)
    runs = {}
    for aggregation, rounds in (("sync", ROUNDS), ("async", VERSIONS)):
        flow_id = new_flow_id(f"straggler-{aggregation}")
        platform.submit(straggler_flow(aggregation, rounds), flow_id)
        view = platform.wait_flow(flow_id, timeout_s=900)
        assert view["status"] == "SUCCEEDED", (view, platform.logs())
        aggregator = next(a for a in view["tasks"][0]["algorithm_tasks"] if a["role"] == "aggregator")
        runs[aggregation] = (aggregator["metrics"], round_series(platform, flow_id))

    sync_metrics, sync_series = runs["sync"]
    async_metrics, async_series = runs["async"]
    # Synchronous: every party trains every round, so every round lasts as long as the slow one's.
    assert {p: trained_versions(sync_series[p]) for p in ROWS} == dict.fromkeys(ROWS, ROUNDS)
    # Asynchronous: the fast parties train on more versions than the slow one...
    trained = {p: trained_versions(async_series[p]) for p in ROWS}
    assert min(trained[p] for p in ROWS if p != SLOW) >= 1.5 * trained[SLOW], trained
    # ...whose updates arrive late and still enter buffers, weighted down by their staleness.
    staleness = [r["metrics"].get("staleness_mean", 0.0) for r in async_series["coordinator"]]
    assert len(staleness) == VERSIONS and max(staleness) > 0, staleness
    # The model reaches the synchronous run's final accuracy (scored by the coordinator on rows no
    # client trains on) in less of the aggregator's time, and ends no worse.
    sync_curve, async_curve = accuracy_curve(sync_series), accuracy_curve(async_series)
    target = sync_curve[-1][2]
    assert time_to(async_curve, target) is not None, (target, async_curve)
    assert time_to(async_curve, target) < time_to(sync_curve, target), (sync_curve, async_curve)
    for key in ("test_accuracy", "server_accuracy"):
        assert async_metrics[key] >= sync_metrics[key] - 0.05, (key, async_metrics, sync_metrics)
