"""A role's progress reports leave in order without holding up its round, and none is lost silently:
report() does not wait for the bus, a failed send fails the role at its next report or at the end,
and the executor puts every report on the bus before it reports the task's end."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from services.executor.context import ExecutorContext
from shared import topics
from shared.bus.memory import InMemoryBus
from shared.clock import ManualClock
from shared.errors import TransientError
from shared.messaging import EventPublisher
from shared.wire import codec


class GatedBus(InMemoryBus):
    """Holds every send until `open` is set (a broker slow to acknowledge), or fails it."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.fail: Exception | None = None

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self.open.wait()
        if self.fail is not None:
            raise self.fail
        await super().send(topic, key, value)


def _ctx(bus: InMemoryBus) -> ExecutorContext:
    clock = ManualClock()
    task = SimpleNamespace(algo_task_id="f.t.p1.client", task_id="f.t", flow_id="f", attempt=1)
    return ExecutorContext(task=task, params={}, checkpoints=None, artifacts=None, peers=None, clock=clock,
                           log=None, publisher=EventPublisher(bus, "executor/test", clock), stop=asyncio.Event())


async def _progress(bus: InMemoryBus) -> list[tuple[int, int, str]]:
    envelopes = [codec.decode(r.value) for r in await bus.read_all(topics.PROGRESS.name)]
    return [(e.sequence, e.event.round, e.event.stage) for e in envelopes]


async def test_reports_do_not_wait_for_the_bus_and_arrive_in_order():
    bus = GatedBus()
    ctx = _ctx(bus)
    for r in range(1, 6):  # the bus acknowledges nothing yet: each call still returns at once
        await asyncio.wait_for(ctx.report(round=r, total_rounds=5, stage="training"), 0.5)
    assert await _progress(bus) == []
    bus.open.set()
    await asyncio.wait_for(ctx.flush_reports(), 1)
    assert await _progress(bus) == [(r, r, "training") for r in range(1, 6)]


async def test_a_failed_report_fails_the_next_report_or_the_flush():
    bus = GatedBus()
    bus.fail = TransientError("broker gone")
    bus.open.set()
    ctx = _ctx(bus)
    await ctx.report(round=1, stage="training")
    with pytest.raises(TransientError):
        await asyncio.wait_for(ctx.flush_reports(), 1)
    await ctx.report(round=2, stage="training")
    await asyncio.sleep(0.01)  # its send fails in the background...
    with pytest.raises(TransientError):  # ...and the role hears of it at its next report
        await ctx.report(round=3, stage="training")
