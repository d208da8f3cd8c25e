"""Runners that supervise executors on this machine: OS processes or inline tasks.

Both share one supervisor: it remembers why it stopped an executor (suspend,
cancel) so that the exit is reported as SUSPENDED or DELETED rather than as a
failure, and it reports each fact as an Observation for the monitor.

A launcher that keeps leases (leases.py) lets a restarted supervisor adopt the
executors an earlier one started: start() watches the live ones and holds the
ended ones until the replayed dispatches ran (settle()): an ended lease whose
dispatch was never confirmed and that left no exit code is launched again,
every other one has its exit reported. A lease is released only after its exit
was reported, so a crash in between reports it again (the monitor ignores the
repeat).
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
        self._ended: dict[str, tuple] = {}  # adopted leases of ended executors, until settle()
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

    def running_specs(self) -> list[AlgorithmTaskSpec]:
        return [run.spec for run in self._running.values()]

    async def start(self) -> None:
        """Adopt the executors an earlier supervisor left (a launcher with leases only)."""
        adopt = getattr(self._launcher, "adopt", None)
        if adopt is None:
            return
        live, ended = adopt()
        for lease, handle in live:
            run = _Running(lease.spec, handle, lease.intent)
            self._running[lease.spec.algo_task_id] = run
            self._started.add(lease.name)
            RUNNING_TASKS.labels(self.name).inc()
            run.watcher = asyncio.create_task(self._watch(run), name=f"watch-{lease.name}")
        for lease, code in ended:
            self._ended[lease.name] = (lease, code)
        self._log.info("executors.adopted", running=[lease.name for lease, _ in live],
                       ended=[lease.name for lease, _ in ended])

    async def settle(self) -> None:
        """Report the ends of adopted executors that no replayed dispatch claimed."""
        ended, self._ended = self._ended, {}
        for name, (lease, code) in ended.items():
            self._started.add(name)
            await self._report_ended(lease, code)

    async def _report_ended(self, lease, code: int | None) -> None:
        from services.scheduler.adapters.leases import KILLED

        code = KILLED if code is None else code
        meaning = classify_exit(code, lease.intent)
        self._log.info("executor.ended_unwatched", job=lease.name, exit_code=code, phase=meaning.phase.name)
        await self._emit(lease.spec, meaning.phase, exit_code=code, reason=meaning.reason,
                         retriable=meaning.retriable,
                         message="ended while no scheduler watched it" if code != 0 else "")
        self._release(lease.name)

    def _release(self, name: str) -> None:
        release = getattr(self._launcher, "release", None)
        if release is not None:
            release(name)

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
        self._release(job_name(run.spec))

    async def dispatch(self, spec: AlgorithmTaskSpec) -> str:
        name = job_name(spec)
        ended = self._ended.pop(name, None)
        if ended is not None:
            lease, code = ended
            if code is not None or lease.intent != "run":
                self._started.add(name)  # it ran and ended: say so rather than run it twice
                await self._report_ended(lease, code)
                return name
            self._release(name)  # never started, or killed before it said anything: start it
        older = self._running.get(spec.algo_task_id)
        if older is not None and older.spec.attempt < spec.attempt:
            # A retry of an attempt the monitor gave up on (declared lost: hung, or cut off
            # from the bus): the old one must not run on beside it. Its exit is stale news.
            older.intent = "cancel"
            older.handle.kill()
        if name not in self._started:
            self._started.add(name)
            await self._start(spec)
        return name

    async def _stop(self, spec: AlgorithmTaskSpec, intent: Intent) -> bool:
        run = self._running.get(spec.algo_task_id)
        if run is None or run.spec.attempt != spec.attempt:
            return False
        run.intent = intent
        set_intent = getattr(self._launcher, "set_intent", None)
        if set_intent is not None:  # a scheduler that adopts it later must know why it stops
            set_intent(job_name(spec), intent)
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
        if getattr(self._launcher, "adopt", None) is not None:
            # Executors under a lease outlive this supervisor: the next one adopts them.
            for run in list(self._running.values()):
                if run.watcher is not None:
                    run.watcher.cancel()
            return
        for run in list(self._running.values()):
            await self._stop(run.spec, "suspend")
        if (close_launcher := getattr(self._launcher, "close", None)) is not None:
            await close_launcher()
