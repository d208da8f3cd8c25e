"""Fan-out of "these entries changed" from the monitor's fold to live subscribers (SSE streams).

The fold must never wait for a browser: publish() only adds ids to each
subscriber's pending sets and wakes it, so a slow subscriber gets one
coalesced notice covering everything since it last looked, never a queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Subscription:
    def __init__(self, hub: "ChangeHub"):
        self._hub = hub
        self._flows: set[str] = set()
        self._tasks: set[str] = set()
        self._wake = asyncio.Event()
        self.closed = False

    def _add(self, flow_ids: Iterable[str], task_ids: Iterable[str]) -> None:
        self._flows.update(flow_ids)
        self._tasks.update(task_ids)
        self._wake.set()

    async def next(self, timeout_s: float) -> tuple[set[str], set[str]] | None:
        """(flow ids, task ids) changed since the last call; None if nothing changed within
        timeout_s or the hub closed (see `closed`)."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        self._wake.clear()
        if self.closed:
            return None
        flows, tasks = self._flows, self._tasks
        self._flows, self._tasks = set(), set()
        return flows, tasks

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        self._hub._subscribers.discard(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ChangeHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self.closed = False

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        if self.closed:  # the monitor is stopping: a reconnecting page gets an ended stream
            subscription.closed = True
        else:
            self._subscribers.add(subscription)
        return subscription

    def publish(self, flow_ids: Iterable[str], task_ids: Iterable[str]) -> None:
        if not self._subscribers:
            return
        flow_ids, task_ids = tuple(flow_ids), tuple(task_ids)
        for subscription in tuple(self._subscribers):
            subscription._add(flow_ids, task_ids)

    def close(self) -> None:
        """End every stream: the HTTP server waits for open responses before it can stop."""
        self.closed = True
        for subscription in tuple(self._subscribers):
            subscription.close()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
