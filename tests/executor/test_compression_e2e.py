"""Compressed updates inside ferry.fedavg, end to end on the embedded platform.

The demo's train step runs plain and with int8 and top-k updates on the same
data and seeds; the round topic is read back to count what the clients sent.
"""

from __future__ import annotations

import copy

import pytest

from shared.events import RoundKind
from tests.executor.demo_run import demo_document, run_demo_variant

METHODS = {"int8": {}, "topk": {"topk_fraction": 0.25}}


def _flow() -> dict:
    document = demo_document()
    train = next(s for s in document["steps"] if s["name"] == "train")
    steps = [s for s in document["steps"] if s["name"] in ("validate", "standardise", "train")]
    for method, extra in METHODS.items():
        step = copy.deepcopy(train)
        step["name"] = f"train-{method}"
        step["params"].update({"compression": method, **extra})
        steps.append(step)
    document["steps"] = steps
    return document


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    demo = run_demo_variant(tmp_path_factory.mktemp("compression"), _flow(), "compress")
    sent: dict[str, int] = {}
    for m in demo.rounds:
        if m.kind == RoundKind.UPDATE:
            step = m.task_id.rsplit(".", 1)[-1]
            sent[step] = sent.get(step, 0) + sum(len(t.data) for t in m.tensors)
    return demo.view, sent


def _accuracy(view, step: str) -> float:
    task = next(t for t in view["tasks"] if t["step"] == step)
    return next(a for a in task["algorithm_tasks"] if a["role"] == "aggregator")["metrics"]["test_accuracy"]


@pytest.mark.parametrize("method,fewer", [("int8", 3.5), ("topk", 1.9)])
def test_compressed_updates_cost_little_accuracy_and_far_fewer_bytes(run, method, fewer):
    view, sent = run
    assert view["status"] == "SUCCEEDED", view
    plain, compressed = _accuracy(view, "train"), _accuracy(view, f"train-{method}")
    assert plain > 0.9 and compressed >= plain - 0.02, (plain, compressed)
    assert sent["train"] / sent[f"train-{method}"] >= fewer, sent


def test_compression_with_secure_aggregation_is_refused_naming_the_field():
    from shared.builtin_algorithms import FEDAVG

    problems = [p for check in FEDAVG.checks for p in check({"secure_aggregation": True, "compression": "int8"})]
    assert [field for field, _ in problems] == ["compression"] and "32-bit ring" in problems[0][1]
    assert not [p for check in FEDAVG.checks for p in check({"secure_aggregation": True, "compression": "none"})]
