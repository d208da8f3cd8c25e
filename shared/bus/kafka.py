"""The Kafka adapter of the bus port (aiokafka).

Producer: idempotent, acks=all, so a retried send never duplicates a record
within a producer session and per-key order holds. Consumers: manual commits
only after the handler finished (at-least-once); duplicates from redelivery
are the consumers' job (per-key sequence numbers in the envelope).

Transport: mutual TLS only (``KafkaTLS``). Plaintext exists solely behind
``FERRY_KAFKA__INSECURE_PLAINTEXT=true`` and logs a warning every time a bus starts.
``KafkaSettings()`` built without an explicit ``tls`` takes it from the FERRY_KAFKA__TLS_*
environment (``tls_from_environment``): the one place the adapter reads the environment, so
every bus a tool, test or bench builds is as secure as the services' buses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import structlog

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.errors import (ClusterAuthorizationFailedError, CommitFailedError, GroupAuthorizationFailedError,
                             IllegalStateError, KafkaError, MessageSizeTooLargeError,
                             TopicAuthorizationFailedError)

from shared.bus.port import RECORD_OVERHEAD_BYTES, OnAssign, Record, TopicPartition, check_record_size
from shared.errors import ConfigurationError, RecordTooLarge, TransientError
from shared.topics import TopicSpec
from shared.plain import has_plain_fields, new, set_attr


_AUTHORIZATION_FAILED = (ClusterAuthorizationFailedError, TopicAuthorizationFailedError,
                         GroupAuthorizationFailedError)


@dataclass(frozen=True)
class KafkaTLS:
    """How a client proves who it is and checks the broker: a CA file and a certificate/key
    pair issued by that CA (``ferry certs``; see shared/pki.py)."""
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True
    insecure_plaintext: bool = False   # development only; warns loudly

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka keyword arguments (security_protocol, ssl_context)."""
        return _client_kwargs(self)


@functools.lru_cache(maxsize=32)
def _client_kwargs(tls: KafkaTLS) -> dict[str, Any]:
    if tls.insecure_plaintext:
        return {"security_protocol": "PLAINTEXT"}
    missing = [env for env, value in (("FERRY_KAFKA__TLS_CA_FILE", tls.ca_file),
                                      ("FERRY_KAFKA__TLS_CERT_FILE", tls.cert_file),
                                      ("FERRY_KAFKA__TLS_KEY_FILE", tls.key_file)) if not value]
    if missing:
        raise ConfigurationError(
            f"kafka TLS is not configured: {', '.join(missing)} not set. Ferry talks to Kafka over "
            f"mutual TLS only: issue certificates with `ferry certs` (or, on a dev machine, "
            f"eval \"$(ferry kafka env)\"), or set FERRY_KAFKA__INSECURE_PLAINTEXT=true for a "
            f"development broker without TLS")
    for name, path in (("tls_ca_file", tls.ca_file), ("tls_cert_file", tls.cert_file),
                       ("tls_key_file", tls.key_file)):
        if not Path(path).is_file():
            raise ConfigurationError(f"kafka {name}: {path} is not a readable file")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(f"kafka TLS files {tls.cert_file} / {tls.key_file} (CA {tls.ca_file}) "
                                 f"are unusable: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = tls.check_hostname
    return {"security_protocol": "SSL", "ssl_context": ctx}


def tls_from_environment(role: str | None = None) -> KafkaTLS:
    """The FERRY_KAFKA__* TLS settings (shared.settings.KafkaGroup) of this process; ``role``
    picks ``<role>.crt`` from FERRY_KAFKA__TLS_CERT_DIR when no certificate file is named."""
    from shared.settings import kafka_group_from_environment  # settings imports this module

    return kafka_group_from_environment().tls(role)


def _warn_if_plaintext(tls: KafkaTLS, bootstrap: str, client_id: str) -> None:
    if tls.insecure_plaintext:
        structlog.get_logger().warning(
            "kafka.INSECURE_PLAINTEXT", bootstrap=bootstrap, client_id=client_id,
            danger="FERRY_KAFKA__INSECURE_PLAINTEXT=true: Kafka traffic is neither encrypted nor "
                   "authenticated; anyone on the network can read and forge every message. "
                   "Development only.")


class _MemoPartitioner:
    """aiokafka's DefaultPartitioner (murmur2 of the key over all partitions), each key's hash
    remembered: the pure-Python murmur2 was a third of a send's CPU, and a service sends many
    records to few keys (the monitor: every transition of a task under its task id)."""

    def __init__(self, size: int = 1 << 16):
        self._size = size
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return self._default(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._size:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:9092"
    client_id: str = "ferry"
    max_request_bytes: int = 1_048_576   # must not exceed the broker's message.max.bytes
    linger_ms: int = 5
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    replication_factor: int = 1
    start_timeout_s: float = 60.0        # how long start() waits for a broker that is down
    tls: KafkaTLS = field(default_factory=tls_from_environment)


class KafkaBus:
    def __init__(self, settings: KafkaSettings):
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self.max_record_bytes = settings.max_request_bytes - RECORD_OVERHEAD_BYTES
        self._partitioner = _MemoPartitioner()

    async def start(self) -> None:
        """Connect; a broker that is down (restarting) is waited for, with backoff, up to
        `start_timeout_s`: a process that starts during a short outage (an executor started as
        the broker restarts) must not fail its task for it. Then TransientError."""
        s = self._settings
        _warn_if_plaintext(s.tls, s.bootstrap, s.client_id)
        deadline = time.monotonic() + s.start_timeout_s
        delay = 0.25
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=s.bootstrap, client_id=s.client_id, acks="all",
                enable_idempotence=True, linger_ms=s.linger_ms, max_request_size=s.max_request_bytes,
                # Per-partition batches up to 256 KiB (16 KiB by default): a burst of small records
                # costs the broker a few requests, not hundreds.
                max_batch_size=min(s.max_request_bytes, 256 * 1024), partitioner=self._partitioner,
                **s.tls.client_kwargs(),
            )
            try:
                await producer.start()
            except asyncio.CancelledError:
                # A caller's timeout or stop: the half-started client's connection and tasks go too.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 10)
                raise
            except _AUTHORIZATION_FAILED as exc:
                await producer.stop()
                raise ConfigurationError(f"kafka at {s.bootstrap} refused this client's identity "
                                         f"({s.tls.cert_file}): {exc}; its role has no ACL for this") from exc
            except KafkaError as exc:
                await producer.stop()
                if time.monotonic() + delay > deadline:
                    raise TransientError(f"kafka at {s.bootstrap} unavailable: {exc}") from exc
                structlog.get_logger().warning("kafka.unavailable_retrying", bootstrap=s.bootstrap,
                                               client_id=s.client_id, retry_in_s=delay, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            return

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # flushes pending sends first
            self._producer = None

    async def ping(self) -> None:
        """One metadata round trip to the cluster; raises when no broker answers."""
        await self._require_producer().client.fetch_all_metadata()

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.bootstrap,
                                    client_id=f"{self._settings.client_id}-admin",
                                    **self._settings.tls.client_kwargs())
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [NewTopic(s.name, s.partitions, self._settings.replication_factor, topic_configs=s.config())
                       for s in specs if s.name not in existing]
            if missing:
                await admin.create_topics(missing)
                # Metadata propagates asynchronously; wait until every topic is listed.
                for _ in range(100):
                    if {t.name for t in missing} <= set(await admin.list_topics()):
                        break
                    await asyncio.sleep(0.1)
        finally:
            await admin.close()

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaBus.start() was not awaited")
        return self._producer

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self.send_to_partitions([(topic, None, key, value)])

    async def send_batch(self, items: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        await self.send_to_partitions([(topic, None, key, value) for topic, key, value in items])

    async def send_to_partitions(self, items: Sequence[tuple[str, int | None, bytes | None, bytes]]) -> None:
        producer = self._require_producer()
        for topic, _, key, value in items:  # refuse before anything of the batch is sent
            check_record_size(topic, key, value, self.max_record_bytes)
        try:
            await asyncio.gather(*await self._enqueue(producer, items))
        except MessageSizeTooLargeError as exc:  # the broker's message.max.bytes is below ours
            raise RecordTooLarge(f"the broker refused a record as too large ({exc}); its message.max.bytes "
                                 f"is below max_request_bytes={self._settings.max_request_bytes}") from exc

    async def _enqueue(self, producer: AIOKafkaProducer,
                       items: Sequence[tuple[str, int | None, bytes | None, bytes]]) -> list[asyncio.Future]:
        """The items as one record batch per partition (in order; a full one is followed by the
        next), handed to the producer; the futures of their acknowledgements. producer.send()
        per record cost more CPU than the monitor's whole fold of an event; a batch built here
        appends each record in C. The partition of a keyless item is the partitioner's choice."""
        if len(items) == 1:  # one record: the producer's own batching (linger) may join it to others
            topic, partition, key, value = items[0]
            return [await producer.send(topic, value, key=key, partition=partition)]
        cluster, partitioner = producer.client.cluster, self._partitioner
        batches: dict[tuple[str, int], Any] = {}
        order: list[tuple[tuple[str, int], Any]] = []
        known: dict[str, list[int]] = {}  # each topic's partitions, looked up once per call
        for topic, partition, key, value in items:
            if partition is None:
                every = known.get(topic)
                if every is None:
                    partitions = cluster.partitions_for_topic(topic)
                    if not partitions:  # metadata not known yet: the producer waits for it
                        await producer.partitions_for(topic)
                        partitions = cluster.partitions_for_topic(topic)
                    every = known[topic] = sorted(partitions)
                partition = partitioner(key, every, every)
            where = (topic, partition)
            batch = batches.get(where)
            if batch is None or batch.append(key=key, value=value, timestamp=None) is None:
                batch = batches[where] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # a first record always fits
                order.append((where, batch))
        return [await producer.send_batch(batch, topic, partition=partition)
                for (topic, partition), batch in order]

    async def partition_count(self, topic: str) -> int:
        producer = self._require_producer()
        partitions = await producer.partitions_for(topic)
        return len(partitions)

    async def tail(self, topic: str, key: bytes) -> "KafkaConsumer":
        consumer = KafkaConsumer(self._settings, (), None, f"{self._settings.client_id}-tail")
        await consumer.start_tail(topic, key)
        return consumer

    async def tail_partitions(self, topic: str, partitions: Sequence[int]) -> "KafkaConsumer":
        """The round streams' consumer (services/executor/transport.py). The transport checks every
        message it hands on: a chunked payload against its SHA-256, every message against its
        sender's signature over the payload's digest. So the client's CRC-32C of each record batch,
        a tenth of its CPU per byte fetched, is skipped here: a corrupt record fails those checks
        and is dropped (a failed signature is counted), where a failed CRC would have raised out
        of poll() and ended the role. (Only under FERRY_FEDERATION__INSECURE_UNPINNED, which
        verifies no signatures, does a small unchunked message go unchecked; TLS still guards it
        on the wire.)"""
        consumer = KafkaConsumer(self._settings, (), None, f"{self._settings.client_id}-tail", check_crcs=False)
        await consumer.start_tail_partitions(topic, partitions)
        return consumer

    async def read_all(self, topic: str) -> list[Record]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self._settings.bootstrap, group_id=None,
                                    enable_auto_commit=False, client_id=f"{self._settings.client_id}-scan",
                                    **self._settings.tls.client_kwargs())
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()  # topic may be new to this client
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [KafkaTopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: list[Record] = []
            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in tps])

            while await behind():
                batches = await consumer.getmany(timeout_ms=500)
                out.extend(Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                           for msgs in batches.values() for m in msgs if m.offset < ends[KafkaTopicPartition(m.topic, m.partition)])
            return out
        finally:
            await consumer.stop()

    def consumer(self, topics: Sequence[str], group_id: str, *, client_id: str = "",
                 on_assign: OnAssign | None = None) -> "KafkaConsumer":
        return KafkaConsumer(self._settings, tuple(topics), group_id, client_id or self._settings.client_id,
                             on_assign)


class _SeekOnAssign(ConsumerRebalanceListener):
    def __init__(self, on_assign: OnAssign):
        self._on_assign = on_assign
        self.consumer: AIOKafkaConsumer | None = None

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        tps = frozenset(TopicPartition(tp.topic, tp.partition) for tp in assigned)
        for tp, offset in self._on_assign(tps).items():
            self.consumer.seek(KafkaTopicPartition(tp.topic, tp.partition), offset)


_RECORD_PLAIN = has_plain_fields(Record, ("topic", "partition", "offset", "key", "value", "timestamp_ms"))


class KafkaConsumer:
    def __init__(self, settings: KafkaSettings, topics: tuple[str, ...], group_id: str | None, client_id: str,
                 on_assign: OnAssign | None = None, *, check_crcs: bool = True):
        self._topics = topics
        self._listener = _SeekOnAssign(on_assign) if on_assign is not None else None
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap, group_id=group_id, client_id=client_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            fetch_max_bytes=max(52_428_800, settings.max_request_bytes),
            max_partition_fetch_bytes=max(1_048_576, settings.max_request_bytes), check_crcs=check_crcs,
            **settings.tls.client_kwargs(),
        )

    async def start(self) -> None:
        await self._consumer.start()
        if self._listener is not None:
            self._listener.consumer = self._consumer
        self._consumer.subscribe(list(self._topics), listener=self._listener)

    async def start_tail(self, topic: str, key: bytes) -> None:
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(topic) or {0}
        # The producer's DefaultPartitioner: murmur2 of the key over all partitions.
        await self._assign_at_end(topic, [(murmur2(key) & 0x7FFFFFFF) % len(partitions)])

    async def start_tail_partitions(self, topic: str, partitions: Sequence[int]) -> None:
        await self._consumer.start()
        await self._assign_at_end(topic, partitions)

    async def _assign_at_end(self, topic: str, partitions: Sequence[int]) -> None:
        tps = [KafkaTopicPartition(topic, p) for p in sorted(set(partitions))]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)  # resolve "end" now, before anything is sent

    async def stop(self) -> None:
        await self._consumer.stop()

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment())

    async def poll(self, timeout_s: float, max_records: int = 500) -> list[Record]:
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        ordered = sorted(batches, key=lambda t: (t.topic, t.partition))
        if not _RECORD_PLAIN:
            return [Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                    for tp in ordered for m in batches[tp]]
        # Record(...) without its frozen __init__ (a setattr per field): thousands per poll.
        out = []
        for tp in ordered:
            for m in batches[tp]:
                record = new(Record)
                set_attr(record, "__dict__", {"topic": m.topic, "partition": m.partition, "offset": m.offset,
                                               "key": m.key, "value": m.value, "timestamp_ms": m.timestamp})
                out.append(record)
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        owned = {tp for tp in self._consumer.assignment()}
        wanted = {KafkaTopicPartition(tp.topic, tp.partition): off for tp, off in offsets.items()}
        wanted = {tp: off for tp, off in wanted.items() if tp in owned}
        if not wanted:
            return
        try:
            await self._consumer.commit(wanted)
        except (CommitFailedError, IllegalStateError):
            # Partitions moved to another member mid-batch: it re-reads from the last
            # commit, and the consumers' per-key sequence numbers drop the duplicates.
            pass
