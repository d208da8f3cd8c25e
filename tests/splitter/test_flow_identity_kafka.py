"""Every submission gets an answer (real broker, the splitter service, the CLI's submit).

A flow id names one flow: the same content again is an idempotent no-op, other
content under it is rejected with a FlowRejected naming the conflict while the
first flow stands, and the CLI says which. A flow without an id is dead-lettered
with the reason instead of being answered under an empty key. An oversized
document is refused before it is read.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid

import pytest

from services.flow_cli import _submit, load_flow
from services.splitter.core.flow_document import MAX_DOCUMENT_BYTES, parse_flow_document
from shared import topics
from shared.bus.kafka import KafkaBus, KafkaSettings
from shared.clock import SystemClock
from shared.errors import ValidationFailed
from shared.events import FlowSubmitted
from shared.messaging import EventPublisher
from tests.splitter.test_splitter_service_kafka import FLOW, _events, _run_splitter, _until

OTHER = FLOW.replace("node-b", "node-c")


async def test_same_id_same_content_is_a_no_op_and_other_content_a_named_conflict(kafka_bootstrap):
    bus = KafkaBus(KafkaSettings(bootstrap=kafka_bootstrap, client_id=f"identity-{uuid.uuid4().hex[:6]}"))
    await bus.start()
    stop = asyncio.Event()
    _, task = await _run_splitter(bus, stop)
    flow_id = f"same-{uuid.uuid4().hex[:8]}"
    try:
        first = parse_flow_document(FLOW, default_flow_id=flow_id)
        assert await _submit(first, kafka_bootstrap, 30) == ("planned", "2 tasks planned")
        outcome, detail = await _submit(parse_flow_document(FLOW, default_flow_id=flow_id), kafka_bootstrap, 5)
        assert outcome == "identical" and "nothing to do" in detail
        outcome, detail = await _submit(parse_flow_document(OTHER, default_flow_id=flow_id), kafka_bootstrap, 5)
        assert outcome == "conflict" and "already taken by a flow with different content" in detail

        # An upstream producer that does not ask first: the splitter answers with the conflict.
        publisher = EventPublisher(bus, "upstream", SystemClock())
        await publisher.publish(topics.FLOWS.name, flow_id, parse_flow_document(OTHER, default_flow_id=flow_id))
        rejected = await _until(lambda: _events(bus, topics.FLOWS_REJECTED.name, {flow_id}))
        (error,) = rejected[0].event.errors
        assert error.path == "id" and "different content" in error.reason and "first flow stands" in error.reason
        planned = await _events(bus, topics.TASKS_PLANNED.name, {flow_id})
        assert len(planned) == 2 and not any("node-c" in str(p.event.algorithm_tasks) for p in planned)
        assert len(await _events(bus, topics.FLOWS_REJECTED.name, {flow_id})) == 1

        # A restarted splitter still knows which content the id was decided on.
        stop.set()
        await task
        stop = asyncio.Event()
        _, task = await _run_splitter(bus, stop)
        await publisher.publish(topics.FLOWS.name, flow_id, parse_flow_document(FLOW, default_flow_id=flow_id))
        await publisher.publish(topics.FLOWS.name, flow_id, parse_flow_document(OTHER, default_flow_id=flow_id))
        await _until(lambda: _count(bus, flow_id, 2))
        await asyncio.sleep(1.0)
        assert len(await _events(bus, topics.TASKS_PLANNED.name, {flow_id})) == 2  # identical: nothing new
    finally:
        stop.set()
        await task
        await bus.stop()


async def _count(bus, flow_id: str, n: int) -> bool:
    return len(await _events(bus, topics.FLOWS_REJECTED.name, {flow_id})) >= n


async def test_a_flow_without_an_id_is_dead_lettered_not_answered_under_an_empty_key(kafka_bootstrap):
    bus = KafkaBus(KafkaSettings(bootstrap=kafka_bootstrap, client_id=f"identity-{uuid.uuid4().hex[:6]}"))
    await bus.start()
    stop = asyncio.Event()
    _, task = await _run_splitter(bus, stop)
    marker = f"no-id-{uuid.uuid4().hex[:8]}"
    try:
        nameless = FlowSubmitted("", marker, parse_flow_document(FLOW, default_flow_id="x").steps)
        await EventPublisher(bus, "upstream", SystemClock()).publish(topics.FLOWS.name, "", nameless)

        async def letter():
            from shared.wire import codec
            for record in await bus.read_all(topics.DEAD_LETTERS.name):
                dead = codec.decode(record.value).event
                if marker.encode() in dead.original_value:
                    return dead
            return None
        dead = await _until(letter)
        assert dead.source_topic == topics.FLOWS.name and "flow id must not be empty" in dead.reason
        assert not await _events(bus, topics.FLOWS_REJECTED.name, {""})
    finally:
        stop.set()
        await task
        await bus.stop()


def test_a_50_mb_document_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.write(FLOW.encode())
        f.write(b"# padding\n" * (5 * 1024 * 1024))
    assert path.stat().st_size > 50_000_000
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ValidationFailed) as refused:
        load_flow(str(path), "huge-flow")
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    (error,) = refused.value.errors
    assert error.path == "$" and f"the limit is {MAX_DOCUMENT_BYTES}" in error.reason
    assert elapsed < 0.5 and peak < 1_000_000, (elapsed, peak)


def test_an_empty_id_is_refused_at_the_edge(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW)
    with pytest.raises(ValidationFailed) as refused:
        load_flow(str(path), "  ")
    assert refused.value.errors[0].path == "--id"
