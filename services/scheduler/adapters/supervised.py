"""Runners that supervise executors on this machine: OS processes or inline tasks.

Both share one supervisor: it remembers why it stopped an executor (suspend,
cancel) so that the exit is reported as SUSPENDED or DELETED rather than as a
failure, and it reports each fact as an Observation for the monitor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import structlog

from services.scheduler.core.exits import Intent, classify_exit
from services.scheduler.core.naming import job_name
from services.scheduler.ports import ObservationSink
from shared.clock import Clock
from shared.events import AlgorithmTaskSpec, Observation, Phase
from shared.metrics import RUNNING_TASKS


class Handle(Protocol):
    async def wait(self) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def diagnostics(self) -> str: ...


class Launcher(Protocol):
    name: str

    async def launch(self, spec: AlgorithmTaskSpec, name: str) -> Handle: ...


@dataclass
class _Running:
    spec: AlgorithmTaskSpec
    handle: Handle
    intent: Intent = "run"
    watcher: asyncio.Task | None = None


class SupervisedRunner:
    def __init__(self, launcher: Launcher, observe: ObservationSink, clock: Clock, kill_after_s: float = 30.0):
        self.name = launcher.name
        self._launcher = launcher
        self._observe = observe
        self._clock = clock
        self._kill_after_s = kill_after_s
        self._running: dict[str, _Running] = {}
        self._started: set[str] = set()  # job names ever started: dispatch is idempotent
        self._log = structlog.get_logger(runner=self.name)

    async def _emit(self, spec: AlgorithmTaskSpec, phase: Phase, *, exit_code: int = 0, reason: str = "",
                    message: str = "", retriable: bool = False) -> None:
        await self._observe(Observation(
            algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id, attempt=spec.attempt,
            phase=phase, object_name=job_name(spec), exit_code=exit_code, reason=reason, message=message,
            retriable=retriable, source=self.name, observed_at_ms=self._clock.now_ms()))

    async def _start(self, spec: AlgorithmTaskSpec) -> None:
        name = job_name(spec)
        handle = await self._launcher.launch(spec, name)
        run = _Running(spec, handle)
        self._running[spec.algo_task_id] = run
        RUNNING_TASKS.labels(self.name).inc()
        await self._emit(spec, Phase.RUNNING)
        run.watcher = asyncio.create_task(self._watch(run), name=f"watch-{name}")

    async def _watch(self, run: _Running) -> None:
        code = await run.handle.wait()
        RUNNING_TASKS.labels(self.name).dec()
        if self._running.get(run.spec.algo_task_id) is run:
            del self._running[run.spec.algo_task_id]
        meaning = classify_exit(code, run.intent)
        message = run.handle.diagnostics() if meaning.phase == Phase.FAILED else ""
        self._log.info("executor.exited", job=job_name(run.spec), exit_code=code, phase=meaning.phase.name)
        await self._emit(run.spec, meaning.phase, exit_code=code, reason=meaning.reason,
                         message=message, retriable=meaning.retriable)

    async def dispatch(self, spec: AlgorithmTaskSpec) -> str:
        name = job_name(spec)
        if name not in self._started:
            self._started.add(name)
            await self._start(spec)
        return name

    async def _stop(self, spec: AlgorithmTaskSpec, intent: Intent) -> bool:
        run = self._running.get(spec.algo_task_id)
        if run is None or run.spec.attempt != spec.attempt:
            return False
        run.intent = intent
        run.handle.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(run.watcher), self._kill_after_s)
        except TimeoutError:
            run.handle.kill()
            await run.watcher
        return True

    async def suspend(self, spec: AlgorithmTaskSpec) -> None:
        if not await self._stop(spec, "suspend"):
            await self._emit(spec, Phase.SUSPENDED, reason="suspended while not running")

    async def resume(self, spec: AlgorithmTaskSpec) -> None:
        if spec.algo_task_id not in self._running:
            await self._start(spec)

    async def cancel(self, spec: AlgorithmTaskSpec) -> None:
        if not await self._stop(spec, "cancel"):
            await self._emit(spec, Phase.DELETED, reason="cancelled")

    async def close(self) -> None:
        for run in list(self._running.values()):
            await self._stop(run.spec, "suspend")
        if (close_launcher := getattr(self._launcher, "close", None)) is not None:
            await close_launcher()
