"""Events on the bus: numbered publishing and a consume loop that never stalls.

EventPublisher wraps events in Envelopes with per-key sequence numbers. Kafka
keeps order only within one partition, so a sequence runs per (topic, key) and
the producer identity names the topic: a scheduler's JobEvents and
Observations for one task are two independent streams, and a consumer reading
the two topics at different speeds must not take one for a replay of the
other. The identity also includes an incarnation id, so a restarted service
starts fresh sequences instead of being mistaken for a replay of its old self.

consume() hands each decoded envelope to a handler and commits after it
returns. Undecodable bytes and events the handler rejects as invalid go to the
dead-letter topic with the reason and the original bytes; the loop goes on.
Transient handler errors are retried with the given backoff policy.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Awaitable, Callable, Sequence

import structlog

from shared import events, topics
from shared.bus.port import Bus, Consumer, Record, next_offsets
from shared.clock import Clock
from shared.errors import FerryError, MalformedMessage, ValidationFailed
from shared.metrics import CONSUMED, DEAD_LETTERED, PUBLISHED
from shared.retry import BackoffPolicy
from shared.plain import has_plain_fields, new, set_attr
from shared.wire import codec

_ENVELOPE_PLAIN = has_plain_fields(events.Envelope, ("event", "event_id", "key", "sequence", "producer",
                                                      "timestamp_ms", "schema_version")) \
    and events.Envelope.__dataclass_fields__["schema_version"].default == 1

Handler = Callable[[events.Envelope, Record], Awaitable[None]]


class EventPublisher:
    def __init__(self, bus: Bus, service: str, clock: Clock, incarnation: str | None = None):
        self._bus = bus
        self._clock = clock
        self.producer = f"{service}/{incarnation or uuid.uuid4().hex[:12]}"
        self._service = service
        self._sequences: dict[tuple[str, str], int] = {}

    def wrap(self, topic: str, key: str, event: events.Event, event_id: str | None = None) -> events.Envelope:
        seq = self._sequences.get((topic, key), 0) + 1
        self._sequences[(topic, key)] = seq
        return events.Envelope(event=event, event_id=event_id or uuid.uuid4().hex, key=key,
                               sequence=seq, producer=f"{self.producer}@{topic}",
                               timestamp_ms=self._clock.now_ms())

    def wrap_many(self, items: Sequence[tuple[str, str, events.Event]]) -> list[events.Envelope]:
        """wrap() of many events; their ids (128 random bits each, as hex like uuid4().hex) come from
        one os.urandom call, not one uuid4() each: the monitor wraps a StateChanged per transition."""
        raw = os.urandom(16 * len(items)).hex()
        if not _ENVELOPE_PLAIN:
            wrap = self.wrap
            return [wrap(topic, key, event, raw[32 * i:32 * i + 32]) for i, (topic, key, event) in enumerate(items)]
        # As wrap() does, without a frozen __init__ per envelope (a setattr per field) and with one
        # clock read: the monitor wraps a batch's StateChanged here, thousands at once.
        now, sequences, producers, out = self._clock.now_ms(), self._sequences, {}, []
        for i, (topic, key, event) in enumerate(items):
            seq = sequences.get((topic, key), 0) + 1
            sequences[(topic, key)] = seq
            producer = producers.get(topic)
            if producer is None:
                producer = producers[topic] = f"{self.producer}@{topic}"
            envelope = new(events.Envelope)
            set_attr(envelope, "__dict__", {
                "event": event, "event_id": raw[32 * i:32 * i + 32], "key": key, "sequence": seq,
                "producer": producer, "timestamp_ms": now, "schema_version": 1})
            out.append(envelope)
        return out

    async def publish(self, topic: str, key: str, event: events.Event, event_id: str | None = None) -> events.Envelope:
        return await self.publish_wrapped(topic, self.wrap(topic, key, event, event_id))

    async def publish_wrapped(self, topic: str, envelope: events.Envelope) -> events.Envelope:
        """Send an envelope wrap() made earlier: its sequence number and timestamp are from then."""
        await self._bus.send(topic, envelope.key.encode(), codec.encode(envelope))
        PUBLISHED.labels(self._service, topic).inc()
        return envelope

    async def publish_many(self, items: Sequence[tuple[str, str, events.Event]]) -> list[events.Envelope]:
        envelopes = self.wrap_many(items)
        await self._bus.send_batch([(topic, key.encode(), codec.encode(env))
                                    for (topic, key, _), env in zip(items, envelopes)])
        for topic, _, _ in items:
            PUBLISHED.labels(self._service, topic).inc()
        return envelopes


    async def publish_to_partitions(self, items: Sequence[tuple[str, int, str, events.Event]]) -> list[events.Envelope]:
        """Like publish_many, each (topic, partition, key, event) placed in the partition it names."""
        envelopes = [self.wrap(topic, key, event) for topic, _, key, event in items]
        await self._bus.send_to_partitions([(topic, partition, key.encode(), codec.encode(env))
                                            for (topic, partition, key, _), env in zip(items, envelopes)])
        for topic, _, _, _ in items:
            PUBLISHED.labels(self._service, topic).inc()
        return envelopes


class DeadLetters:
    def __init__(self, publisher: EventPublisher, consumer_name: str, clock: Clock):
        self._publisher = publisher
        self._consumer_name = consumer_name
        self._clock = clock

    async def send(self, record: Record, error: BaseException) -> None:
        letter = events.DeadLetter(
            source_topic=record.topic, partition=record.partition, offset=record.offset,
            original_key=record.key or b"", original_value=record.value, reason=str(error),
            error_type=type(error).__name__, consumer=self._consumer_name, at_ms=self._clock.now_ms())
        key = (record.key or b"").decode("utf-8", "replace")
        await self._publisher.publish(topics.DEAD_LETTERS.name, key, letter)
        DEAD_LETTERED.labels(self._consumer_name, record.topic).inc()


async def _handle_with_retries(handler: Handler, envelope: events.Envelope, record: Record,
                               retry: BackoffPolicy, clock: Clock, log) -> None:
    delays = retry.delays()
    while True:
        try:
            await handler(envelope, record)
            return
        except FerryError as exc:
            delay = next(delays, None) if exc.retriable else None
            if delay is None:
                raise
            log.warning("handler.retry", error=str(exc), delay_s=delay)
            await clock.sleep(delay)


async def consume(consumer: Consumer, handler: Handler, *, dead_letters: DeadLetters,
                  stop: asyncio.Event, clock: Clock, service: str,
                  retry: BackoffPolicy = BackoffPolicy(), poll_timeout_s: float = 0.2,
                  on_malformed: Callable[[Record, MalformedMessage], Awaitable[None]] | None = None) -> None:
    log = structlog.get_logger(service=service)
    while not stop.is_set():
        records = await consumer.poll(poll_timeout_s)
        for record in records:
            try:
                envelope = codec.decode(record.value)
            except MalformedMessage as exc:
                log.warning("message.malformed", topic=record.topic, offset=record.offset, reason=str(exc))
                await dead_letters.send(record, exc)
                if on_malformed is not None:
                    await on_malformed(record, exc)
                continue
            bound = log.bind(event_type=envelope.type_name, key=envelope.key, event_id=envelope.event_id)
            try:
                await _handle_with_retries(handler, envelope, record, retry, clock, bound)
            except (ValidationFailed, MalformedMessage) as exc:
                bound.warning("message.invalid", reason=str(exc))
                await dead_letters.send(record, exc)
            except Exception as exc:  # a bug or exhausted retries must not stall the partition
                bound.exception("message.handler_failed")
                await dead_letters.send(record, exc)
            CONSUMED.labels(service, record.topic).inc()
        if records:
            await consumer.commit(next_offsets(records))
