"""The embedded default: every service in one process over the in-process bus.

Executors run inline (asyncio tasks) because the in-process bus cannot cross
a process boundary; they get the same spec, folders and stop signal as a
local process or a Kubernetes pod would. Used by `ferry demo`, `ferry flow
run` and the fast end-to-end tests. Every party gets an Ed25519 identity in
<work_dir>/keys, generated on first use, and the registry of them all: round
messages are signed and checked against pinned keys here as in production.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from services.executor.main import dev_trust, run_task
from services.executor.threads import apply_torch_threads
from services.monitor.adapters.state_store import MonitorStateStore
from services.monitor.api import flow_json
from services.monitor.app import MonitorService
from services.scheduler.adapters.launchers import InlineLauncher
from services.scheduler.adapters.supervised import SupervisedRunner
from services.scheduler.app import SchedulerService
from services.splitter.app import SplitterService
from shared import topics
from shared.algorithms import AlgorithmRegistry
from shared.bus.memory import InMemoryBus
from shared.clock import Clock, SystemClock
from shared.events import FlowSubmitted
from shared.messaging import EventPublisher

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class EmbeddedPlatform:
    def __init__(self, work_dir: Path, *, clock: Clock | None = None, registry: AlgorithmRegistry | None = None,
                 torch_threads: int = 1):
        self.work_dir = Path(work_dir)
        self.torch_threads = torch_threads  # inline executors share this process: one setting for all
        self.clock = clock or SystemClock()
        self.bus = InMemoryBus()
        self.registry = registry or AlgorithmRegistry.from_entry_points()
        self.splitter = SplitterService(self.bus, self.clock, self.registry)

        async def executor(spec, dirs, stop):
            # Party keys are generated into the work dir on first use: identities are pinned here too.
            return await run_task(spec, dirs, stop, bus=self.bus, clock=self.clock, registry=self.registry,
                                  trust=lambda: dev_trust(self.work_dir / "keys", spec))

        launcher = InlineLauncher(self.work_dir, executor)
        self.scheduler = SchedulerService(self.bus, self.clock,
                                          lambda observe: SupervisedRunner(launcher, observe, self.clock))
        self.monitor = MonitorService(self.bus, self.clock, MonitorStateStore(self.work_dir / "monitor"))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "EmbeddedPlatform":
        apply_torch_threads(self.torch_threads)
        await self.bus.ensure_topics(topics.CATALOGUE)
        for service in (self.monitor, self.scheduler, self.splitter):
            self._tasks.append(asyncio.create_task(service.run(self._stop), name=service.name))
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def submit(self, flow: FlowSubmitted) -> None:
        await EventPublisher(self.bus, "embedded", self.clock).publish(topics.FLOWS.name, flow.flow_id, flow)

    def flow(self, flow_id: str) -> dict | None:
        return flow_json(self.monitor.state, flow_id)

    async def wait_for(self, flow_id: str, statuses=TERMINAL, timeout_s: float = 600.0) -> dict:
        async def until() -> dict:
            while True:
                changed = self.monitor.changed
                view = self.flow(flow_id)
                if view is not None and view["status"] in statuses:
                    return view
                for task in self._tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()
                await changed.wait()
        return await asyncio.wait_for(until(), timeout_s)


async def run_flow_embedded(flow: FlowSubmitted, *, timeout_s: float = 600.0, work_dir: Path | None = None,
                            torch_threads: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="ferry-embedded-") as tmp:
        async with EmbeddedPlatform(Path(work_dir or tmp), torch_threads=torch_threads) as platform:
            await platform.submit(flow)
            return await platform.wait_for(flow.flow_id, timeout_s=timeout_s)
