"""How an executor proves it is alive and says how it ended, whoever supervises it.

A scheduler may die while its executors run on; the executors must not be
orphaned in the monitor's eyes. So an executor
- sends a heartbeat (ExecutorProgress with stage HEARTBEAT) every few seconds:
  the monitor declares a RUNNING executor lost when they stop, and retries it
  (and the scheduler then cancels the silent attempt, alive or not);
- beats from a thread of its own (HeartbeatThread), with its own event loop and
  bus connection: a role busy in synchronous work (importing torch, a long
  training step on a loaded node) blocks the executor's event loop, and a
  heartbeat on that loop would fall silent and get a live executor retried
  beside itself. Importing the heavy libraries before the first beat would
  cover start-up only, not a long step. The thread still stops beating once the
  main loop has not turned for `max_blocked_s`: a hung executor must be lost.
  Its bus is retried with backoff when it cannot start (a broker unreachable as
  the executor starts): silent beats would get a live executor declared lost;
- touches its lease file on each heartbeat, when the local runner gave it one,
  so a restarted scheduler can tell a live executor from a hung one;
- reports its own exit as its last act: an Observation on ferry.observations
  (the same fact a runner reports; the monitor takes whichever comes first and
  ignores the other) and the exit code next to its lease, for a runner that
  cannot wait() on it because an earlier scheduler started it.

An exit by signal (a suspend or cancel, or an eviction) is not reported here:
only whoever sent the signal knows whether it meant "suspended" or "lost", and
the runner's observation says that.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from pathlib import Path
from typing import Callable

import structlog

from services.scheduler.core.exits import SIGKILL_EXITS, SIGTERM_EXITS, classify_exit
from shared import topics
from shared.bus.port import Bus
from shared.clock import Clock
from shared.events import HEARTBEAT_STAGE, AlgorithmTaskSpec, ExecutorProgress, Observation, Phase
from shared.messaging import EventPublisher
from shared.retry import BackoffPolicy

HEARTBEAT = HEARTBEAT_STAGE
EXIT_SUFFIX = ".exit"
HEARTBEAT_BUS_RETRY = BackoffPolicy(1.0, 2.0, 30.0, 30)  # FERRY_EXECUTOR__HEARTBEAT_BUS_RETRY__*'s defaults

log = structlog.get_logger("ferry.executor.liveness")


def exit_file(lease: Path) -> Path:
    return lease.with_name(lease.name + EXIT_SUFFIX)


def write_exit_code(lease: Path | None, code: int) -> None:
    """Leave the exit code next to the lease (atomically): a runner that did not start us reads it."""
    if lease is None:
        return
    target = exit_file(lease)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(str(code))
        os.replace(tmp, target)
    except OSError:
        pass  # the runner then reports the exit as a kill: retried, nothing lost


def touch(lease: Path | None) -> None:
    if lease is None:
        return
    try:
        os.utime(lease)
    except OSError:
        pass


async def heartbeat(publisher: EventPublisher, spec: AlgorithmTaskSpec, every_s: float, clock: Clock,
                    lease: Path | None = None, alive: Callable[[], bool] = lambda: True) -> None:
    """Run until cancelled; a failed send is retried at the next beat (the bus may be down a while).
    A beat is skipped while `alive()` says the executor is hung."""
    while True:
        if not alive():
            await clock.sleep(every_s)
            continue
        touch(lease)
        try:
            await asyncio.wait_for(publisher.publish(topics.PROGRESS.name, spec.task_id, ExecutorProgress(
                algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id,
                attempt=spec.attempt, stage=HEARTBEAT)), timeout=max(every_s, 1.0))
        except (Exception, TimeoutError):
            pass
        await clock.sleep(every_s)


class HeartbeatThread:
    """heartbeat() on a thread of its own, as long as the executor's event loop still turns.

    `make_bus` builds the thread's own bus (a second producer): the executor's bus
    belongs to the main event loop, which may be the one blocked. The main loop
    proves it turns by calling tick() (keep_ticking()); once it has not for
    `max_blocked_s`, the beats stop, so that a hung executor is declared lost.
    A bus that fails to start (within `bus_start_timeout_s`) is replaced by a new
    one after the next delay of `bus_retry`, until that policy gives up."""

    def __init__(self, make_bus: Callable[[], Bus], spec: AlgorithmTaskSpec, every_s: float, clock: Clock,
                 lease: Path | None = None, max_blocked_s: float = 900.0,
                 bus_retry: BackoffPolicy = HEARTBEAT_BUS_RETRY, bus_start_timeout_s: float = 90.0):
        self._make_bus, self._spec, self._every_s, self._clock = make_bus, spec, every_s, clock
        self._lease, self._max_blocked_s = lease, max_blocked_s
        self._bus_retry, self._bus_start_timeout_s = bus_retry, bus_start_timeout_s
        self._bus: Bus | None = None  # the one being started or started: stop() closes it
        self._last_tick = clock.monotonic()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{spec.algo_task_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def tick(self) -> None:
        self._last_tick = self._clock.monotonic()

    def blocked_s(self) -> float:
        return self._clock.monotonic() - self._last_tick

    async def keep_ticking(self) -> None:
        """Run on the main loop until cancelled: each turn says the loop is not hung."""
        while True:
            self.tick()
            await self._clock.sleep(min(self._every_s, 1.0))

    def stop(self, timeout_s: float = 15.0) -> None:
        """Blocking: end the beats and wait for the thread (its bus flushed and closed)."""
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # its loop already closed: the thread is ending
        self._thread.join(timeout_s)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stopping.is_set():  # stopped before this loop existed to be woken
            return
        beats = asyncio.create_task(self._beat())
        await self._wake.wait()
        await cancel_and_wait(beats)  # a backoff wait or a start attempt included
        if self._bus is not None:
            await _stop_quietly(self._bus, 10.0)  # flushes the last beat

    async def _beat(self) -> None:
        bus = await self._started_bus()
        if bus is None:  # no bus for the beats: the monitor judges this executor by its other reports
            return
        await heartbeat(EventPublisher(bus, f"executor/{self._spec.algo_task_id}/heartbeat", self._clock),
                        self._spec, self._every_s, self._clock, self._lease, alive=self._loop_turns)

    async def _started_bus(self) -> Bus | None:
        """A started bus, a new one per attempt; None once the policy gives up or the error says
        retrying cannot help (a refused identity). The lease is touched meanwhile: the executor lives."""
        delays = self._bus_retry.delays()
        for attempt in itertools.count(1):
            self._bus = bus = self._make_bus()
            try:
                await asyncio.wait_for(bus.start(), self._bus_start_timeout_s)
                return bus
            except Exception as exc:  # TimeoutError included
                self._bus = None
                await _stop_quietly(bus, 5.0)
                delay = next(delays, None) if getattr(exc, "retriable", True) else None
                error = f"{type(exc).__name__}: {exc}"
                if delay is None:
                    log.error("executor.heartbeat_bus_gave_up", algo_task_id=self._spec.algo_task_id,
                              attempts=attempt, error=error)
                    return None
                log.warning("executor.heartbeat_bus_unavailable", algo_task_id=self._spec.algo_task_id,
                            attempt=attempt, retry_in_s=delay, error=error)
                await self._wait_touching(delay)
        return None  # not reached: itertools.count() is endless

    async def _wait_touching(self, seconds: float) -> None:
        deadline = self._clock.monotonic() + seconds
        while (left := deadline - self._clock.monotonic()) > 0:
            if self._loop_turns():
                touch(self._lease)
            await self._clock.sleep(min(left, self._every_s))

    def _loop_turns(self) -> bool:
        return not self._stopping.is_set() and self.blocked_s() < self._max_blocked_s


async def _stop_quietly(bus: Bus, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(bus.stop(), timeout_s)
    except Exception:  # TimeoutError included: the executor's exit must not wait on it
        pass


async def cancel_and_wait(task: asyncio.Task) -> None:
    # Python 3.11's asyncio.wait_for can swallow a cancel that lands as the awaited call completes
    # (gh-86296); the heartbeat would then beat on and this executor never report its end.
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)


def is_signal_exit(code: int) -> bool:
    return code in SIGTERM_EXITS or code in SIGKILL_EXITS


async def report_exit(publisher: EventPublisher, spec: AlgorithmTaskSpec, code: int, clock: Clock,
                      message: str = "", timeout_s: float = 10.0) -> bool:
    """Publish this attempt's end as an Observation; True if the bus took it."""
    if is_signal_exit(code):
        return False
    meaning = classify_exit(code, "run")
    observation = Observation(
        algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id, attempt=spec.attempt,
        phase=Phase.SUCCEEDED if code == 0 else Phase.FAILED, exit_code=code, reason=meaning.reason,
        message=message[:2000], retriable=meaning.retriable, source="executor", observed_at_ms=clock.now_ms())
    try:
        await asyncio.wait_for(publisher.publish(topics.OBSERVATIONS.name, spec.task_id, observation), timeout_s)
        return True
    except (Exception, TimeoutError):
        return False  # the runner's observation of the exit is the backstop
