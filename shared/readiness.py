"""Readiness: whether a service can do its work now, as opposed to whether it is alive.

/healthz (liveness) answers ok while the process can serve at all; an
orchestrator restarts a service whose liveness fails. /readyz answers ok only
while the three things its work needs hold:
- the broker answers: a metadata request every `every_s`, with a timeout, so
  readiness fails within seconds of losing the broker and recovers by itself
  at the first answer after it returns;
- its consumer has partitions assigned (it is in its group);
- its state is restored (the monitor's snapshots, the scheduler's replay of its
  input log, the splitter's decided flows).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from shared.bus.port import Bus, Consumer
from shared.clock import Clock


class Readiness:
    def __init__(self, bus: Bus, clock: Clock, *, every_s: float = 1.0, timeout_s: float = 2.0):
        self._bus = bus
        self._clock = clock
        self._every_s = every_s
        self._timeout_s = timeout_s
        self._consumer: Consumer | None = None
        self.broker_ok = False
        self.broker_detail = "not probed yet"
        self.checked_at_ms = 0
        self.restored = False
        self.ready_since_ms = 0  # when the service last became ready (0: not ready)
        self.probing = False      # run() is probing the broker (the process entry point starts it)
        self._log = structlog.get_logger()

    def watch(self, consumer: Consumer | None) -> None:
        self._consumer = consumer

    async def probe(self) -> None:
        ping = getattr(self._bus, "ping", None)
        try:
            if ping is not None:
                await asyncio.wait_for(ping(), self._timeout_s)
            ok, detail = True, "answered"
        except TimeoutError:
            ok, detail = False, f"no answer within {self._timeout_s:g} s"
        except Exception as exc:  # any failure to reach it is "not ready", never a crash
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        if ok != self.broker_ok:
            self._log.warning("readiness.broker", reachable=ok, detail=detail)
        self.broker_ok, self.broker_detail, self.checked_at_ms = ok, detail, self._clock.now_ms()
        self._update_since()

    async def run(self, stop: asyncio.Event) -> None:
        self.probing = True
        while not stop.is_set():
            await self.probe()
            try:
                await asyncio.wait_for(stop.wait(), self._every_s)
            except TimeoutError:
                pass

    def _assigned(self) -> bool:
        if self._consumer is None:
            return False
        try:
            return bool(self._consumer.assignment())
        except Exception:
            return False

    @property
    def listening(self) -> bool:
        """Whether the service hears its inputs now: in its group, and the broker answers
        (assumed when nothing probes it, as in an embedded test)."""
        return (self.broker_ok or not self.probing) and self._assigned()

    @property
    def ready(self) -> bool:
        return self.broker_ok and self.restored and self._assigned()

    def _update_since(self) -> None:
        if not self.ready:
            self.ready_since_ms = 0
        elif not self.ready_since_ms:
            self.ready_since_ms = self._clock.now_ms()

    def report(self) -> dict[str, Any]:
        self._update_since()
        return {"ok": self.ready, "checks": {
            "broker": {"ok": self.broker_ok, "detail": self.broker_detail, "checked_at_ms": self.checked_at_ms},
            "consumer_assigned": {"ok": self._assigned()},
            "state_restored": {"ok": self.restored}}}
