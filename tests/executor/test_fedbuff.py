"""aggregation: async (FedBuff) inside ferry.fedavg on the embedded platform, and what it refuses.

The process-level test with a party five times slower is tests/e2e/test_fedbuff_kafka.py.
"""

from __future__ import annotations

import pytest

from shared.builtin_algorithms import FEDAVG
from tests.executor.demo_run import aggregator_of, demo_document, run_demo_variant

ROUNDS = 12


def _async_flow() -> dict:
    document = demo_document()
    train = next(s for s in document["steps"] if s["name"] == "train")
    plain = {**train, "name": "train-sync", "params": dict(train["params"])}
    train["params"].update(rounds=ROUNDS, aggregation="async", async_buffer_size=2, async_max_staleness=3)
    plain["params"].update(rounds=ROUNDS)
    document["steps"] = [s for s in document["steps"] if s["name"] in ("validate", "standardise", "train")] + [plain]
    return document


def test_async_training_applies_buffers_of_updates_and_reaches_the_sync_accuracy(tmp_path):
    demo = run_demo_variant(tmp_path, _async_flow(), "fedbuff")
    assert demo.view["status"] == "SUCCEEDED", demo.view
    _, fedbuff = aggregator_of(demo.view, "train")
    _, sync = aggregator_of(demo.view, "train-sync")
    reports = [p for p in demo.progress if p.algo_task_id == fedbuff["algo_task_id"] and p.stage == "training"]
    assert [p.round for p in reports] == list(range(1, ROUNDS + 1))
    assert all(p.metrics["clients"] == 2 for p in reports)  # each version is one buffer of two updates
    assert fedbuff["metrics"]["test_accuracy"] >= sync["metrics"]["test_accuracy"] - 0.03, (fedbuff, sync)
    assert fedbuff["metrics"]["test_accuracy"] > 0.9


@pytest.mark.parametrize("params,field", [
    ({"secure_aggregation": True}, "aggregation"),
    ({"dp": "central", "dp_noise_multiplier": 1.0}, "aggregation"),
    ({"strategy": "median"}, "aggregation"),
    ({"fraction_fit": 0.5}, "fraction_fit"),
])
def test_async_refuses_what_a_mixed_buffer_cannot_do_naming_the_field(params, field):
    problems = [p for check in FEDAVG.checks for p in check({**FEDAVG.with_defaults({}), "aggregation": "async",
                                                             **params})]
    assert field in [name for name, _ in problems], problems
