"""The executor: runs one algorithm task (one party, one role) and exits with a meaningful code.

Contract with the runners (local process, Kubernetes Job, inline task):
FERRY_TASK_SPEC holds the task; FERRY_EXECUTOR__{DATA,CHECKPOINT,ARTIFACTS}_DIR
the party's folders; SIGTERM asks the role to checkpoint and stop (exit 143);
exit codes follow shared.errors (0 done, 2 configuration, 3 data, 75 transient).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import structlog

from services.executor import liveness
from services.executor.artifacts import ArtifactStore
from services.executor.checkpoints import FileCheckpointStore
from services.executor.context import ExecutorContext
from services.executor.federation.identity import Trust, ensure_dev_keys, load_trust
from services.executor.threads import HOW_TO_CHANGE, apply_torch_threads
from shared import topics
from shared.algorithms import AlgorithmRegistry, load_role
from shared.bus.metered import MeteredBus
from shared.bus.port import Bus
from shared.clock import Clock, SystemClock
from shared.errors import ConfigurationError, DataError, FerryError, Suspended
from shared.events import AlgorithmTaskSpec, ExecutorProgress
from shared.messaging import EventPublisher
from shared.retry import BackoffPolicy

if TYPE_CHECKING:
    from shared.settings import FerrySettings


def _data_opener(data_dir: Path | None, spec: AlgorithmTaskSpec) -> Callable[[], Any] | None:
    if data_dir is None or not spec.data_ref:
        return None

    def open_party_data() -> Any:
        from services.executor.data import open_dataset

        try:
            return open_dataset(data_dir, spec.data_ref)
        except DataError as exc:  # say whose data, for which role: the store path alone does not
            raise DataError(f"party {spec.party} has no readable dataset {spec.data_ref!r} for role "
                            f"{spec.role}: {exc}") from exc

    return open_party_data


async def _report_failure(publisher: EventPublisher, spec: AlgorithmTaskSpec, exc: BaseException) -> None:
    """The role's own words for the monitor, whose reason names only the class of failure."""
    try:
        await publisher.publish(topics.PROGRESS.name, spec.task_id, ExecutorProgress(
            algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id, attempt=spec.attempt,
            stage=f"failed: {type(exc).__name__}: {exc}"[:500]))
    except Exception:  # the exit code still tells the scheduler what happened
        pass


def dev_trust(keys_dir: Path, spec: AlgorithmTaskSpec) -> Trust:
    """Development provisioning: keys for this task's parties under keys_dir, made on first use."""
    template, registry = ensure_dev_keys(keys_dir, [spec.party, *(p.party for p in spec.peers)])
    return load_trust(spec.party, template, registry, insecure=False)


async def run_task(spec: AlgorithmTaskSpec, dirs: dict[str, Path], stop: asyncio.Event, *, bus: Bus,
                   clock: Clock, registry: AlgorithmRegistry | None = None, heartbeat_s: float = 5.0,
                   lease: Path | None = None, trust: Callable[[], Trust] | Trust | None = None,
                   max_incomplete_payloads: int = 8, heartbeat_bus: Callable[[], Bus] | None = None,
                   heartbeat_max_blocked_s: float = 900.0,
                   heartbeat_bus_retry: BackoffPolicy = liveness.HEARTBEAT_BUS_RETRY,
                   heartbeat_bus_start_timeout_s: float = 90.0) -> int:
    """Run one attempt of an algorithm task, heartbeating, and report how it ended; returns the exit code.

    The exit report is the last act (liveness.py): the executor's own word, so its end
    is known even when the scheduler that started it is gone.
    trust: this party's identity and the federation's keys, or a loader of them (called inside,
    so that a bad key file fails the task with its reason like any configuration error).
    heartbeat_bus: makes the heartbeat thread's own bus (a process executor); without it the
    heartbeat runs on this event loop (an inline executor, whose loop is the monitor's too);
    heartbeat_bus_retry and heartbeat_bus_start_timeout_s: how that bus is retried when it
    cannot start (liveness.HeartbeatThread).
    """
    bus = MeteredBus(bus)  # each round report logs the bytes this executor produced and fetched
    publisher = EventPublisher(bus, f"executor/{spec.algo_task_id}", clock)
    thread = None
    if heartbeat_bus is None:  # in-process: the loop blocked is the monitor's too
        beats = asyncio.create_task(liveness.heartbeat(
            EventPublisher(bus, f"executor/{spec.algo_task_id}/heartbeat", clock), spec, heartbeat_s, clock, lease))
    else:  # beats go on through a role's long synchronous work (liveness.py)
        thread = liveness.HeartbeatThread(heartbeat_bus, spec, heartbeat_s, clock, lease, heartbeat_max_blocked_s,
                                          heartbeat_bus_retry, heartbeat_bus_start_timeout_s)
        thread.start()
        beats = asyncio.create_task(thread.keep_ticking())
    failure: list[str] = []
    try:
        code = await _run_role(spec, dirs, stop, bus=bus, clock=clock, registry=registry, publisher=publisher,
                               failure=failure, trust=trust, max_incomplete_payloads=max_incomplete_payloads)
    finally:
        await liveness.cancel_and_wait(beats)
        if thread is not None:
            await asyncio.to_thread(thread.stop)
    await liveness.report_exit(publisher, spec, code, clock, failure[0] if failure else "")
    liveness.write_exit_code(lease, code)
    return code


async def _run_role(spec: AlgorithmTaskSpec, dirs: dict[str, Path], stop: asyncio.Event, *, bus: Bus,
                    clock: Clock, registry: AlgorithmRegistry | None, publisher: EventPublisher,
                    failure: list[str], trust: Callable[[], Trust] | Trust | None,
                    max_incomplete_payloads: int) -> int:
    log = structlog.get_logger(service="executor").bind(
        flow=spec.flow_id, task=spec.task_id, algo_task=spec.algo_task_id, party=spec.party,
        role=spec.role, attempt=spec.attempt)
    ctx: ExecutorContext | None = None
    try:
        registry = registry or AlgorithmRegistry.from_entry_points()
        algorithm = registry.get(spec.algorithm, spec.version)
        if algorithm is None or algorithm.role(spec.role) is None:
            raise ConfigurationError(f"algorithm {spec.algorithm} {spec.version} with role {spec.role} "
                                     f"is not installed on this node")
        role = load_role(algorithm.role(spec.role))
        if callable(trust):
            trust = trust()
        ctx = ExecutorContext(
            task=spec, params=algorithm.with_defaults(spec.params),
            checkpoints=FileCheckpointStore(dirs["checkpoints"], spec.algo_task_id),
            artifacts=ArtifactStore(dirs["artifacts"], spec.flow_id),
            peers=None, clock=clock, log=log, publisher=publisher, stop=stop,
            data_opener=_data_opener(dirs.get("data"), spec), bus=bus, trust=trust,
            max_incomplete_payloads=max_incomplete_payloads)
        log.info("executor.started", torch_threads=int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                 threads_hint=HOW_TO_CHANGE)
        await ctx.report(stage="started")
        result = await role.run(ctx)
        await ctx.report(stage="finished", metrics=result.metrics)
        await ctx.flush_reports()  # a report that did not reach the bus fails the task, as before
        log.info("executor.finished", metrics=dict(result.metrics))
        return 0
    except Suspended:
        log.info("executor.suspended")
        await _flush_reports_quietly(ctx, log)
        return Suspended.exit_code
    except FerryError as exc:
        log.error("executor.failed", error=str(exc), error_type=type(exc).__name__, retriable=exc.retriable)
        failure.append(f"executor.failed: {type(exc).__name__}: {exc}")
        await _flush_reports_quietly(ctx, log)
        await _report_failure(publisher, spec, exc)
        return exc.exit_code
    except Exception as exc:
        log.exception("executor.crashed")
        failure.append(f"executor.crashed: {type(exc).__name__}: {exc}")
        await _flush_reports_quietly(ctx, log)
        await _report_failure(publisher, spec, exc)
        return 1


def heartbeat_options(settings: FerrySettings) -> dict[str, Any]:
    """run_task's heartbeat arguments from FERRY_EXECUTOR__*."""
    ex = settings.executor
    return {"heartbeat_s": ex.heartbeat_s, "heartbeat_max_blocked_s": ex.heartbeat_max_blocked_s,
            "heartbeat_bus_retry": ex.heartbeat_bus_retry.policy(),
            "heartbeat_bus_start_timeout_s": ex.heartbeat_bus_start_timeout_s}


async def run_with_settings(spec: AlgorithmTaskSpec, settings: FerrySettings, stop: asyncio.Event, *,
                            trust: Callable[[], Trust] | None = None,
                            registry: AlgorithmRegistry | None = None) -> int:
    """One attempt as an executor process runs it: its Kafka bus (role party, the executor's own
    linger), its heartbeat thread's bus (a second producer) and the heartbeat from `settings`."""
    from shared.runtime import make_bus

    ex = settings.executor
    dirs = {"data": ex.data_dir, "checkpoints": ex.checkpoint_dir, "artifacts": ex.artifacts_dir}
    kafka = settings.kafka.model_copy(update={"linger_ms": ex.kafka_linger_ms})
    bus = make_bus(settings.model_copy(update={"kafka": kafka}), f"executor-{spec.algo_task_id}", role="party")
    await bus.start()
    try:
        return await run_task(
            spec, dirs, stop, bus=bus, clock=SystemClock(), registry=registry, lease=ex.lease_file, trust=trust,
            max_incomplete_payloads=settings.federation.max_incomplete_payloads,
            heartbeat_bus=lambda: make_bus(settings, f"executor-{spec.algo_task_id}-heartbeat", role="party"),
            **heartbeat_options(settings))
    finally:
        await bus.stop()


async def _flush_reports_quietly(ctx: ExecutorContext | None, log, timeout_s: float = 10.0) -> None:
    """The role's reports before it stopped go out first (their sequence numbers come first);
    one that cannot is logged, the task's end is reported regardless."""
    if ctx is None:
        return
    try:
        await asyncio.wait_for(ctx.flush_reports(), timeout_s)
    except (Exception, TimeoutError) as exc:
        log.warning("executor.progress_lost", error=f"{type(exc).__name__}: {exc}")


def main() -> int:
    import os

    from shared.logging import configure_logging
    from shared.settings import FerrySettings
    from shared.wire.codec import spec_from_text

    settings = FerrySettings()
    configure_logging(settings.log.level, settings.log.json_output)
    apply_torch_threads(settings.executor.torch_threads)
    text = os.environ.get("FERRY_TASK_SPEC")
    if not text:
        structlog.get_logger().error("executor.no_task", reason="FERRY_TASK_SPEC is not set")
        return ConfigurationError.exit_code
    spec = spec_from_text(text)
    fed = settings.federation

    def trust() -> Trust:
        return load_trust(spec.party, fed.identity_key_file, fed.key_registry, fed.insecure_unpinned)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        return await run_with_settings(spec, settings, stop, trust=trust)

    return asyncio.run(go())
