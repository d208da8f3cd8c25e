"""min_round_s: the aggregator holds a round open until it has lasted that long, and a stop
(suspend, cancel) still ends the wait at once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from services.executor.algorithms.federated import pace_round
from services.executor.context import ExecutorContext
from shared.clock import ManualClock
from shared.errors import Suspended


def _ctx(clock: ManualClock) -> ExecutorContext:
    return ExecutorContext(task=SimpleNamespace(), params={}, checkpoints=None, artifacts=None, peers=None,
                           clock=clock, log=None, publisher=None, stop=asyncio.Event())


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_round_that_took_less_waits_out_the_rest():
    clock = ManualClock()
    ctx, started = _ctx(clock), clock.monotonic()
    clock.advance(0.25)  # the round's own work (binary fractions: exact on the clock's scale)
    waiting = asyncio.ensure_future(pace_round(ctx, started, 1.0))
    await _settle()
    clock.advance(0.5)
    await _settle()
    assert not waiting.done()  # 0.75 s into a 1 s minimum
    clock.advance(0.25)
    await asyncio.wait_for(waiting, 1)


async def test_a_round_that_took_longer_or_no_minimum_does_not_wait():
    clock = ManualClock()
    ctx, started = _ctx(clock), clock.monotonic()
    clock.advance(2.0)
    await asyncio.wait_for(pace_round(ctx, started, 1.0), 1)  # no advance needed: no sleep at all
    await asyncio.wait_for(pace_round(ctx, clock.monotonic(), 0.0), 1)


async def test_a_stop_ends_the_wait_with_suspended():
    clock = ManualClock()
    ctx = _ctx(clock)
    waiting = asyncio.ensure_future(pace_round(ctx, clock.monotonic(), 600.0))
    await _settle()
    ctx.stop.set()
    with pytest.raises(Suspended):
        await asyncio.wait_for(waiting, 1)
