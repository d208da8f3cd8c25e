"""One contract, every bus adapter: the in-process bus and a real Kafka broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared import topics
from shared.bus.memory import InMemoryBus
from shared.bus.port import DEFAULT_MAX_RECORD_BYTES, TopicPartition, next_offsets
from shared.clock import SystemClock
from shared.errors import RecordTooLarge
from shared.events import FlowRejected
from shared.messaging import DeadLetters, EventPublisher, consume
from shared.topics import TopicSpec
from shared.wire import codec


@pytest.fixture(params=["memory", "kafka"])
async def bus(request):
    if request.param == "memory":
        yield InMemoryBus()
        return
    from shared.bus.kafka import KafkaBus, KafkaSettings

    bootstrap = request.getfixturevalue("kafka_bootstrap")
    kafka = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="contract"))
    await kafka.start()
    yield kafka
    await kafka.stop()


async def _topic(bus, partitions: int = 3) -> str:
    name = f"contract.{uuid.uuid4().hex[:10]}"
    await bus.ensure_topics([TopicSpec(name, "k", "bytes", (), (), partitions=partitions)])
    return name


async def _drain(consumers, want: int, timeout_s: float = 30.0):
    got = {id(c): [] for c in consumers}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while sum(map(len, got.values())) < want and asyncio.get_running_loop().time() < deadline:
        for c in consumers:
            got[id(c)].extend(await c.poll(0.2))
    return [got[id(c)] for c in consumers]


async def _until_assigned(consumers, timeout_s: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if all(c.assignment() for c in consumers):
            return
        for c in consumers:
            assert await c.poll(0.1) == []  # nothing has been sent yet
    raise AssertionError("consumers never got partitions")


async def test_same_key_same_partition_in_send_order(bus):
    topic = await _topic(bus)
    sent = [(f"key-{i % 3}".encode(), f"v{i}".encode()) for i in range(30)]
    for key, value in sent:
        await bus.send(topic, key, value)
    consumer = bus.consumer([topic], f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    [records] = await _drain([consumer], 30)
    await consumer.stop()
    assert len(records) == 30
    for key in {k for k, _ in sent}:
        mine = [r for r in records if r.key == key]
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in mine] == [v for k, v in sent if k == key]


async def test_group_members_share_partitions_without_duplicates(bus):
    topic = await _topic(bus, partitions=4)
    group = f"g-{uuid.uuid4().hex[:6]}"
    a, b = bus.consumer([topic], group, client_id="a"), bus.consumer([topic], group, client_id="b")
    await a.start()
    await b.start()
    await _until_assigned([a, b])
    assert not (a.assignment() & b.assignment())
    await bus.send_batch([(topic, f"k{i}".encode(), str(i).encode()) for i in range(40)])
    got_a, got_b = await _drain([a, b], 40)
    await a.stop()
    await b.stop()
    values = sorted(int(r.value) for r in got_a + got_b)
    assert values == list(range(40))
    assert got_a and got_b


async def test_every_group_sees_every_record(bus):
    topic = await _topic(bus)
    await bus.send_batch([(topic, b"k", str(i).encode()) for i in range(10)])
    seen = []
    for group in ("one", "two"):
        c = bus.consumer([topic], f"{group}-{uuid.uuid4().hex[:6]}")
        await c.start()
        [records] = await _drain([c], 10)
        await c.stop()
        seen.append([r.value for r in records])
    assert seen[0] == seen[1] == [str(i).encode() for i in range(10)]


async def test_restart_resumes_after_last_commit_and_redelivers_the_rest(bus):
    topic = await _topic(bus, partitions=1)
    group = f"g-{uuid.uuid4().hex[:6]}"
    await bus.send_batch([(topic, b"k", str(i).encode()) for i in range(6)])
    first = bus.consumer([topic], group)
    await first.start()
    [records] = await _drain([first], 6)
    await first.commit(next_offsets(records[:3]))   # handled three, crashed before the rest
    await first.stop()
    second = bus.consumer([topic], group)
    await second.start()
    [again] = await _drain([second], 3)
    await second.stop()
    assert [r.value for r in again] == [b"3", b"4", b"5"]


async def test_read_all_returns_everything_outside_groups(bus):
    topic = await _topic(bus)
    await bus.send_batch([(topic, f"k{i}".encode(), str(i).encode()) for i in range(12)])
    records = await bus.read_all(topic)
    assert sorted(int(r.value) for r in records) == list(range(12))


async def test_malformed_record_goes_to_dead_letters_and_the_rest_is_handled(bus):
    topic = await _topic(bus, partitions=1)
    await bus.ensure_topics([topics.DEAD_LETTERS])
    clock = SystemClock()
    publisher = EventPublisher(bus, "contract", clock)
    good = publisher.wrap(topic, "f1", FlowRejected("f1", ()))
    await bus.send(topic, b"bad", b"\x00not-protobuf\xff")
    await bus.send(topic, b"f1", codec.encode(good))
    handled, stop = [], asyncio.Event()

    async def handler(envelope, record):
        handled.append(envelope)
        stop.set()

    consumer = bus.consumer([topic], f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    await asyncio.wait_for(consume(consumer, handler, dead_letters=DeadLetters(publisher, "contract", clock),
                                   stop=stop, clock=clock, service="contract"), 30)
    await consumer.stop()
    assert [e.event for e in handled] == [good.event]
    letters = [codec.decode(r.value).event for r in await bus.read_all(topics.DEAD_LETTERS.name)]
    mine = [d for d in letters if d.source_topic == topic]
    assert len(mine) == 1
    assert mine[0].original_value == b"\x00not-protobuf\xff"
    assert "Envelope" in mine[0].reason


async def test_on_assign_positions_override_the_group_commit(bus):
    topic = await _topic(bus, partitions=1)
    await bus.send_batch([(topic, b"k", str(i).encode()) for i in range(5)])
    from shared.bus.port import TopicPartition

    asked = []

    def on_assign(tps):
        asked.append(set(tps))
        return {TopicPartition(topic, 0): 3}

    consumer = bus.consumer([topic], f"g-{uuid.uuid4().hex[:6]}", on_assign=on_assign)
    await consumer.start()
    [records] = await _drain([consumer], 2)
    await consumer.stop()
    assert asked and asked[0] == {TopicPartition(topic, 0)}
    assert [r.value for r in records] == [b"3", b"4"]


async def test_tail_sees_only_what_is_sent_after_it_for_its_key(bus):
    topic = await _topic(bus, partitions=3)
    await bus.send(topic, b"task-1", b"before")
    tail = await bus.tail(topic, b"task-1")
    await bus.send_batch([(topic, b"task-1", b"after-1"), (topic, b"task-1", b"after-2")])
    [records] = await _drain([tail], 2, timeout_s=15)
    await tail.stop()
    assert [r.value for r in records if r.key == b"task-1"] == [b"after-1", b"after-2"]


def test_sequences_run_per_topic_so_streams_read_at_different_speeds_never_look_replayed():
    publisher = EventPublisher(InMemoryBus(), "scheduler", SystemClock())
    jobs = [publisher.wrap("ferry.jobs", "t1", FlowRejected("f", ())) for _ in range(2)]
    seen = [publisher.wrap("ferry.observations", "t1", FlowRejected("f", ())) for _ in range(2)]
    assert [e.sequence for e in jobs] == [e.sequence for e in seen] == [1, 2]
    assert jobs[0].producer != seen[0].producer


async def test_explicit_partitions_are_kept_and_tailed_exactly(bus):
    topic = await _topic(bus, partitions=4)
    assert await bus.partition_count(topic) == 4
    await bus.send_to_partitions([(topic, 1, b"k", b"before")])
    tail = await bus.tail_partitions(topic, [1, 3])
    await bus.send_to_partitions([(topic, p, b"k", f"p{p}-{i}".encode()) for i in range(3) for p in range(4)])
    [records] = await _drain([tail], 6)
    await tail.stop()
    assert {r.partition for r in records} == {1, 3}          # nothing from partitions 0 and 2, nor from before
    assert [r.value for r in records if r.partition == 3] == [b"p3-0", b"p3-1", b"p3-2"]
    assert tail.assignment() == frozenset({TopicPartition(topic, 1), TopicPartition(topic, 3)})


async def test_a_record_over_the_size_limit_is_refused_and_one_at_the_limit_goes_through(bus):
    topic = await _topic(bus, partitions=1)
    limit = bus.max_record_bytes
    assert limit == DEFAULT_MAX_RECORD_BYTES  # the same number on every bus, derived from Kafka's default
    key = b"k"
    with pytest.raises(RecordTooLarge, match="max_record_bytes"):
        await bus.send_batch([(topic, key, b"small"), (topic, key, b"x" * (limit - len(key) + 1))])
    await bus.send(topic, key, b"y" * (limit - len(key)))
    records = await bus.read_all(topic)
    assert [len(r.value) for r in records] == [limit - len(key)]  # the refused batch left nothing behind
