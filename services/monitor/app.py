"""Monitor service: folds every fact about tasks into state, publishes what changed.

Per batch of records: decode, step() each, then publish the StateChanged
effects to ferry.task-events, write touched snapshots plus the consumed
offsets to the local LMDB in one transaction (the source of restart truth),
mirror the snapshots to the compacted ferry.task-state topic, and commit the
offsets to Kafka for observability.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from services.monitor.adapters.state_store import MonitorStateStore
from services.monitor.api import build_router
from services.monitor.dashboard.hub import ChangeHub
from services.monitor.dashboard.routes import build_dashboard_router
from services.monitor.rounds_api import build_rounds_router
from services.monitor.core import CancelSiblings, MonitorState, restore, snapshot_flow, snapshot_task, step, touched
from services.monitor.core.effects import Anomaly, CommandRejected, DuplicateDropped
from services.monitor.core.liveness import lost_executors
from shared import topics
from shared.bus.port import Bus, Record, TopicPartition, next_offsets
from shared.clock import Clock
from shared.errors import MalformedMessage
from shared.events import CommandKind, StateChanged, TaskCommand
from shared.messaging import DeadLetters, EventPublisher
from shared.metrics import ANOMALIES, CONSUMED, TRANSITIONS
from shared.readiness import Readiness
from shared.settings import FerrySettings
from shared.wire import codec

INPUT_TOPICS = (topics.TASKS_PLANNED, topics.JOBS, topics.OBSERVATIONS, topics.PROGRESS, topics.COMMANDS,
                topics.FLOWS_REJECTED)


class MonitorService:
    name = "monitor"
    default_port = 8083

    def __init__(self, bus: Bus, clock: Clock, store: MonitorStateStore, max_attempts: int = 3, *,
                 lost_after_s: float = 60.0):
        self._bus = bus
        self._clock = clock
        self._store = store
        self.state: MonitorState = restore(store.snapshots(), max_attempts)
        self._offsets = store.offsets()
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
        self._listening_since_ms: int | None = None
        self._next_liveness_ms = 0
        self._declared_lost: set[tuple[str, int, int]] = set()

    async def _publish_command(self, command: TaskCommand) -> None:
        await self.publisher.publish(topics.COMMANDS.name, command.flow_id, command)

    def _positions(self, assigned: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        # Partitions the stored state has never seen start from the beginning, not
        # from the group's commit: the state must be the fold of the whole log.
        return {tp: self._offsets.get(tp, 0) for tp in assigned}

    async def handle_batch(self, records: list[Record]) -> None:
        changes: list[StateChanged] = []
        commands: list[TaskCommand] = []
        task_ids: set[str] = set()
        flow_ids: set[str] = set()
        for record in records:
            try:
                envelope = codec.decode(record.value)
            except MalformedMessage as exc:
                await self._dead_letters.send(record, exc)
                continue
            before = self.state
            self.state, effects = step(before, envelope)
            t, f = touched(before, self.state, envelope)
            task_ids.update(t)
            flow_ids.update(f)
            for effect in effects:
                if isinstance(effect, StateChanged):
                    changes.append(effect)
                    TRANSITIONS.labels(effect.entity.name, effect.to_status.name).inc()
                elif isinstance(effect, CancelSiblings):
                    commands.append(TaskCommand(f"cancel-siblings-{envelope.event_id}", CommandKind.CANCEL,
                                                effect.flow_id, effect.task_id, "monitor", effect.reason))
                elif isinstance(effect, (Anomaly, CommandRejected, DuplicateDropped)):
                    ANOMALIES.labels(type(effect).__name__).inc()
                    # Redelivered duplicates are routine under at-least-once: counted, not logged.
                    if type(effect) is not DuplicateDropped:
                        self._log.info("monitor.not_applied", effect=type(effect).__name__,
                                       reason=getattr(effect, "reason", ""), event_id=envelope.event_id)
            CONSUMED.labels(self.name, record.topic).inc()
        items = [(topics.TASK_EVENTS.name, c.task_id or c.flow_id, c) for c in changes]
        items += [(topics.COMMANDS.name, c.flow_id, c) for c in commands]
        if items:
            await self.publisher.publish_many(items)
        snapshots = {f"t:{t}": snapshot_task(self.state, t) for t in task_ids}
        snapshots.update({f"f:{f}": snapshot_flow(self.state, f) for f in flow_ids})
        offsets = next_offsets(records)
        self._store.save(snapshots, offsets)
        self._offsets.update(offsets)
        if snapshots:
            await self._bus.send_batch([(topics.TASK_STATE.name, k.encode(), v) for k, v in snapshots.items()])
        self.hub.publish(flow_ids, task_ids)
        self.changed.set()
        self.changed = asyncio.Event()

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

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics(topics.CATALOGUE)
        consumer = self._bus.consumer([t.name for t in INPUT_TOPICS], group_id="ferry-monitor",
                                      client_id="monitor", on_assign=self._positions)
        await consumer.start()
        self.readiness.watch(consumer)
        try:
            while not stop.is_set():
                records = await consumer.poll(0.2, max_records=2000)
                if records:
                    await self.handle_batch(records)
                    await consumer.commit(next_offsets(records))
                else:
                    await self._declare_lost()
        finally:
            self.hub.close()
            await consumer.stop()
            self._store.close()

    def health(self) -> dict:
        return {"ok": True, "flows": len(self.state.flows), "tasks": len(self.state.tasks)}


def build(settings: FerrySettings, bus: Bus, clock: Clock) -> MonitorService:
    store = MonitorStateStore(Path(settings.monitor.state_dir))
    return MonitorService(bus, clock, store, settings.monitor.max_attempts,
                          lost_after_s=settings.monitor.executor_lost_after_s)


def main() -> int:
    from shared.runtime import run_service

    return run_service(build, "monitor")
