"""Monitor service: folds every fact about tasks into state, publishes what changed.

Per batch of records: decode, step() each, then publish the StateChanged
effects to ferry.task-events, write touched snapshots plus the consumed
offsets to the local LMDB in one transaction (the source of restart truth),
mirror the snapshots to the compacted ferry.task-state topic, and commit the
offsets to Kafka for observability.

How it keeps up with a backlog (bench/monitor_kafka.py measures it):
- A poll takes up to `max_batch` records (20,000), so an entity touched by many
  events of a backlog gets one snapshot per batch rather than one per few events.
- The batch is folded in chunks of `CHUNK` records with the cyclic garbage
  collector paused (the fold allocates only acyclic objects, and a full
  collection walks the whole state); between chunks the event loop gets a turn
  (HTTP API, Kafka heartbeats) and the chunk's StateChanged go to the producer,
  so the broker acknowledges them while the next chunk folds. All of them are
  acknowledged before the LMDB commit: a crash can repeat a StateChanged,
  never lose one.
- The ferry.task-state mirror is not the restart truth, so it does not hold up
  the next batch: one mirror send is in flight at a time (per-key order), and
  snapshots made meanwhile wait in a dict keyed by entity, newest wins; a
  backlog thus mirrors each entity about once per send, not once per batch.
  flush() waits for all of it (run() calls it before returning).
- Metrics are counted per batch, not per record or event.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections import Counter
from pathlib import Path

import structlog

from services.monitor.adapters.state_store import MonitorStateStore
from services.monitor.api import build_router
from services.monitor.core import CancelSiblings, MonitorState, restore, snapshot_flow, snapshot_task, step, touched
from services.monitor.core.effects import Anomaly, CommandRejected, DuplicateDropped
from services.monitor.core.liveness import lost_executors
from shared import topics
from shared.bus.port import Bus, Record, TopicPartition
from shared.clock import Clock
from shared.errors import MalformedMessage
from shared.events import CommandKind, StateChanged, TaskCommand
from shared.messaging import DeadLetters, EventPublisher
from shared.metrics import ANOMALIES, CONSUMED, PUBLISHED, TRANSITIONS
from shared.readiness import Readiness
from shared.settings import FerrySettings
from shared.wire import codec

INPUT_TOPICS = (topics.TASKS_PLANNED, topics.JOBS, topics.OBSERVATIONS, topics.PROGRESS, topics.COMMANDS,
                topics.FLOWS_REJECTED)
MAX_BATCH = 20_000  # records per poll, folded and committed together
CHUNK = 1_000       # records folded between turns of the event loop
GC_THRESHOLDS = (10_000, 20, 20)  # the monitor process's collector: (700, 10, 10) by default
_NOT_APPLIED = (Anomaly, CommandRejected, DuplicateDropped)
_TASK_EVENTS = topics.TASK_EVENTS.name
_COMMANDS = topics.COMMANDS.name
_TASK_STATE = topics.TASK_STATE.name


class _PausedGC:
    """The cyclic collector off for a stretch of allocation-heavy, cycle-free work.

    Folding builds new state entries (acyclic), and a growing state makes every
    full collection walk all of it: about a third of a backlog's CPU time went to
    collections. Reference counting still frees everything; cycles made meanwhile
    wait for the next collection after the stretch. Leaves a disabled GC disabled."""

    def __enter__(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc) -> None:
        if self._was_enabled:
            gc.enable()


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)      # version 4, RFC 4122 variant


def _uuid4_hexes(n: int) -> list[str]:
    """n values like uuid.uuid4().hex (the envelopes' event ids), from one urandom call."""
    raw = os.urandom(16 * n)
    from_bytes = int.from_bytes
    return [f"{from_bytes(raw[i:i + 16], 'big') & _UUID4_CLEAR | _UUID4_SET:032x}" for i in range(0, 16 * n, 16)]


def _next_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    """shared.bus.port.next_offsets without a TopicPartition per record."""
    last: dict[tuple[str, int], int] = {}
    get = last.get
    for r in records:
        key = (r.topic, r.partition)
        if r.offset >= get(key, -1):
            last[key] = r.offset
    return {TopicPartition(topic, partition): offset + 1 for (topic, partition), offset in last.items()}


class _Batch:
    """What folding one batch produced, before it is committed."""

    __slots__ = ("task_ids", "flow_ids", "consumed", "transitions", "outbox", "published")

    def __init__(self) -> None:
        self.task_ids: set[str] = set()
        self.flow_ids: set[str] = set()
        self.consumed: Counter[str] = Counter()
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.outbox: list[tuple[str, str, object]] = []   # (topic, key, event) not yet handed to the bus
        self.published: Counter[str] = Counter()


class MonitorService:
    name = "monitor"
    default_port = 8083

    def __init__(self, bus: Bus, clock: Clock, store: MonitorStateStore, max_attempts: int = 3, *,
                 max_batch: int = MAX_BATCH, lost_after_s: float = 60.0):
        self._bus = bus
        self._clock = clock
        self._store = store
        self._max_batch = max_batch
        self._lost_after_ms = int(lost_after_s * 1000)
        self._listening_since_ms: int | None = None
        self._next_liveness_ms = 0
        self._declared_lost: set[tuple[str, int, int]] = set()
        with _PausedGC():
            self.state: MonitorState = restore(store.snapshots(), max_attempts)
        self._offsets = store.offsets()
        self.readiness = Readiness(bus, clock)
        self.readiness.restored = True  # restore() above folded every stored snapshot
        self.publisher = EventPublisher(bus, self.name, clock)
        self._dead_letters = DeadLetters(self.publisher, self.name, clock)
        self._log = structlog.get_logger(service=self.name)
        self.router = build_router(lambda: self.state, self._publish_command)
        self.changed = asyncio.Event()  # set after every batch: lets waiters re-check state
        self._sending: asyncio.Future | None = None    # the newest StateChanged send; chained in order
        self._mirroring: asyncio.Future | None = None  # the ferry.task-state send in flight
        self._unmirrored: dict[str, bytes] = {}        # snapshots waiting for it, newest per key

    async def _publish_command(self, command: TaskCommand) -> None:
        await self.publisher.publish(topics.COMMANDS.name, command.flow_id, command)

    def _positions(self, assigned: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        # Partitions the stored state has never seen start from the beginning, not
        # from the group's commit: the state must be the fold of the whole log.
        return {tp: self._offsets.get(tp, 0) for tp in assigned}

    async def handle_batch(self, records: list[Record]) -> dict[TopicPartition, int]:
        """Fold `records` and commit the result; returns the offsets now stored (one past the
        last record of each partition), which run() commits to Kafka."""
        batch = _Batch()
        for start in range(0, len(records), CHUNK):
            if start:
                await asyncio.sleep(0)  # a long batch must not starve the API and the Kafka clients
            with _PausedGC():
                malformed = self._fold(records[start:start + CHUNK], batch)
            for record, exc in malformed:
                await self._dead_letters.send(record, exc)
            self._send_outbox(batch)
        if self._sending is not None:
            sending, self._sending = self._sending, None
            await sending  # every StateChanged acknowledged before the state that caused it is stored
        for topic, n in batch.consumed.items():
            CONSUMED.labels(self.name, topic).inc(n)
        for (entity, status), n in batch.transitions.items():
            TRANSITIONS.labels(entity, status).inc(n)
        for topic, n in batch.published.items():
            PUBLISHED.labels(self.name, topic).inc(n)
        state = self.state
        snapshots = {f"t:{t}": snapshot_task(state, t) for t in batch.task_ids}
        snapshots.update({f"f:{f}": snapshot_flow(state, f) for f in batch.flow_ids})
        offsets = _next_offsets(records)
        self._store.save(snapshots, offsets)
        self._offsets.update(offsets)
        self._unmirrored.update(snapshots)
        self._mirror()
        self.changed.set()
        self.changed = asyncio.Event()
        return offsets

    def _fold(self, records: list[Record], batch: _Batch) -> list[tuple[Record, MalformedMessage]]:
        """step() every record into self.state; returns the undecodable ones."""
        malformed = []
        decode = codec.decode
        outbox, transitions, consumed = batch.outbox, batch.transitions, batch.consumed
        task_ids, flow_ids = batch.task_ids, batch.flow_ids
        for record in records:
            try:
                envelope = decode(record.value)
            except MalformedMessage as exc:
                malformed.append((record, exc))
                continue
            before = self.state
            self.state, effects = step(before, envelope)
            t, f = touched(before, self.state, envelope)
            task_ids.update(t)
            flow_ids.update(f)
            consumed[record.topic] += 1
            for effect in effects:
                if type(effect) is StateChanged or isinstance(effect, StateChanged):
                    outbox.append((_TASK_EVENTS, effect.task_id or effect.flow_id, effect))
                    transitions[(effect.entity.name, effect.to_status.name)] += 1
                elif isinstance(effect, CancelSiblings):
                    outbox.append((_COMMANDS, effect.flow_id, TaskCommand(
                        f"cancel-siblings-{envelope.event_id}", CommandKind.CANCEL, effect.flow_id,
                        effect.task_id, "monitor", effect.reason)))
                elif isinstance(effect, _NOT_APPLIED):
                    ANOMALIES.labels(type(effect).__name__).inc()
                    # Redelivered duplicates are routine under at-least-once: counted, not logged.
                    if type(effect) is not DuplicateDropped:
                        self._log.info("monitor.not_applied", effect=type(effect).__name__,
                                       reason=getattr(effect, "reason", ""), event_id=envelope.event_id)
        return malformed

    def _send_outbox(self, batch: _Batch) -> None:
        """Hand the outbox to the bus, after every earlier send (EventPublisher.publish_many's
        envelopes and bytes, in order; the published-events metric is counted per batch)."""
        if not batch.outbox:
            return
        wrap, encode = self.publisher.wrap, codec.encode
        items = [(topic, key.encode(), encode(wrap(topic, key, event, event_id)))
                 for (topic, key, event), event_id in zip(batch.outbox, _uuid4_hexes(len(batch.outbox)))]
        batch.published.update(topic for topic, _, _ in batch.outbox)
        batch.outbox.clear()
        self._sending = asyncio.ensure_future(self._send_after(self._sending, items))

    async def _send_after(self, previous: asyncio.Future | None, items: list[tuple[str, bytes, bytes]]) -> None:
        if previous is not None:
            await previous  # two send_batch calls must not interleave: sequences would go out of order
        await self._bus.send_batch(items)

    def _mirror(self) -> None:
        """Start sending the waiting snapshots unless a mirror send is still in flight."""
        mirroring = self._mirroring
        if mirroring is not None:
            if not mirroring.done():
                return
            self._mirroring = None
            mirroring.result()  # a failed send fails the batch, as an awaited one would have
        if self._unmirrored:
            items = [(_TASK_STATE, key.encode(), blob) for key, blob in self._unmirrored.items()]
            self._unmirrored = {}
            self._mirroring = asyncio.ensure_future(self._bus.send_batch(items))

    async def _declare_lost(self) -> None:
        """Publish a loss for each RUNNING executor silent too long (core/liveness.py).

        Only when caught up (called after an empty poll) and only after listening, with
        the broker reachable, for a whole `lost_after` period: a monitor back from a
        restart or a broker outage has not yet heard the heartbeats sent meanwhile."""
        now = self._clock.now_ms()
        if not self.readiness.listening:
            self._listening_since_ms = None
            return
        if self._listening_since_ms is None:
            self._listening_since_ms = now
        if now - self._listening_since_ms < self._lost_after_ms or now < self._next_liveness_ms:
            return
        self._next_liveness_ms = now + min(5_000, max(self._lost_after_ms // 4, 100))
        for observation in lost_executors(self.state, now, self._lost_after_ms):
            key = (observation.algo_task_id, observation.attempt, observation.observed_at_ms)
            if key in self._declared_lost:
                continue
            self._declared_lost.add(key)
            self._log.warning("executor.lost", algo_task=observation.algo_task_id, attempt=observation.attempt,
                              reason=observation.reason)
            await self.publisher.publish(topics.OBSERVATIONS.name, observation.task_id, observation)

    async def flush(self) -> None:
        """Wait until every snapshot stored so far is mirrored to ferry.task-state."""
        while self._mirroring is not None or self._unmirrored:
            mirroring = self._mirroring
            if mirroring is not None and not mirroring.done():
                await asyncio.wait([mirroring])
            self._mirror()

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics(topics.CATALOGUE)
        consumer = self._bus.consumer([t.name for t in INPUT_TOPICS], group_id="ferry-monitor",
                                      client_id="monitor", on_assign=self._positions)
        await consumer.start()
        self.readiness.watch(consumer)
        try:
            while not stop.is_set():
                records = await consumer.poll(0.2, max_records=self._max_batch)
                if records:
                    await consumer.commit(await self.handle_batch(records))
                else:
                    self._mirror()  # idle: send what waited for the last mirror send
                    await self._declare_lost()
            await self.flush()
        finally:
            for pending in (self._sending, self._mirroring):
                if pending is not None and not pending.done():
                    pending.cancel()
            try:
                await consumer.stop()
            finally:
                self._store.close()

    def health(self) -> dict:
        return {"ok": True, "flows": len(self.state.flows), "tasks": len(self.state.tasks)}


def build(settings: FerrySettings, bus: Bus, clock: Clock) -> MonitorService:
    """The monitor of its own process (`ferry monitor`), which also owns the process's collector.

    What exists once the state is restored (the state, imported modules) lives as long
    as the process: it is frozen out of the collector's reach before the collector runs
    again, else the first collections after a restore walk every restored object (about
    a fifth of a 100k-task start-up). And the state only grows, so every full collection
    walks all of it: with the default thresholds a backlog paid one every ~10k events,
    a third of its time; GC_THRESHOLDS makes them rare (the fold makes no cyclic garbage)."""
    store = MonitorStateStore(Path(settings.monitor.state_dir))
    with _PausedGC():
        service = MonitorService(bus, clock, store, settings.monitor.max_attempts,
                                 lost_after_s=settings.monitor.executor_lost_after_s)
        gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return service


def main() -> int:
    from shared.runtime import run_service

    return run_service(build, "monitor")
