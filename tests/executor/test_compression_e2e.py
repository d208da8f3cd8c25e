"""Compressed updates inside ferry.fedavg, end to end on the embedded platform.

The demo's train step runs plain and with int8 and top-k updates on the same
data and seeds; the round topic is read back to count what the clients sent.
"""

from __future__ import annotations

import asyncio
import copy
import time

import pytest

from services.demo import DEMO_FLOW, prepare_parties
from services.embedded import EmbeddedPlatform
from services.executor.transport import Reassembler
from services.splitter.core.flow_document import load_document, parse_flow_document
from shared import topics
from shared.events import RoundKind
from shared.wire import codec

METHODS = {"int8": {}, "topk": {"topk_fraction": 0.25}}


def _flow() -> dict:
    document = copy.deepcopy(dict(load_document(DEMO_FLOW.read_text())))
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
    work = tmp_path_factory.mktemp("compression")
    prepare_parties(work)
    flow = parse_flow_document(_flow(), default_flow_id=f"compress-{int(time.time())}")

    async def go():
        async with EmbeddedPlatform(work) as platform:
            await platform.submit(flow)
            view = await platform.wait_for(flow.flow_id, timeout_s=300)
            sent: dict[str, int] = {}
            assembler = Reassembler()
            for record in platform.bus.records(topics.ROUNDS.name):
                m = assembler.add(codec.decode(record.value).event)
                if m is not None and m.kind == RoundKind.UPDATE:
                    step = m.task_id.rsplit(".", 1)[-1]
                    sent[step] = sent.get(step, 0) + sum(len(t.data) for t in m.tensors)
            return view, sent

    return asyncio.run(go())


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
