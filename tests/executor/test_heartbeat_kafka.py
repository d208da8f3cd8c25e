"""On a real broker: an executor whose event loop is blocked keeps a real monitor hearing it.

Two executors, each run as its process runs it (services.executor.main.run_with_settings:
its Kafka bus and its heartbeat thread's own bus as role party, over mutual TLS), hold their
event loops in synchronous work for well past the monitor's lost-after time. A monitor
consuming from the broker keeps the busy one RUNNING, having heard its beats, and declares
the other lost: the control, whose loop counts as hung (blocked past its
heartbeat_max_blocked_s), so its heartbeat thread stops beating.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from services.executor.main import run_with_settings
from services.monitor.adapters.state_store import MonitorStateStore
from services.monitor.app import MonitorService
from shared import topics
from shared.algorithms import AlgorithmRegistry, AlgorithmSpec, RoleResult, RoleSpec
from shared.bus.kafka import KafkaBus, KafkaSettings, tls_from_environment
from shared.clock import SystemClock
from shared.events import AlgorithmTaskSpec, JobAction, JobEvent, Observation, Phase, Status, TaskPlanned
from shared.messaging import EventPublisher
from shared.runtime import make_bus
from shared.settings import FerrySettings

from tests.kafka_broker_fixture import create_catalogue_topics

LOST_AFTER_S = 4.0
HEARTBEAT_S = 0.25
HUNG_AFTER_S = 1.0  # the control's heartbeat_max_blocked_s
WAIT_S = 90.0       # for anything the broker or a loaded machine may delay

RELEASE: dict[str, threading.Event] = {}  # algo_task_id -> what ends its role's block


class BlockedRole:
    """Synchronous work on the executor's event loop (a long training step), until released."""

    async def run(self, ctx) -> RoleResult:
        RELEASE[ctx.task.algo_task_id].wait(WAIT_S)
        return RoleResult()


REGISTRY = AlgorithmRegistry([AlgorithmSpec("test.blocked", "1", (
    RoleSpec("worker", f"{__name__}:BlockedRole", needs_data=False),))])


def _settings(bootstrap: str, tmp_path, max_blocked_s: float) -> FerrySettings:
    return FerrySettings(
        kafka={"bootstrap": bootstrap},
        executor={"heartbeat_s": HEARTBEAT_S, "heartbeat_max_blocked_s": max_blocked_s,
                  "checkpoint_dir": tmp_path / "checkpoints", "artifacts_dir": tmp_path / "artifacts"},
        monitor={"executor_lost_after_s": LOST_AFTER_S, "executor_startup_grace_s": 0.0,
                 "state_dir": tmp_path / "monitor"})


def _executor(spec: AlgorithmTaskSpec, settings: FerrySettings, codes: dict[str, int]) -> threading.Thread:
    """An executor on a thread of its own (its own event loop, which its role blocks)."""
    RELEASE[spec.algo_task_id] = threading.Event()

    def main() -> None:
        codes[spec.algo_task_id] = asyncio.run(run_with_settings(spec, settings, asyncio.Event(), registry=REGISTRY))

    return threading.Thread(target=main, name=f"executor-{spec.algo_task_id}", daemon=True)


async def _until(condition, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.1)


async def test_a_blocked_executor_is_heard_by_a_real_monitor_and_a_hung_one_is_declared_lost(
        kafka_bootstrap, tmp_path):
    await create_catalogue_topics(kafka_bootstrap)
    flow, task = f"hb-{uuid.uuid4().hex[:8]}", f"hb-{uuid.uuid4().hex[:8]}"
    busy, hung = (AlgorithmTaskSpec(f"{task}.{party}", task, flow, "train", "test.blocked", "1", {}, party,
                                    "worker", (), "", 1) for party in ("busy", "hung"))
    settings = _settings(kafka_bootstrap, tmp_path, max_blocked_s=900.0)
    monitor_bus = make_bus(settings, "monitor-heartbeat-test", role="monitor")
    await monitor_bus.start()
    monitor = MonitorService(monitor_bus, SystemClock(), MonitorStateStore(settings.monitor.state_dir),
                             lost_after_s=LOST_AFTER_S, startup_grace_s=0.0)
    stop_monitor = asyncio.Event()
    monitor_run = asyncio.create_task(monitor.run(stop_monitor))
    # The scheduler's part, as admin: both attempts planned, dispatched, seen running.
    admin = KafkaBus(KafkaSettings(bootstrap=kafka_bootstrap, client_id="heartbeat-test",
                                   tls=tls_from_environment("admin")))
    await admin.start()
    publisher = EventPublisher(admin, "heartbeat-test", SystemClock())
    await publisher.publish(topics.TASKS_PLANNED.name, task, TaskPlanned(task, flow, "train", (), (busy, hung),
                                                                          (task,), 0))
    for spec in (busy, hung):
        await publisher.publish(topics.JOBS.name, task, JobEvent(
            spec.algo_task_id, task, flow, 1, JobAction.CREATED, f"job-{spec.party}", "local", "", False))
        await publisher.publish(topics.OBSERVATIONS.name, task, Observation(
            spec.algo_task_id, task, flow, 1, Phase.RUNNING, f"pod-{spec.party}", 0, "", "", False))
    await admin.stop()

    def algo(spec: AlgorithmTaskSpec):
        entry = monitor.state.tasks.get(task)
        return next((a for a in entry.algos if a.algo_task_id == spec.algo_task_id), None) if entry else None

    codes: dict[str, int] = {}
    threads = [_executor(busy, settings, codes),
               _executor(hung, settings.model_copy(update={"executor": settings.executor.model_copy(
                   update={"heartbeat_max_blocked_s": HUNG_AFTER_S})}), codes)]
    try:
        await _until(lambda: all(algo(s) and algo(s).status is Status.RUNNING for s in (busy, hung)),
                     "the monitor sees both executors running")
        for thread in threads:
            thread.start()
        blocked_since = time.monotonic()
        # Both roles now hold their loops. The control goes quiet after HUNG_AFTER_S and is lost
        # LOST_AFTER_S later; the busy one must outlive that, and two lost-after periods besides.
        await _until(lambda: algo(hung).attempt == 2, "the hung executor is declared lost")
        assert algo(hung).status is Status.RETRYING
        await _until(lambda: time.monotonic() - blocked_since > 2 * LOST_AFTER_S + HUNG_AFTER_S,
                     "the busy executor has been blocked past two lost-after periods")
        heard = algo(busy)
        assert (heard.status, heard.attempt) == (Status.RUNNING, 1), heard
        # Its beats reached the monitor: it said nothing else since it started blocking.
        silent_s = time.time() - heard.updated_at_ms / 1000
        assert silent_s < LOST_AFTER_S, f"last heard {silent_s:.1f} s ago"
        assert all(thread.is_alive() for thread in threads)  # both roles were blocked all along
    finally:
        for event in RELEASE.values():
            event.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join(WAIT_S)
    # The busy executor's end is its own attempt's, never a retry's; the hung one's is stale.
    assert codes == {busy.algo_task_id: 0, hung.algo_task_id: 0}
    await _until(lambda: algo(busy).status is Status.SUCCEEDED, "the busy executor's success is folded")
    assert algo(busy).attempt == 1 and algo(hung).attempt == 2
    stop_monitor.set()
    await asyncio.wait_for(monitor_run, WAIT_S)
    await monitor_bus.stop()
