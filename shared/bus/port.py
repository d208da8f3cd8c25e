"""The bus port: what services need from a log-structured message bus.

Semantics every adapter honours (tests/bus/test_bus_contract.py checks them
against the in-process bus and a real Kafka broker):
- records with the same key land in the same partition, in send order;
- consumers of one group share the partitions, each record goes to one member;
- different groups each see every record;
- a consumer resumes from its group's committed offsets, so a record handled
  but not committed is delivered again after a restart (at-least-once);
- a record whose key and value together exceed `max_record_bytes` is refused
  with RecordTooLarge before anything is sent (Kafka's limit is per request:
  the producer's max.request.size and the broker's message.max.bytes; the
  in-process bus enforces the same number, so a payload that fits in tests
  fits on a real broker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

from shared.errors import RecordTooLarge
from shared.topics import TopicSpec

KAFKA_MAX_REQUEST_BYTES = 1_048_576   # Kafka's default max.request.size / ~message.max.bytes
# What a one-record batch adds to key + value on the wire: batch header (61 bytes) and the
# record's own varint framing (at most ~21 bytes), rounded up.
RECORD_OVERHEAD_BYTES = 128
DEFAULT_MAX_RECORD_BYTES = KAFKA_MAX_REQUEST_BYTES - RECORD_OVERHEAD_BYTES


def check_record_size(topic: str, key: bytes | None, value: bytes, limit: int) -> None:
    size = len(key or b"") + len(value)
    if size > limit:
        raise RecordTooLarge(f"record for topic {topic}: key + value = {size} bytes, over the bus's "
                             f"max_record_bytes={limit}; split the payload (RoundChannel chunks it) or "
                             f"raise the producer's max_request_bytes and the broker's message.max.bytes together")


@dataclass(frozen=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


# Called with the partitions a consumer was just given; returns where to start
# reading each (absent: the group's committed offset). Lets a service that
# stores its offsets with its own state resume exactly where that state ends.
OnAssign = Callable[[frozenset["TopicPartition"]], Mapping["TopicPartition", int]]


class Consumer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        """Records after the current position, or [] when none arrive within timeout_s."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store, for each partition, the offset of the next record to read."""

    def assignment(self) -> frozenset[TopicPartition]: ...


class Bus(Protocol):
    max_record_bytes: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create missing topics; existing ones are left as they are."""

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Returns once the record is durably appended (acks=all on Kafka)."""

    async def send_batch(self, items: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        """Like send for each item, in order, waiting once for all acknowledgements."""

    async def send_to_partitions(self, items: Sequence[tuple[str, int, bytes | None, bytes]]) -> None:
        """Like send_batch, but each (topic, partition, key, value) lands in the partition it names.

        For explicit placement (a round's per-recipient inboxes): order holds per partition.
        """

    async def partition_count(self, topic: str) -> int:
        """How many partitions the topic has (it must exist)."""

    async def tail_partitions(self, topic: str, partitions: Sequence[int]) -> Consumer:
        """A started, group-less consumer of exactly these partitions, positioned at their ends."""

    def consumer(self, topics: Sequence[str], group_id: str, *, client_id: str = "",
                 on_assign: OnAssign | None = None) -> Consumer:
        """A consumer in `group_id` that starts from committed offsets, else the beginning."""

    async def tail(self, topic: str, key: bytes) -> Consumer:
        """A started, group-less consumer of the one partition `key` maps to, positioned at its end.

        For conversations (a training step's round messages): every participant reads
        what is sent after it started listening, and only the partition of its key.
        """

    async def read_all(self, topic: str) -> list[Record]:
        """Every record the topic holds now, all partitions, outside any consumer group.

        For rebuilding state from a service's own output log at start-up.
        """


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """Offsets to commit once `records` are handled: one past the last of each partition."""
    last: dict[tuple[str, int], int] = {}  # plain tuples: a TopicPartition per record was a hot spot
    get = last.get
    for r in records:
        key = (r.topic, r.partition)
        if r.offset >= get(key, -1):
            last[key] = r.offset
    return {TopicPartition(topic, partition): offset + 1 for (topic, partition), offset in last.items()}
