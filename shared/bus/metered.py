"""A bus wrapper that counts the bytes a process produces and fetches, per topic.

For benchmarks and tests that check the data plane's traffic: what the
broker took in (key + value of every record sent) and what consumers were
handed (every record a poll returned, whether the reader wanted it or not).
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from shared.bus.port import Bus, Consumer, Record, TopicPartition


class Traffic:
    def __init__(self) -> None:
        self.produced: Counter[str] = Counter()
        self.fetched: Counter[str] = Counter()

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"produced": dict(self.produced), "fetched": dict(self.fetched)}


def _size(key: bytes | None, value: bytes) -> int:
    return len(key or b"") + len(value)


class MeteredConsumer:
    def __init__(self, inner: Consumer, traffic: Traffic):
        self._inner, self._traffic = inner, traffic

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        records = await self._inner.poll(timeout_s, max_records)
        for r in records:
            self._traffic.fetched[r.topic] += _size(r.key, r.value)
        return records

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._inner.commit(offsets)

    def assignment(self) -> frozenset[TopicPartition]:
        return self._inner.assignment()


class MeteredBus:
    def __init__(self, inner: Bus, traffic: Traffic | None = None):
        self._inner = inner
        self.traffic = traffic or Traffic()
        self.max_record_bytes = inner.max_record_bytes

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def ensure_topics(self, specs) -> None:
        await self._inner.ensure_topics(specs)

    def _count(self, items) -> None:
        for topic, *_, key, value in items:
            self.traffic.produced[topic] += _size(key, value)

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self._inner.send(topic, key, value)
        self._count([(topic, key, value)])

    async def send_batch(self, items: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        await self._inner.send_batch(items)
        self._count(items)

    async def send_to_partitions(self, items) -> None:
        await self._inner.send_to_partitions(items)
        self._count(items)

    async def partition_count(self, topic: str) -> int:
        return await self._inner.partition_count(topic)

    def consumer(self, topics, group_id: str, **kwargs) -> MeteredConsumer:
        return MeteredConsumer(self._inner.consumer(topics, group_id, **kwargs), self.traffic)

    async def tail(self, topic: str, key: bytes) -> MeteredConsumer:
        return MeteredConsumer(await self._inner.tail(topic, key), self.traffic)

    async def tail_partitions(self, topic: str, partitions) -> MeteredConsumer:
        return MeteredConsumer(await self._inner.tail_partitions(topic, partitions), self.traffic)

    async def read_all(self, topic: str) -> list[Record]:
        records = await self._inner.read_all(topic)
        for r in records:
            self.traffic.fetched[r.topic] += _size(r.key, r.value)
        return records
