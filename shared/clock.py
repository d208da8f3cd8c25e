"""The clock port. Logic takes a Clock; only entry points build SystemClock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...
    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock tests move by hand: sleep() returns once advance() passes its deadline."""

    def __init__(self, start_ms: int = 1_700_000_000_000):
        self._now = start_ms / 1000.0
        self._sleepers: list[tuple[float, asyncio.Future]] = []

    def now_ms(self) -> int:
        return int(round(self._now * 1000))

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        self._now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self._now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._now]
        for _, fut in sorted(due, key=lambda x: x[0]):
            if not fut.done():
                fut.set_result(None)
