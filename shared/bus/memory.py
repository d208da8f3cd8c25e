"""The in-process bus: the embedded default and the fast unit-test bus.

It mimics Kafka's consumer-group semantics closely enough for the services
(partitions by key, per-group committed offsets, rebalancing across members,
redelivery of uncommitted records), but lives in one event loop.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Mapping, Sequence

from shared.bus.port import DEFAULT_MAX_RECORD_BYTES, OnAssign, Record, TopicPartition, check_record_size
from shared.topics import TopicSpec

DEFAULT_PARTITIONS = 3


class _Group:
    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}
        self.members: list["InMemoryConsumer"] = []

    def rebalance(self, bus: "InMemoryBus") -> None:
        # Round-robin over members in join order, as Kafka's RoundRobinAssignor does.
        wanted = sorted({tp for m in self.members for tp in bus.partitions_of(m.topics)})
        for m in self.members:
            m._assign(frozenset())
        for i, tp in enumerate(tp for tp in wanted):
            candidates = [m for m in self.members if tp.topic in m.topics]
            if candidates:
                owner = candidates[i % len(candidates)]
                owner._assign(owner._assigned | {tp})


class InMemoryBus:
    def __init__(self, default_partitions: int = DEFAULT_PARTITIONS,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES):
        self._default_partitions = default_partitions
        self.max_record_bytes = max_record_bytes
        self._logs: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._arrived = asyncio.Condition()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        for spec in specs:
            self._create(spec.name, spec.partitions)

    def _create(self, topic: str, partitions: int) -> list[list[Record]]:
        if topic not in self._logs:
            self._logs[topic] = [[] for _ in range(partitions)]
            for group in self._groups.values():
                if any(topic in m.topics for m in group.members):
                    group.rebalance(self)
        return self._logs[topic]

    def partitions_of(self, topics: Sequence[str]) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in topics if t in self._logs
                for p in range(len(self._logs[t]))]

    def _append(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        log = self._logs.get(topic) or self._create(topic, self._default_partitions)
        if partition is None:
            partition = self.partition_for(topic, key) if key is not None else len(log[0]) % len(log)
        elif not 0 <= partition < len(log):
            raise ValueError(f"topic {topic} has {len(log)} partitions, not {partition + 1}")
        part = log[partition]
        part.append(Record(topic, partition, len(part), key, value, time.time_ns() // 1_000_000))

    def partition_for(self, topic: str, key: bytes) -> int:
        log = self._logs.get(topic) or self._create(topic, self._default_partitions)
        return zlib.crc32(key) % len(log)

    async def tail(self, topic: str, key: bytes) -> "_TailConsumer":
        return await self.tail_partitions(topic, [self.partition_for(topic, key)])

    async def tail_partitions(self, topic: str, partitions: Sequence[int]) -> "_TailConsumer":
        log = self._logs.get(topic) or self._create(topic, self._default_partitions)
        return _TailConsumer(self, {TopicPartition(topic, p): len(log[p]) for p in sorted(set(partitions))})

    async def partition_count(self, topic: str) -> int:
        return len(self._logs.get(topic) or self._create(topic, self._default_partitions))

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self.send_batch([(topic, key, value)])

    async def send_batch(self, items: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        await self.send_to_partitions([(topic, None, key, value) for topic, key, value in items])

    async def send_to_partitions(self, items: Sequence[tuple[str, int | None, bytes | None, bytes]]) -> None:
        for topic, _, key, value in items:  # all or nothing, as a refused Kafka batch
            check_record_size(topic, key, value, self.max_record_bytes)
        for topic, partition, key, value in items:
            self._append(topic, key, value, partition)
        async with self._arrived:
            self._arrived.notify_all()

    def consumer(self, topics: Sequence[str], group_id: str, *, client_id: str = "",
                 on_assign: OnAssign | None = None) -> "InMemoryConsumer":
        return InMemoryConsumer(self, tuple(topics), group_id, on_assign)

    async def read_all(self, topic: str) -> list[Record]:
        return self.records(topic)

    def records(self, topic: str) -> list[Record]:
        """Every record of a topic (synchronous, for tests and the demo's report)."""
        return [r for part in self._logs.get(topic, []) for r in part]

    def _group(self, group_id: str) -> _Group:
        return self._groups.setdefault(group_id, _Group())


class InMemoryConsumer:
    def __init__(self, bus: InMemoryBus, topics: tuple[str, ...], group_id: str, on_assign: OnAssign | None = None):
        self._bus = bus
        self._on_assign = on_assign
        self.topics = topics
        self._group = bus._group(group_id)
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._position: dict[TopicPartition, int] = {}

    def _assign(self, tps: frozenset[TopicPartition]) -> None:
        self._assigned = tps
        self._position = {tp: self._group.committed.get(tp, 0) for tp in tps}
        if self._on_assign is not None and tps:
            self._position.update({tp: off for tp, off in self._on_assign(tps).items() if tp in tps})

    async def start(self) -> None:
        self._group.members.append(self)
        self._group.rebalance(self._bus)

    async def stop(self) -> None:
        if self in self._group.members:
            self._group.members.remove(self)
            self._assign(frozenset())
            self._group.rebalance(self._bus)

    def assignment(self) -> frozenset[TopicPartition]:
        return self._assigned

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp in sorted(self._assigned):
            part = self._bus._logs[tp.topic][tp.partition]
            pos = self._position[tp]
            batch = part[pos:pos + max_records - len(out)]
            self._position[tp] = pos + len(batch)
            out.extend(batch)
            if len(out) >= max_records:
                break
        return out

    async def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            records = self._take(max_records)
            if records:
                return records
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return []
            async with self._bus._arrived:
                try:
                    await asyncio.wait_for(self._bus._arrived.wait(), remaining)
                except TimeoutError:
                    return self._take(max_records)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._assigned:
                self._group.committed[tp] = offset


class _TailConsumer:
    def __init__(self, bus: InMemoryBus, positions: dict[TopicPartition, int]):
        self._bus = bus
        self._positions = positions

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp, position in self._positions.items():
            part = self._bus._logs[tp.topic][tp.partition]
            batch = part[position:position + max_records - len(out)]
            self._positions[tp] = position + len(batch)
            out.extend(batch)
        return out

    async def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (records := self._take(max_records)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            async with self._bus._arrived:
                try:
                    await asyncio.wait_for(self._bus._arrived.wait(), remaining)
                except TimeoutError:
                    pass
        return records

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        pass  # no group: nothing to commit to
