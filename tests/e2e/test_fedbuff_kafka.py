"""Asynchronous (FedBuff) training with one party five times slower, as processes on a real broker.

The same flow (tests/e2e/straggler.py: hospital-c holds five times the rows)
runs with `aggregation: sync` and `async` through the splitter, scheduler
(local runner: executors are processes, so parties really train in parallel)
and monitor, and the monitor's per-round history shows what a user would
notice: synchronous rounds all wait for hospital-c, while asynchronously the
fast parties go on training newer versions and hospital-c's late updates are
taken in, down-weighted by their staleness.
"""

from __future__ import annotations

from tests.e2e.platform import new_flow_id, platform_fixture
from tests.e2e.straggler import (ROWS, SLOW, prepare_straggler_parties, round_series, straggler_flow,
                                 trained_versions)

platform = platform_fixture("fedbuff-e2e")
ROUNDS = 10


def test_a_slow_party_does_not_stall_async_training_and_its_stale_updates_still_count(platform, work_dir):
    prepare_straggler_parties(work_dir)
    runs = {}
    for aggregation in ("sync", "async"):
        flow_id = new_flow_id(f"straggler-{aggregation}")
        platform.submit(straggler_flow(aggregation, ROUNDS), flow_id)
        view = platform.wait_flow(flow_id, timeout_s=600)
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
    assert len(staleness) == ROUNDS and max(staleness) > 0, staleness
    # The same number of model versions takes less time, for no worse a model (scored by the
    # coordinator on rows no client trains on, and by the clients on their held-out rows).
    sync_s = sum(r["metrics"]["round_s"] for r in sync_series["coordinator"])
    async_s = sum(r["metrics"]["round_s"] for r in async_series["coordinator"])
    assert async_s < sync_s, (async_s, sync_s)
    for key in ("test_accuracy", "server_accuracy"):
        assert async_metrics[key] >= sync_metrics[key] - 0.05, (key, async_metrics, sync_metrics)
