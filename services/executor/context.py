"""The RoleContext an algorithm role receives: the executor's ports, nothing more."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from shared import topics
from shared.clock import Clock
from shared.errors import Suspended
from shared.events import AlgorithmTaskSpec, ExecutorProgress
from shared.messaging import EventPublisher


@dataclass
class ExecutorContext:
    task: AlgorithmTaskSpec
    params: Mapping[str, Any]
    checkpoints: Any
    artifacts: Any   # ArtifactStore of this party and flow
    peers: Any
    clock: Clock
    log: Any
    publisher: EventPublisher
    stop: asyncio.Event
    data_opener: Callable[[], Any] | None = None
    bus: Any = None   # for the executor's own transport adapters (round messages), not for roles
    trust: Any = None  # federation.identity.Trust: this party's identity and the pinned keys of all
    max_incomplete_payloads: int = 8
    _data: Any = field(default=None, init=False)
    _reporting: asyncio.Future | None = field(default=None, init=False)  # the last report's send

    @property
    def data(self) -> Any:
        """The party's dataset, opened on first use (roles without data never open a store)."""
        if self._data is None and self.data_opener is not None:
            self._data = self.data_opener()
        return self._data

    @property
    def stop_requested(self) -> bool:
        return self.stop.is_set()

    def check_stop(self) -> None:
        """Call at safe points (after a checkpoint): raises Suspended once SIGTERM arrived."""
        if self.stop.is_set():
            raise Suspended("stop requested")

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up and raise Suspended as soon as a stop is requested."""
        stopper = asyncio.ensure_future(self.stop.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait({stopper, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            sleeper.cancel()
        self.check_stop()

    async def report(self, *, round: int = 0, total_rounds: int = 0, stage: str = "",
                     metrics: Mapping[str, float] | None = None) -> None:
        """Publish progress, in the order reported, without waiting for the broker's acknowledgement.

        A round's report sits on the round's critical path (the aggregator announces the next
        round right after it, a client trains right after scoring the global model): awaiting
        the acknowledgement there added a broker round trip to every round. The envelope is
        made now (sequence number and timestamp of the call); the send is chained after the
        previous report's. A report that failed raises from the next report() or from
        flush_reports(), which the executor awaits before it reports the task's end.
        """
        t = self.task
        traffic = getattr(self.bus, "traffic", None)  # a MeteredBus: what this executor moved so far
        if traffic is not None and round:
            self.log.info("executor.traffic", round=round, stage=stage,
                          rounds_produced_bytes=traffic.produced[topics.ROUNDS.name],
                          rounds_fetched_bytes=traffic.fetched[topics.ROUNDS.name])
        previous = self._reporting
        if previous is not None and previous.done():
            previous.result()  # an earlier report failed: the role fails here, as an awaited publish did
            previous = None
        envelope = self.publisher.wrap(topics.PROGRESS.name, t.task_id, ExecutorProgress(
            algo_task_id=t.algo_task_id, task_id=t.task_id, flow_id=t.flow_id, attempt=t.attempt,
            round=round, total_rounds=total_rounds, stage=stage, metrics=dict(metrics or {})))
        self._reporting = asyncio.ensure_future(self._publish_after(previous, envelope))

    async def _publish_after(self, previous: asyncio.Future | None, envelope) -> None:
        if previous is not None:
            await previous  # in order: consumers take a lower sequence number after a higher for a replay
        await self.publisher.publish_wrapped(topics.PROGRESS.name, envelope)

    async def flush_reports(self) -> None:
        """Wait until every report so far is on the bus; raises what a failed one raised."""
        reporting, self._reporting = self._reporting, None
        if reporting is not None:
            await reporting
