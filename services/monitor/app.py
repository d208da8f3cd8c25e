"""Monitor service: folds every fact about tasks into state, publishes what changed.

Per batch of records (up to MAX_BATCH per poll): decode and step() each, then
one send of the batch's StateChanged (ferry.task-events) and commands. A batch
that closes a checkpoint also sends the snapshots of every entry changed since
the last checkpoint (mirrored to the compacted ferry.task-state topic); once
all of it is acknowledged, those snapshots plus the consumed offsets go to the
local LMDB in one transaction (the source of restart truth), then the offsets
are committed to Kafka for observability. A checkpoint closes when the consumer
is caught up, or after CHECKPOINT_EVENTS events or CHECKPOINT_MS of folding:
a backlog is snapshotted once per entry per checkpoint, not once per batch,
and a crash re-folds at most that much. Metrics are counted per batch.
Each chunk of a batch is folded into one new state (core.Batch), and what a
batch leaves is frozen out of the cyclic collector's reach (_freeze_folded).
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import structlog

from services.monitor.adapters.state_store import MonitorStateStore
from services.monitor.api import build_router
from services.monitor.dashboard.hub import ChangeHub
from services.monitor.dashboard.routes import build_dashboard_router
from services.monitor.rounds_api import build_rounds_router
from services.monitor.core import Batch, CancelSiblings, MonitorState, restore, snapshot_flow, snapshot_task
from services.monitor.core.effects import Anomaly, CommandRejected, DuplicateDropped
from services.monitor.core.liveness import lost_executors
from shared import topics
from shared.bus.port import Bus, Record, TopicPartition, next_offsets
from shared.clock import Clock
from shared.errors import MalformedMessage
from shared.events import CommandKind, EntityKind, StateChanged, Status, TaskCommand
from shared.messaging import DeadLetters, EventPublisher
from shared.metrics import ANOMALIES, CONSUMED, PUBLISHED, TRANSITIONS
from shared.readiness import Readiness
from shared.settings import FerrySettings
from shared.wire import codec

INPUT_TOPICS = (topics.TASKS_PLANNED, topics.JOBS, topics.OBSERVATIONS, topics.PROGRESS, topics.COMMANDS,
                topics.FLOWS_REJECTED)


_TASK_EVENTS = topics.TASK_EVENTS.name
_COMMANDS = topics.COMMANDS.name
_TASK_STATE = topics.TASK_STATE.name
_NOT_APPLIED = (Anomaly, CommandRejected, DuplicateDropped)
MAX_BATCH = 5_000  # records per poll: folded and published together
# A checkpoint (snapshots + offsets stored, snapshots mirrored) closes at the latest after this
# many events or this long since the last one, and whenever the consumer is caught up. Bounds
# what a crash re-folds; the entries a backlog touches again and again are snapshotted once.
CHECKPOINT_EVENTS = 25_000
CHECKPOINT_MS = 5_000
CHUNK = 1_000      # records folded between turns of the event loop (heartbeats, API)
GC_THRESHOLDS = (20_000, 20, 20)  # the monitor process's collector; (700, 10, 10) by default


@contextmanager
def _paused_gc(freeze: bool = False):
    """The cyclic collector off while a batch folds. The fold allocates acyclic frozen entries
    (reference counting frees them) into a state that only grows, so each collection meanwhile
    re-walked live state for nothing: a third of a backlog's CPU. Cycles made meanwhile wait
    for the next collection. A collector that was off stays off. `freeze`: what exists when
    the batch is folded is frozen rather than walked (see _freeze_folded)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if freeze:
                _freeze_folded()
            gc.enable()


# Frozen objects since the last full collection that trigger the next one (see _freeze_folded).
FULL_COLLECTION_MIN = 1_000_000
_next_full_collection = 0
_frozen = 0  # frozen objects, as counted at the last full collection plus what each batch added


def _freeze_folded() -> None:
    """After a batch: gc.freeze() instead of the young collection its allocations would trigger.

    The entries a batch adds to the state live on, so the young collection that followed each
    batch walked them (and the older generations walked them again) to find nothing: about a
    tenth of the monitor's CPU. Freezing moves every tracked object out of the collector's
    reach in O(1); reference counting still frees frozen objects. Only cycles among them wait,
    until the frozen objects have doubled (and grown by FULL_COLLECTION_MIN) since the last
    full collection: then one runs over everything (unfreeze, collect, freeze again). So cyclic
    garbage is reclaimed, later, and each object is walked a bounded number of times, as the
    collector's own rule for its oldest generation does.

    The frozen objects are counted by what each batch added (the youngest generation's count:
    tracked objects allocated, less those freed, since the last freeze), not by
    gc.get_freeze_count(), which walks every frozen object: at every batch that walk cost
    more than a twentieth of the monitor's CPU, growing with the state. The exact count is
    taken again at each full collection (and the first time)."""
    global _next_full_collection, _frozen
    added = gc.get_count()[0]
    gc.freeze()
    if not _next_full_collection:
        _frozen = gc.get_freeze_count()
    else:
        _frozen += added
    if _frozen <= _next_full_collection:
        return
    if _next_full_collection:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _frozen = gc.get_freeze_count()
    _next_full_collection = max(2 * _frozen, _frozen + FULL_COLLECTION_MIN)


class _Fold:
    """What folding one batch produced, before it is published and stored."""

    __slots__ = ("wire", "outbox", "malformed", "flow_ids", "task_ids", "consumed", "transitions", "anomalies")

    def __init__(self) -> None:
        self.outbox: list[tuple[str, str, object]] = []   # (topic, key, event) to publish
        self.wire: dict[int, tuple[object, bytes]] = {}   # id(parked envelope) -> (it, the bytes it came from)
        self.malformed: list[tuple[Record, MalformedMessage]] = []
        self.flow_ids: dict[str, None] = {}   # the flows and tasks whose entries the batch replaced
        self.task_ids: dict[str, None] = {}
        self.consumed: Counter[str] = Counter()
        self.transitions: Counter[tuple[EntityKind, Status]] = Counter()
        self.anomalies: Counter[str] = Counter()

    def count_metrics(self, service: str) -> None:
        """Prometheus counters once per batch, not per event (labels() is a lookup each time)."""
        for topic, n in self.consumed.items():
            CONSUMED.labels(service, topic).inc(n)
        for (entity, status), n in self.transitions.items():
            TRANSITIONS.labels(entity.name, status.name).inc(n)
        for name, n in self.anomalies.items():
            ANOMALIES.labels(name).inc(n)


class _Window:
    """What was folded since the last checkpoint: the ids of the entries replaced since, where
    the input partitions stand now, and the wire bytes of the envelopes parked meanwhile."""

    __slots__ = ("opened_ms", "events", "flow_ids", "task_ids", "offsets", "wire")

    def __init__(self, opened_ms: int) -> None:
        self.opened_ms = opened_ms
        self.events = 0
        self.flow_ids: dict[str, None] = {}
        self.task_ids: dict[str, None] = {}
        self.offsets: dict[TopicPartition, int] = {}
        self.wire: dict[int, tuple[object, bytes]] = {}

    def add(self, records: list[Record], fold: _Fold, offsets: dict[TopicPartition, int]) -> None:
        """`offsets`: next_offsets(records), as the batch's chunks found them."""
        self.events += len(records)
        self.flow_ids.update(fold.flow_ids)
        self.task_ids.update(fold.task_ids)
        self.offsets.update(offsets)
        self.wire.update(fold.wire)


class _Prepared:
    """A folded batch: what it publishes (topic, key, bytes); if it closes a checkpoint, the
    snapshots and offsets to store (else both empty: stored with a later batch)."""

    __slots__ = ("items", "snapshots", "offsets", "fold", "flow_ids", "task_ids")

    def __init__(self, items, snapshots, offsets, fold, flow_ids, task_ids) -> None:
        self.items: list[tuple[str, bytes, bytes]] = items
        self.snapshots: dict[str, bytes] = snapshots
        self.offsets: dict[TopicPartition, int] = offsets
        self.fold: _Fold = fold
        self.flow_ids: list[str] = flow_ids  # the entries this batch changed (the dashboard hears of them)
        self.task_ids: list[str] = task_ids


class MonitorService:
    name = "monitor"
    default_port = 8083

    def __init__(self, bus: Bus, clock: Clock, store: MonitorStateStore, max_attempts: int = 3, *,
                 lost_after_s: float = 60.0, startup_grace_s: float = 120.0, own_process: bool = False):
        # Freezing folded batches (_freeze_folded) suits only a process that is the monitor alone:
        # gc.get_freeze_count() walks every frozen object, which in a process that also runs
        # executors (the embedded platform: torch's millions of objects) made each small batch
        # cost milliseconds, and their short-lived cycles would wait for a doubling.
        self._freeze = own_process
        self._bus = bus
        self._clock = clock
        self._store = store
        self.state: MonitorState = restore(store.snapshots(), max_attempts)
        self._offsets = store.offsets()  # stored with the snapshots: where a restart resumes
        self._folded = dict(self._offsets)  # where the state in memory resumes
        self._window = _Window(clock.now_ms())  # folded since the last checkpoint
        self.readiness = Readiness(bus, clock)
        self.readiness.restored = True  # restore() above folded every stored snapshot
        self.publisher = EventPublisher(bus, self.name, clock)
        self._dead_letters = DeadLetters(self.publisher, self.name, clock)
        self._log = structlog.get_logger(service=self.name)
        self.router = build_router(lambda: self.state, self._publish_command)
        self.router.include_router(build_rounds_router(lambda: self.state))
        self.hub = ChangeHub()  # the dashboard's live streams hear of every batch's changes here
        self.router.include_router(build_dashboard_router(lambda: self.state, self.hub))
        self.changed = asyncio.Event()  # set after every batch: lets waiters re-check state
        self._lost_after_ms = int(lost_after_s * 1000)
        self._startup_grace_ms = int(startup_grace_s * 1000)
        self._listening_since_ms: int | None = None
        self._next_liveness_ms = 0
        self._declared_lost: set[tuple[str, int, int]] = set()

    async def _publish_command(self, command: TaskCommand) -> None:
        await self.publisher.publish(topics.COMMANDS.name, command.flow_id, command)

    def _positions(self, assigned: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        # Partitions the state has never seen start from the beginning, not from the group's
        # commit: the state must be the fold of the whole log. Folded, not stored, offsets: a
        # batch folded but not yet stored (run() pipelines) is in the state already.
        return {tp: self._folded.get(tp, 0) for tp in assigned}

    async def handle_batch(self, records: list[Record]) -> None:
        """Fold a batch and make it durable (prepare, send, store; see run() for the pipeline)."""
        batch = await self.prepare_batch(records, checkpoint=True)
        await self.store_batch(batch, self._send(batch))

    @property
    def unsaved(self) -> bool:
        """Whether events were folded since the last checkpoint (a crash would re-fold them)."""
        return bool(self._window.offsets)

    async def prepare_batch(self, records: list[Record], checkpoint: bool = False) -> "_Prepared":
        """Fold `records` into self.state; the batch's sends and, if it closes a checkpoint (asked,
        or due: see CHECKPOINT_EVENTS), the snapshots and offsets to store, not yet sent.
        Undecodable records go to the dead-letter topic."""
        window = self._window
        fold = _Fold()
        batch_offsets: dict[TopicPartition, int] = {}
        with _paused_gc(freeze=self._freeze):
            for start in range(0, len(records), CHUNK):
                if start:
                    await asyncio.sleep(0)  # the Kafka clients' heartbeats and the API get a turn
                chunk = records[start:start + CHUNK]
                self._fold(chunk, fold)
                offsets = next_offsets(chunk)
                self._folded.update(offsets)  # before the next await: a rebalance may seek
                batch_offsets.update(offsets)  # a later chunk's offset of a partition is past an earlier's
            for record, exc in fold.malformed:
                await self._dead_letters.send(record, exc)
            window.add(records, fold, batch_offsets)
            items = self._envelopes(fold.outbox)
            fold.outbox.clear()  # encoded: its objects need not outlive the batch (nor be walked by the GC)
            state = self.state
            changed_tasks, changed_flows = list(fold.task_ids), list(fold.flow_ids)  # the hub's
            if not (checkpoint or window.events >= CHECKPOINT_EVENTS
                    or self._clock.now_ms() - window.opened_ms >= CHECKPOINT_MS):
                return _Prepared(items, {}, {}, fold, changed_flows, changed_tasks)
            task_ids, flow_ids = window.task_ids, window.flow_ids  # replaced since window.before
            snapshots = {f"t:{t}": snapshot_task(state, t, window.wire) for t in task_ids}
            snapshots.update({f"f:{f}": snapshot_flow(state, f) for f in flow_ids})
            items += [(_TASK_STATE, key.encode(), blob) for key, blob in snapshots.items()]
            offsets = window.offsets
            self._window = _Window(self._clock.now_ms())
        return _Prepared(items, snapshots, offsets, fold, changed_flows, changed_tasks)

    def _send(self, batch: "_Prepared") -> asyncio.Future:
        """One send of everything the batch publishes (its StateChanged, commands, then the
        touched snapshots' mirror), in that order. Callers start it only once the batch before
        is stored: two sends must not interleave, or a key's records would leave out of order."""
        async def send() -> None:
            if batch.items:
                await self._bus.send_batch(batch.items)
        return asyncio.ensure_future(send())

    async def store_batch(self, batch: "_Prepared", sent: asyncio.Future) -> None:
        """Once every record the batch publishes is acknowledged, its snapshots and offsets go to
        LMDB in one transaction: the restart truth. A crash before that re-folds the batch from
        the stored offsets after the restart (its sends may repeat; consumers drop them by
        sequence); a crash after it resumes past the batch. No transition is applied twice, none
        is lost, and the restored state equals the stored one."""
        await sent
        if batch.offsets:  # a checkpoint
            self._store.save(batch.snapshots, batch.offsets)
            self._offsets.update(batch.offsets)
        batch.fold.count_metrics(self.name)
        self.hub.publish(set(batch.flow_ids), set(batch.task_ids))
        self.changed.set()
        self.changed = asyncio.Event()

    def _fold(self, records: list[Record], fold: "_Fold") -> None:
        """step() every record into self.state; what to publish and count, and the ids named."""
        decode, batch = codec.decode, Batch(self.state)  # one new state per chunk, not per event
        apply = batch.apply
        outbox, transitions, consumed, wire = fold.outbox, fold.transitions, fold.consumed, fold.wire
        for record in records:
            try:
                envelope = decode(record.value)
            except MalformedMessage as exc:
                fold.malformed.append((record, exc))
                continue
            effects = apply(envelope)
            task_id = getattr(envelope.event, "task_id", "")
            if not effects and task_id:  # parked? (a parked fact emits nothing)
                task = batch.task(task_id)
                if task is not None and task.parked and task.parked[-1] is envelope:
                    # Its snapshot stores these bytes; only parked envelopes are kept (each kept
                    # one stays alive, so its id is not reused meanwhile), the rest die here.
                    wire[id(envelope)] = (envelope, record.value)
            consumed[record.topic] += 1
            for effect in effects:
                if isinstance(effect, StateChanged):
                    outbox.append((_TASK_EVENTS, effect.task_id or effect.flow_id, effect))
                    transitions[(effect.entity, effect.to_status)] += 1  # names looked up per batch
                elif isinstance(effect, CancelSiblings):
                    outbox.append((_COMMANDS, effect.flow_id, TaskCommand(
                        f"cancel-siblings-{envelope.event_id}", CommandKind.CANCEL, effect.flow_id,
                        effect.task_id, "monitor", effect.reason)))
                elif isinstance(effect, _NOT_APPLIED):
                    fold.anomalies[type(effect).__name__] += 1
                    # Redelivered duplicates are routine under at-least-once: counted, not logged.
                    if type(effect) is not DuplicateDropped:
                        self._log.info("monitor.not_applied", effect=type(effect).__name__,
                                       reason=getattr(effect, "reason", ""), event_id=envelope.event_id)
        self.state = batch.commit()
        tasks, flows = batch.written()
        fold.task_ids.update(dict.fromkeys(tasks))
        fold.flow_ids.update(dict.fromkeys(flows))

    def _envelopes(self, outbox: list[tuple[str, str, object]]) -> list[tuple[str, bytes, bytes]]:
        """The outbox as EventPublisher.publish_many sends it (numbered envelopes, wire bytes)."""
        encode = codec.encode
        items = [(topic, key.encode(), encode(env))
                 for (topic, key, _), env in zip(outbox, self.publisher.wrap_many(outbox))]
        for topic, n in Counter(topic for topic, _, _ in outbox).items():
            PUBLISHED.labels(self.name, topic).inc(n)
        return items

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
        for observation in lost_executors(self.state, now, self._lost_after_ms, self._startup_grace_ms):
            key = (observation.algo_task_id, observation.attempt, observation.observed_at_ms)
            if key in self._declared_lost:
                continue
            self._declared_lost.add(key)
            self._log.warning("executor.lost", algo_task=observation.algo_task_id, attempt=observation.attempt,
                              reason=observation.reason)
            await self.publisher.publish(topics.OBSERVATIONS.name, observation.task_id, observation)

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics(topics.CATALOGUE)
        consumer = self._bus.consumer([t.name for t in INPUT_TOPICS], group_id="ferry-monitor",
                                      client_id="monitor", on_assign=self._positions)
        await consumer.start()
        self.readiness.watch(consumer)
        try:
            # Pipelined: batch N+1 is folded while batch N's sends are on their way (the broker
            # works meanwhile), then N is stored, then N+1's sends start after N's.
            # Caught up (an empty poll) with events folded since the last checkpoint: an empty
            # batch closes the checkpoint.
            pending: tuple[_Prepared, asyncio.Future] | None = None
            while not stop.is_set():
                records = await consumer.poll(0 if pending or self.unsaved else 0.2, max_records=MAX_BATCH)
                batch = await self.prepare_batch(records) if records else \
                    await self.prepare_batch([], checkpoint=True) if self.unsaved else None
                if pending is not None:
                    await self.store_batch(*pending)
                    await consumer.commit(pending[0].offsets)
                    pending = None
                if batch is not None:
                    pending = (batch, self._send(batch))
                elif not records:
                    await self._declare_lost()
            if pending is not None:
                await self.store_batch(*pending)
            if self.unsaved:  # stopped mid-backlog: what was folded is stored, not re-folded
                batch = await self.prepare_batch([], checkpoint=True)
                await self.store_batch(batch, self._send(batch))
        finally:
            self.hub.close()
            await consumer.stop()
            self._store.close()
            if self._freeze:
                gc.unfreeze()  # stopped: what the fold froze is the collector's again (at exit, too)

    def health(self) -> dict:
        return {"ok": True, "flows": len(self.state.flows), "tasks": len(self.state.tasks)}


def build(settings: FerrySettings, bus: Bus, clock: Clock) -> MonitorService:
    """The monitor of its own process (`ferry monitor`), which also tunes the process's collector:
    what exists once the state is restored lives as long as the process, so it is frozen out of
    the collector's reach (else every full collection walks all of it), and collections of the
    growing state are made rarer (GC_THRESHOLDS); the fold makes no cyclic garbage, and what
    each batch adds is frozen in turn (_freeze_folded)."""
    store = MonitorStateStore(Path(settings.monitor.state_dir))
    with _paused_gc():
        service = MonitorService(bus, clock, store, settings.monitor.max_attempts,
                                 lost_after_s=settings.monitor.executor_lost_after_s,
                                 startup_grace_s=settings.monitor.executor_startup_grace_s,
                                 own_process=True)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return service


def main() -> int:
    from shared.runtime import run_service

    return run_service(build, "monitor")
