"""Splitter service: FlowSubmitted in; TaskPlanned (accepted) or FlowRejected out.

Redelivery-safe: the splitter rebuilds the set of flows it already decided
from its own output topics at start-up, and planned events carry ids derived
from (flow, task), so a flow published twice is planned once.

A flow id names one flow for good. A second submission with the same content
(content_digest) is an idempotent no-op; one with different content is
answered with a FlowRejected that names the conflict, and the first flow
stands. A submission without a flow id has no key to answer on: it goes to the
dead-letter topic with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib

import structlog
from fastapi import APIRouter

from services.splitter.core.decide import Accepted, decide
from services.splitter.core.validation import FlowLimits
from shared import topics
from shared.algorithms import AlgorithmRegistry
from shared.bus.port import Bus, Record
from shared.clock import Clock
from shared.errors import MalformedMessage, ValidationFailed
from shared.events import Envelope, FieldError, FlowRejected, FlowSubmitted
from shared.messaging import DeadLetters, EventPublisher, consume
from shared.metrics import FLOWS_SPLIT
from shared.readiness import Readiness
from shared.retry import BackoffPolicy
from shared.settings import FerrySettings
from shared.wire import codec


def planned_event_id(flow_id: str, task_id: str) -> str:
    return hashlib.sha256(f"planned\0{flow_id}\0{task_id}".encode()).hexdigest()[:32]


def content_digest(flow: FlowSubmitted) -> str:
    """What makes two submissions of one flow id the same flow: name, steps, labels (not who sent it)."""
    same = FlowSubmitted(flow.flow_id, flow.name, flow.steps, "", dict(sorted(flow.labels.items())))
    return hashlib.sha256(codec.to_wire(same).SerializeToString(deterministic=True)).hexdigest()


def conflict_error(flow_id: str, first: str, second: str) -> FieldError:
    return FieldError("id", f"flow id {flow_id!r} is already taken by a flow with different content "
                            f"(sha256 {first[:12]}, this submission {second[:12]}); the first flow stands; "
                            f"submit this one under a new id")


class SplitterService:
    name = "splitter"
    default_port = 8081
    router: APIRouter | None = None

    def __init__(self, bus: Bus, clock: Clock, registry: AlgorithmRegistry,
                 known_parties: frozenset[str] | None = None, limits: FlowLimits = FlowLimits(),
                 retry: BackoffPolicy = BackoffPolicy()):
        self._bus = bus
        self._clock = clock
        self._registry = registry
        self._known_parties = known_parties
        self._limits = limits
        self._retry = retry
        self.publisher = EventPublisher(bus, self.name, clock)
        self.decided: set[str] = set()
        self.digests: dict[str, str] = {}  # flow id -> content digest of the submission decided on
        self.readiness = Readiness(bus, clock)
        self._log = structlog.get_logger(service=self.name)

    async def _recall_decided_flows(self) -> None:
        for topic in (topics.TASKS_PLANNED.name, topics.FLOWS_REJECTED.name):
            for record in await self._bus.read_all(topic):
                try:
                    self.decided.add(codec.decode(record.value).event.flow_id)
                except MalformedMessage:
                    continue
        # The content each decided flow was decided on: its first submission (in log order).
        for record in await self._bus.read_all(topics.FLOWS.name):
            try:
                flow = codec.decode(record.value).event
            except MalformedMessage:
                continue
            if isinstance(flow, FlowSubmitted) and flow.flow_id in self.decided:
                self.digests.setdefault(flow.flow_id, content_digest(flow))

    async def handle(self, envelope: Envelope, record: Record) -> None:
        flow = envelope.event
        if not isinstance(flow, FlowSubmitted):
            raise MalformedMessage(f"{topics.FLOWS.name} carries FlowSubmitted, not {envelope.type_name}")
        if not flow.flow_id.strip():
            raise ValidationFailed([FieldError("id", "flow id must not be empty; nothing can answer "
                                                     "a flow without one")])
        log = self._log.bind(flow=flow.flow_id)
        digest = content_digest(flow)
        if flow.flow_id in self.decided:
            first = self.digests.get(flow.flow_id)
            if first is None or first == digest:  # None: its first submission is no longer on the log
                log.info("flow.duplicate_identical")
                FLOWS_SPLIT.labels("duplicate").inc()
                return
            rejection = FlowRejected(flow.flow_id, (conflict_error(flow.flow_id, first, digest),))
            await self.publisher.publish(topics.FLOWS_REJECTED.name, flow.flow_id, rejection)
            log.warning("flow.conflict", errors=[str(e) for e in rejection.errors])
            FLOWS_SPLIT.labels("conflict").inc()
            return
        outcome = decide(flow, self._registry, self._known_parties, self._limits, self._clock.now_ms(),
                         encoded_size=len(record.value))
        if isinstance(outcome, Accepted):
            await self._publish_plan(outcome)
            log.info("flow.planned", tasks=len(outcome.tasks))
            FLOWS_SPLIT.labels("accepted").inc()
        else:
            await self.publisher.publish(topics.FLOWS_REJECTED.name, flow.flow_id, outcome.rejection)
            log.warning("flow.rejected", errors=[str(e) for e in outcome.rejection.errors])
            FLOWS_SPLIT.labels("rejected").inc()
        self.decided.add(flow.flow_id)
        self.digests[flow.flow_id] = digest

    async def _publish_plan(self, outcome: Accepted) -> None:
        envelopes = [self.publisher.wrap(topics.TASKS_PLANNED.name, t.task_id, t,
                                         planned_event_id(t.flow_id, t.task_id))
                     for t in outcome.tasks]
        await self._bus.send_batch([(topics.TASKS_PLANNED.name, e.key.encode(), codec.encode(e))
                                    for e in envelopes])

    async def reject_undecodable(self, record: Record, error: MalformedMessage) -> None:
        """The record key is the flow id even when the value is garbage: tell the submitter."""
        flow_id = (record.key or b"").decode("utf-8", "replace")
        if flow_id and flow_id not in self.decided:
            await self.publisher.publish(topics.FLOWS_REJECTED.name, flow_id,
                                         FlowRejected(flow_id, (FieldError("$", str(error)),)))
            FLOWS_SPLIT.labels("rejected").inc()

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics(topics.CATALOGUE)
        await self._recall_decided_flows()
        self.readiness.restored = True
        consumer = self._bus.consumer([topics.FLOWS.name], group_id="ferry-splitter", client_id="splitter")
        await consumer.start()
        self.readiness.watch(consumer)
        try:
            await consume(consumer, self.handle, dead_letters=DeadLetters(self.publisher, self.name, self._clock),
                          stop=stop, clock=self._clock, service=self.name, retry=self._retry,
                          on_malformed=self.reject_undecodable)
        finally:
            await consumer.stop()

    def health(self) -> dict:
        return {"ok": True, "algorithms": self._registry.names(), "flows_decided": len(self.decided)}


def build(settings: FerrySettings, bus: Bus, clock: Clock) -> SplitterService:
    return SplitterService(bus, clock, AlgorithmRegistry.from_entry_points(), retry=settings.retry.policy())


def main() -> int:
    from shared.runtime import run_service

    return run_service(build, "splitter")
