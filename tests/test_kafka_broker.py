"""End-to-end check of the dev broker: real aiokafka clients against a real Kafka."""
from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.bus.kafka import tls_from_environment

# ``kafka_bootstrap`` comes from tests/kafka_broker_fixture.py via tests/conftest.py.


async def _consume(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=f"g-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **tls_from_environment().client_kwargs())
    await consumer.start()
    got: list = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(got) < n:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(records)
    finally:
        await consumer.stop()
    return got


async def test_produce_then_consume_in_order(kafka_bootstrap: str) -> None:
    topic = f"ferry-smoke-{uuid.uuid4().hex[:8]}"
    # One partition: Kafka orders per partition only, and the test asserts total order.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, **tls_from_environment().client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    sent = [(f"client-{i}".encode(), f"update-{i}".encode()) for i in range(3)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                enable_idempotence=True, **tls_from_environment().client_kwargs())
    await producer.start()
    try:
        for key, value in sent:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    got = await _consume(kafka_bootstrap, topic, len(sent))
    assert [(r.key, r.value) for r in got] == sent
    assert [r.offset for r in got] == [0, 1, 2]


async def test_auto_created_topic_has_three_partitions(kafka_bootstrap: str) -> None:
    topic = f"ferry-auto-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, **tls_from_environment().client_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x", key=b"k")  # auto-creates the topic
        assert producer.client.cluster.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        await producer.stop()
