"""A restarted scheduler rebuilds its decisions from the log: no double dispatch, resume works."""

from __future__ import annotations

import asyncio

from services.scheduler.app import SchedulerService
from services.scheduler.core import Dispatch, Resume, Suspend
from shared import topics
from shared.bus.memory import InMemoryBus
from shared.clock import SystemClock
from shared.events import (AlgorithmTaskSpec, CommandKind, EntityKind, Peer, StateChanged, Status, TaskCommand,
                           TaskPlanned)
from shared.messaging import EventPublisher


class RecordingRunner:
    name = "recording"

    def __init__(self):
        self.calls = []

    async def dispatch(self, spec):
        self.calls.append(Dispatch(spec))
        return f"job-{spec.algo_task_id}"

    async def suspend(self, spec):
        self.calls.append(Suspend(spec))

    async def resume(self, spec):
        self.calls.append(Resume(spec))

    async def cancel(self, spec):
        raise AssertionError("not expected")

    async def close(self):
        pass


def _plan(task: str, deps=()) -> TaskPlanned:
    spec = AlgorithmTaskSpec(f"{task}.a", task, "f", task, "ferry.noop", "1", {}, "a", "worker", (Peer("a", "worker"),))
    return TaskPlanned(task, "f", task, tuple(deps), (spec,), ("t1", "t2"), 0)


async def _run_until(service, bus, runner, n_calls, stop):
    task = asyncio.create_task(service.run(stop))
    for _ in range(200):
        if len(runner.calls) >= n_calls:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task


async def test_restart_neither_redispatches_nor_forgets_what_it_dispatched():
    bus, clock = InMemoryBus(), SystemClock()
    upstream = EventPublisher(bus, "test", clock)
    await upstream.publish(topics.TASKS_PLANNED.name, "t1", _plan("t1"))
    await upstream.publish(topics.TASKS_PLANNED.name, "t2", _plan("t2", ["t1"]))
    first_runner = RecordingRunner()
    first = SchedulerService(bus, clock, lambda observe: first_runner)
    await upstream.publish(topics.COMMANDS.name, "f", TaskCommand("c1", CommandKind.SUSPEND, "f", "t1"))
    await _run_until(first, bus, first_runner, 2, asyncio.Event())
    assert [type(c).__name__ for c in first_runner.calls] == ["Dispatch", "Suspend"]

    # The user resumes while the scheduler is down; a new scheduler over the same log
    # carries out only that, then reacts to t1 succeeding.
    await upstream.publish(topics.COMMANDS.name, "f", TaskCommand("c2", CommandKind.RESUME, "f", "t1"))
    second_runner = RecordingRunner()
    second = SchedulerService(bus, clock, lambda observe: second_runner)
    stop = asyncio.Event()
    running = asyncio.create_task(second.run(stop))
    for _ in range(100):
        if second_runner.calls:
            break
        await asyncio.sleep(0.02)
    await upstream.publish(topics.TASK_EVENTS.name, "t1",
                           StateChanged(EntityKind.TASK, "t1", "f", "t1", Status.RUNNING, Status.SUCCEEDED))
    for _ in range(100):
        if len(second_runner.calls) >= 2:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await running
    assert second_runner.calls == [Resume(_plan("t1").algorithm_tasks[0]), Dispatch(_plan("t2").algorithm_tasks[0])]
