"""The splitter service on a real broker: plans, field-level rejections, redelivery, restarts."""

from __future__ import annotations

import asyncio
import uuid

from services.splitter.app import SplitterService
from services.splitter.core.flow_document import parse_flow_document
from shared import topics
from shared.algorithms import AlgorithmRegistry
from shared.bus.kafka import KafkaBus, KafkaSettings
from shared.clock import SystemClock
from shared.messaging import EventPublisher
from shared.wire import codec

FLOW = """
flow: service-test
steps:
  - {name: first, algorithm: ferry.noop, version: "1", parties: {worker: [node-a, node-b]}}
  - {name: second, algorithm: ferry.noop, version: "1", parties: {worker: [node-a]}, depends_on: [first]}
"""
BAD = """
flow: broken
steps:
  - {name: a, algorithm: ferry.nope, version: "1", parties: {worker: [node-a]}, depends_on: [b]}
  - {name: b, algorithm: ferry.noop, version: "1", params: {sleep_s: -1}, parties: {worker: [node-a]}, depends_on: [a]}
"""


async def _events(bus, topic: str, flow_ids: set[str]):
    out = []
    for record in await bus.read_all(topic):
        envelope = codec.decode(record.value)
        if envelope.event.flow_id in flow_ids:
            out.append(envelope)
    return out


async def _until(predicate, timeout_s: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError("condition not reached")


async def _run_splitter(bus, stop):
    service = SplitterService(bus, SystemClock(), AlgorithmRegistry.from_entry_points())
    return service, asyncio.create_task(service.run(stop))


async def test_plans_rejects_and_never_duplicates_on_real_kafka(kafka_bootstrap):
    bus = KafkaBus(KafkaSettings(bootstrap=kafka_bootstrap, client_id=f"splitter-test-{uuid.uuid4().hex[:6]}"))
    await bus.start()
    stop = asyncio.Event()
    _, task = await _run_splitter(bus, stop)
    tag = uuid.uuid4().hex[:6]
    good = parse_flow_document(FLOW, default_flow_id=f"good-{tag}")
    bad = parse_flow_document(BAD, default_flow_id=f"bad-{tag}")
    garbage_id = f"garbage-{tag}"
    upstream = EventPublisher(bus, "upstream", SystemClock())
    try:
        await upstream.publish(topics.FLOWS.name, good.flow_id, good)
        await upstream.publish(topics.FLOWS.name, bad.flow_id, bad)
        await bus.send(topics.FLOWS.name, garbage_id.encode(), b"\x08\x96\x01 not an envelope")
        ids = {good.flow_id, bad.flow_id, garbage_id}

        planned = await _until(lambda: _events_at_least(bus, topics.TASKS_PLANNED.name, {good.flow_id}, 2))
        planned.sort(key=lambda e: e.event.index)  # keyed by task: two partitions, no order between them
        assert [e.event.step for e in planned] == ["first", "second"]
        assert planned[1].event.depends_on == (planned[0].event.task_id,)
        assert [len(e.event.algorithm_tasks) for e in planned] == [2, 1]

        rejected = await _until(lambda: _events_at_least(bus, topics.FLOWS_REJECTED.name, ids - {good.flow_id}, 2))
        by_flow = {e.event.flow_id: e.event for e in rejected}
        paths = {err.path: err.reason for err in by_flow[bad.flow_id].errors}
        assert "unknown algorithm 'ferry.nope'" in paths["steps[0].algorithm"]
        assert "must be >= 0" in paths["steps[1].params.sleep_s"]
        assert any("cycle" in reason for reason in paths.values())
        assert by_flow[garbage_id].errors[0].path == "$"
        letters = await _until(lambda: _letters(bus, garbage_id))
        assert letters[0].original_value == b"\x08\x96\x01 not an envelope"

        # Redelivery while running, then a restarted splitter seeing the flow once more.
        await upstream.publish(topics.FLOWS.name, good.flow_id, good)
        stop.set()
        await task
        stop = asyncio.Event()
        _, task = await _run_splitter(bus, stop)
        await upstream.publish(topics.FLOWS.name, good.flow_id, good)
        marker = parse_flow_document(FLOW, default_flow_id=f"marker-{tag}")
        await upstream.publish(topics.FLOWS.name, marker.flow_id, marker)
        await _until(lambda: _events_at_least(bus, topics.TASKS_PLANNED.name, {marker.flow_id}, 2))
        await asyncio.sleep(1.0)
        again = await _events(bus, topics.TASKS_PLANNED.name, {good.flow_id})
        assert len(again) == 2
        assert len(await _events(bus, topics.FLOWS_REJECTED.name, {bad.flow_id})) == 1
    finally:
        stop.set()
        await task
        await bus.stop()


async def _events_at_least(bus, topic, flow_ids, n):
    found = await _events(bus, topic, flow_ids)
    return found if len(found) >= n else None


async def _letters(bus, key: str):
    letters = [codec.decode(r.value).event for r in await bus.read_all(topics.DEAD_LETTERS.name)]
    found = [d for d in letters if d.original_key == key.encode()]
    return found or None
