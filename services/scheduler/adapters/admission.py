"""Admission: at most so many executors run at once per party and per data node; the rest queue.

A runner wrapper, so one gate serves the local and the Kubernetes runner. An
executor holds its slot from its dispatch (or resume) until the runner observes
it ended (succeeded, failed, suspended, deleted). A dispatch that does not fit
is queued: the monitor is told at once (an Observation PENDING whose reason
says why, shown as the algorithm task's stage "pending: queued …"), and the
scheduler publishes the job event only when the executor really starts, so a
scheduler restarted meanwhile dispatches it again instead of forgetting it.
A queue is first-in first-out per limit: a party at its limit does not hold
back the others. Suspending or cancelling a queued executor withdraws it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from services.scheduler.core.naming import job_name
from services.scheduler.ports import ObservationSink, Runner
from shared.clock import Clock
from shared.events import AlgorithmTaskSpec, Observation, Phase

_ENDED = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.SUSPENDED, Phase.DELETED})


@dataclass(frozen=True)
class AdmissionLimits:
    per_party: int = 0  # 0: no limit
    per_node: int = 0

    @property
    def unlimited(self) -> bool:
        return self.per_party <= 0 and self.per_node <= 0


@dataclass
class _Waiter:
    spec: AlgorithmTaskSpec
    admitted: asyncio.Future


class AdmissionGate:
    def __init__(self, make_inner: Callable[[ObservationSink], Runner], observe: ObservationSink,
                 limits: AdmissionLimits, clock: Clock, node_of: Callable[[str], str] = lambda party: "local"):
        self._observe = observe
        self._limits = limits
        self._clock = clock
        self._node_of = node_of
        self.inner = make_inner(self._seen)
        self.name = self.inner.name
        self._holding: dict[tuple[str, int], tuple[str, str]] = {}  # (algo task, attempt) -> (party, node)
        self._parties: Counter[str] = Counter()
        self._nodes: Counter[str] = Counter()
        self._queue: list[_Waiter] = []

    # -- slots ------------------------------------------------------------------------------------

    def _fits(self, spec: AlgorithmTaskSpec) -> bool:
        lim = self._limits
        return ((lim.per_party <= 0 or self._parties[spec.party] < lim.per_party)
                and (lim.per_node <= 0 or self._nodes[self._node_of(spec.party)] < lim.per_node))

    def _take(self, spec: AlgorithmTaskSpec) -> None:
        key = (spec.algo_task_id, spec.attempt)
        if key in self._holding:
            return
        node = self._node_of(spec.party)
        self._holding[key] = (spec.party, node)
        self._parties[spec.party] += 1
        self._nodes[node] += 1

    def _free(self, algo_task_id: str, attempt: int) -> None:
        held = self._holding.pop((algo_task_id, attempt), None)
        if held is not None:
            party, node = held
            self._parties[party] -= 1
            self._nodes[node] -= 1
            self._pump()

    def _pump(self) -> None:
        for waiter in list(self._queue):
            if self._fits(waiter.spec):
                self._queue.remove(waiter)
                self._take(waiter.spec)
                waiter.admitted.set_result(True)

    def running(self) -> dict[str, int]:
        return {party: n for party, n in self._parties.items() if n}

    def queued(self) -> list[str]:
        return [w.spec.algo_task_id for w in self._queue]

    def _why(self, spec: AlgorithmTaskSpec) -> str:
        lim, node = self._limits, self._node_of(spec.party)
        if lim.per_party > 0 and self._parties[spec.party] >= lim.per_party:
            return f"queued: party {spec.party} runs {self._parties[spec.party]} executors (limit {lim.per_party})"
        return f"queued: node {node} runs {self._nodes[node]} executors (limit {lim.per_node})"

    def enqueue(self, spec: AlgorithmTaskSpec) -> asyncio.Future:
        """Take a slot now (a done future) or queue: resolved True when admitted, or "suspend" /
        "cancel" when withdrawn by that.

        Synchronous, so a suspend or cancel that follows in the input log finds it queued."""
        future = asyncio.get_running_loop().create_future()
        if self._limits.unlimited or (not self._queue_for(spec) and self._fits(spec)):
            self._take(spec)
            future.set_result(True)
        else:
            self._queue.append(_Waiter(spec, future))
        return future

    def _queue_for(self, spec: AlgorithmTaskSpec) -> bool:
        """Whether someone of the same party or node already waits (first come, first served)."""
        node, lim = self._node_of(spec.party), self._limits
        return any((lim.per_party > 0 and w.spec.party == spec.party)
                   or (lim.per_node > 0 and self._node_of(w.spec.party) == node) for w in self._queue)

    async def announce_queued(self, spec: AlgorithmTaskSpec) -> None:
        await self._emit(spec, Phase.PENDING, self._why(spec))

    def _withdraw(self, spec: AlgorithmTaskSpec, intent: str) -> bool:
        for waiter in self._queue:
            if waiter.spec.algo_task_id == spec.algo_task_id:
                self._queue.remove(waiter)
                waiter.admitted.set_result(intent)
                return True
        return False

    async def _emit(self, spec: AlgorithmTaskSpec, phase: Phase, reason: str) -> None:
        await self._observe(Observation(
            algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id, attempt=spec.attempt,
            phase=phase, object_name=job_name(spec), reason=reason, source=f"{self.name}/admission",
            observed_at_ms=self._clock.now_ms()))

    async def _seen(self, observation: Observation) -> None:
        if observation.phase in _ENDED:
            self._free(observation.algo_task_id, observation.attempt)
        await self._observe(observation)

    # -- the runner port ------------------------------------------------------------------------------

    async def launch(self, spec: AlgorithmTaskSpec, *, resume: bool = False) -> str:
        """Start an admitted executor (its slot is taken); gives the slot back if that fails."""
        try:
            if resume:
                await self.inner.resume(spec)
                return job_name(spec)
            return await self.inner.dispatch(spec)
        except BaseException:
            self._free(spec.algo_task_id, spec.attempt)
            raise

    async def _admitted(self, spec: AlgorithmTaskSpec) -> bool:
        future = self.enqueue(spec)
        if not future.done():
            await self.announce_queued(spec)
        return await future is True

    async def dispatch(self, spec: AlgorithmTaskSpec) -> str:
        if not await self._admitted(spec):
            return job_name(spec)
        return await self.launch(spec)

    async def resume(self, spec: AlgorithmTaskSpec) -> None:
        if await self._admitted(spec):
            await self.launch(spec, resume=True)

    async def suspend(self, spec: AlgorithmTaskSpec) -> None:
        if self._withdraw(spec, "suspend"):
            await self._emit(spec, Phase.SUSPENDED, "suspended while queued")
            return
        await self.inner.suspend(spec)

    async def cancel(self, spec: AlgorithmTaskSpec) -> None:
        if self._withdraw(spec, "cancel"):
            await self._emit(spec, Phase.DELETED, "cancelled while queued")
            return
        await self.inner.cancel(spec)

    async def start(self) -> None:
        start = getattr(self.inner, "start", None)
        if start is not None:
            await start()
        for spec in getattr(self.inner, "running_specs", lambda: [])():
            self._take(spec)  # adopted executors hold their slots

    async def settle(self) -> None:
        settle = getattr(self.inner, "settle", None)
        if settle is not None:
            await settle()

    async def close(self) -> None:
        for waiter in list(self._queue):
            waiter.admitted.cancel()
        self._queue.clear()
        await self.inner.close()
