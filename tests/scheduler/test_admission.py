"""The admission gate: per-party and per-node limits, queued executors announced, withdrawn, admitted in order."""

from __future__ import annotations

import asyncio

from services.scheduler.adapters.admission import AdmissionGate, AdmissionLimits
from shared.clock import ManualClock
from shared.events import AlgorithmTaskSpec, Observation, Phase


def _spec(party: str, n: int, attempt: int = 1) -> AlgorithmTaskSpec:
    return AlgorithmTaskSpec(f"f{n}.s.{party}.worker", f"f{n}.s", f"f{n}", "s", "ferry.noop", "1", {}, party,
                             "worker", (), attempt=attempt)


class FakeRunner:
    """Starts nothing; `finish` plays the runner observing an executor's exit."""

    name = "fake"

    def __init__(self, observe):
        self.observe = observe
        self.started: list[str] = []
        self.running: set[str] = set()

    async def dispatch(self, spec):
        self.started.append(spec.algo_task_id)
        self.running.add(spec.algo_task_id)
        return spec.algo_task_id

    async def resume(self, spec):
        await self.dispatch(spec)

    async def suspend(self, spec):
        pass

    async def cancel(self, spec):
        pass

    async def close(self):
        pass

    async def finish(self, spec, phase=Phase.SUCCEEDED):
        self.running.discard(spec.algo_task_id)
        await self.observe(Observation(spec.algo_task_id, spec.task_id, spec.flow_id, spec.attempt, phase))


def _gate(per_party=0, per_node=0, node_of=lambda party: "local"):
    seen: list[Observation] = []

    async def observe(o):
        seen.append(o)
    gate = AdmissionGate(FakeRunner, observe, AdmissionLimits(per_party, per_node), ManualClock(), node_of)
    return gate, gate.inner, seen


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_party_at_its_limit_queues_the_rest_and_they_start_as_slots_free():
    gate, runner, seen = _gate(per_party=2)
    a = [_spec("a", i) for i in range(4)]
    b = _spec("b", 9)
    tasks = [asyncio.create_task(gate.dispatch(s)) for s in a + [b]]
    await _settle()
    assert runner.started == [a[0].algo_task_id, a[1].algo_task_id, b.algo_task_id], "party b is not held back"
    queued = [o for o in seen if o.phase is Phase.PENDING]
    assert [o.algo_task_id for o in queued] == [a[2].algo_task_id, a[3].algo_task_id]
    assert queued[0].reason == "queued: party a runs 2 executors (limit 2)"
    await runner.finish(a[1])
    await _settle()
    assert runner.started[-1] == a[2].algo_task_id and a[3].algo_task_id not in runner.started  # first come
    await runner.finish(a[0], Phase.FAILED)
    await _settle()
    assert runner.started[-1] == a[3].algo_task_id
    assert max(len([x for x in runner.running if ".a." in x]), 0) <= 2
    await asyncio.gather(*tasks)


async def test_a_node_limit_counts_every_party_on_that_node():
    gate, runner, seen = _gate(per_node=1, node_of=lambda party: "n1" if party in ("a", "b") else "n2")
    tasks = [asyncio.create_task(gate.dispatch(s)) for s in (_spec("a", 1), _spec("b", 2), _spec("c", 3))]
    await _settle()
    assert runner.started == ["f1.s.a.worker", "f3.s.c.worker"]
    assert [o.reason for o in seen if o.phase is Phase.PENDING] == ["queued: node n1 runs 1 executors (limit 1)"]
    await runner.finish(_spec("a", 1))
    await asyncio.gather(*tasks)
    assert runner.started[-1] == "f2.s.b.worker"


async def test_suspending_or_cancelling_a_queued_executor_withdraws_it():
    gate, runner, seen = _gate(per_party=1)
    first, suspended, cancelled = _spec("a", 1), _spec("a", 2), _spec("a", 3)
    tasks = [asyncio.create_task(gate.dispatch(s)) for s in (first, suspended, cancelled)]
    await _settle()
    await gate.suspend(suspended)
    await gate.cancel(cancelled)
    await runner.finish(first)
    await asyncio.gather(*tasks)
    assert runner.started == [first.algo_task_id]
    ends = {o.algo_task_id: (o.phase, o.reason) for o in seen if o.phase in (Phase.SUSPENDED, Phase.DELETED)}
    assert ends == {suspended.algo_task_id: (Phase.SUSPENDED, "suspended while queued"),
                    cancelled.algo_task_id: (Phase.DELETED, "cancelled while queued")}
    assert gate.running() == {} and gate.queued() == []


async def test_a_retry_holds_its_own_slot_until_the_old_attempt_is_seen_ending():
    gate, runner, _ = _gate(per_party=1)
    await gate.dispatch(_spec("a", 1, attempt=1))
    retry = asyncio.create_task(gate.dispatch(_spec("a", 1, attempt=2)))
    await _settle()
    assert not retry.done()
    await runner.finish(_spec("a", 1, attempt=1), Phase.FAILED)
    await retry
    assert gate.running() == {"a": 1}
