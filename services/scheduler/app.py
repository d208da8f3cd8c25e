"""Scheduler service: plan + monitor state + commands in, runner actions and job events out."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog
from fastapi import APIRouter

from services.scheduler.adapters.supervised import SupervisedRunner
from services.scheduler.core import Cancel, Dispatch, Resume, RunnerCommand, SchedulerState, Suspend, step
from services.scheduler.ports import Runner
from shared import topics
from shared.bus.port import Bus, Record, TopicPartition
from shared.errors import MalformedMessage
from shared.clock import Clock
from shared.events import Envelope, JobAction, JobEvent, Observation
from shared.messaging import DeadLetters, EventPublisher, consume
from shared.metrics import TASKS_DISPATCHED
from shared.readiness import Readiness
from shared.retry import BackoffPolicy
from shared.settings import FerrySettings
from shared.wire import codec

# Plans first: a replayed state change or command must find the task it names.
INPUT_TOPICS = (topics.TASKS_PLANNED.name, topics.TASK_EVENTS.name, topics.COMMANDS.name)
_ACTIONS = {Dispatch: JobAction.CREATED, Suspend: JobAction.SUSPENDED,
            Resume: JobAction.RESUMED, Cancel: JobAction.DELETED}


class SchedulerService:
    name = "scheduler"
    default_port = 8082
    router: APIRouter | None = None

    def __init__(self, bus: Bus, clock: Clock, runner_factory, retry: BackoffPolicy = BackoffPolicy()):
        self._bus = bus
        self._clock = clock
        self._retry = retry
        self.publisher = EventPublisher(bus, self.name, clock)
        self.runner: Runner = runner_factory(self._observe)
        self.state = SchedulerState()
        self.readiness = Readiness(bus, clock)
        self._queued: set[asyncio.Task] = set()  # dispatches waiting for admission
        self._log = structlog.get_logger(service=self.name)

    async def _observe(self, observation: Observation) -> None:
        await self.publisher.publish(topics.OBSERVATIONS.name, observation.task_id, observation)

    async def _execute(self, command: RunnerCommand, admitted: bool = False) -> None:
        spec = command.spec
        log = self._log.bind(flow=spec.flow_id, task=spec.task_id, algo_task=spec.algo_task_id,
                             party=spec.party, attempt=spec.attempt, action=type(command).__name__)
        job_name, reason, retriable, action = "", "", False, _ACTIONS[type(command)]
        try:
            if admitted:  # a slot of the admission gate is taken for it
                job_name = await self.runner.launch(spec, resume=isinstance(command, Resume))
                if isinstance(command, Dispatch):
                    TASKS_DISPATCHED.labels(self.runner.name).inc()
            elif isinstance(command, Dispatch):
                job_name = await self.runner.dispatch(spec)
                TASKS_DISPATCHED.labels(self.runner.name).inc()
            elif isinstance(command, Suspend):
                await self.runner.suspend(spec)
            elif isinstance(command, Resume):
                await self.runner.resume(spec)
            else:
                await self.runner.cancel(spec)
        except Exception as exc:  # a runner failure fails this task, never the scheduler
            log.exception("runner.failed")
            action, reason = JobAction.DISPATCH_FAILED, f"{type(exc).__name__}: {exc}"
            retriable = bool(getattr(exc, "retriable", False))
        log.info("runner.done", job=job_name, outcome=action.name)
        event = JobEvent(algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id,
                         attempt=spec.attempt, action=action, job_name=job_name, runner=self.runner.name,
                         reason=reason, retriable=retriable)
        await self.publisher.publish(topics.JOBS.name, spec.task_id, event)

    async def handle(self, envelope: Envelope, record: Record) -> None:
        self.state, commands = step(self.state, envelope.event)
        await self._carry_out(commands)

    async def _carry_out(self, commands: list[RunnerCommand]) -> None:
        """Carry out runner commands in input order.

        Suspend/cancel wait for the executor to stop; they run concurrently so one slow
        executor does not hold the others. With admission limits (admission.py), a
        dispatch or resume that must queue is carried out in the background once
        admitted, and its job event published only then: the input log is not held up,
        and a scheduler restarted meanwhile finds the dispatch still to do."""
        enqueue = getattr(self.runner, "enqueue", None)
        now = []
        for command in commands:
            if enqueue is not None and isinstance(command, (Dispatch, Resume)):
                admitted = enqueue(command.spec)  # synchronous: a later cancel finds it queued
                if admitted.done():
                    now.append(self._execute(command, admitted=True))
                else:
                    task = asyncio.create_task(self._when_admitted(command, admitted))
                    self._queued.add(task)
                    task.add_done_callback(self._queued.discard)
                continue
            now.append(self._execute(command))
        await asyncio.gather(*now)

    async def _when_admitted(self, command: RunnerCommand, admitted: asyncio.Future) -> None:
        await self.runner.announce_queued(command.spec)
        outcome = await admitted
        if outcome is True:
            await self._execute(command, admitted=True)
            return
        # Withdrawn by a suspend or cancel while queued: its job event says so, so that a
        # rebuild counts this dispatch as carried out.
        spec = command.spec
        action = JobAction.SUSPENDED if outcome == "suspend" else JobAction.DELETED
        await self.publisher.publish(topics.JOBS.name, spec.task_id, JobEvent(
            algo_task_id=spec.algo_task_id, task_id=spec.task_id, flow_id=spec.flow_id, attempt=spec.attempt,
            action=action, runner=self.runner.name, reason=f"withdrawn while queued ({outcome})"))

    async def rebuild(self) -> tuple[dict[TopicPartition, int], list[RunnerCommand]]:
        """Fold every input record already on the bus, and find what is left to do.

        The scheduler's decisions are a function of its input log, and ferry.jobs is
        the log of what it carried out. A (re)started scheduler replays its inputs
        without acting, compares each algorithm task attempt's decided actions with
        the job events already published for it, and returns the ones never carried
        out, plus the positions where the replay ended: it consumes from there, so
        nothing is applied twice and nothing is dispatched again.
        """
        positions: dict[TopicPartition, int] = {}
        decided: dict[tuple[str, int], list[RunnerCommand]] = {}
        for topic in INPUT_TOPICS:
            for record in await self._bus.read_all(topic):
                positions[record.tp] = max(positions.get(record.tp, 0), record.offset + 1)
                try:
                    self.state, commands = step(self.state, codec.decode(record.value).event)
                except MalformedMessage:
                    continue  # dead-lettered when it was first consumed
                for command in commands:
                    decided.setdefault((command.spec.algo_task_id, command.spec.attempt), []).append(command)
        done: dict[tuple[str, int], int] = {}
        for record in await self._bus.read_all(topics.JOBS.name):
            try:
                job = codec.decode(record.value).event
            except MalformedMessage:
                continue
            done[(job.algo_task_id, job.attempt)] = done.get((job.algo_task_id, job.attempt), 0) + 1
        pending = [c for key, commands in decided.items() for c in commands[done.get(key, 0):]]
        self._log.info("scheduler.rebuilt", planned_tasks=len(self.state.planned), pending=len(pending))
        return positions, pending

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics(topics.CATALOGUE)
        positions, pending = await self.rebuild()
        # Adopt first (the local runner's leases, the Kubernetes runner's list+watch of its
        # Jobs): a replayed dispatch of an executor that still runs must not start it twice.
        start = getattr(self.runner, "start", None)
        if start is not None:
            await start()
        await self._carry_out(pending)
        settle = getattr(self.runner, "settle", None)
        if settle is not None:  # ends of adopted executors no replayed dispatch claimed
            await settle()
        consumer = self._bus.consumer(list(INPUT_TOPICS), group_id="ferry-scheduler", client_id="scheduler",
                                      on_assign=lambda tps: {tp: positions.get(tp, 0) for tp in tps})
        await consumer.start()
        self.readiness.restored = True
        self.readiness.watch(consumer)
        try:
            await consume(consumer, self.handle, dead_letters=DeadLetters(self.publisher, self.name, self._clock),
                          stop=stop, clock=self._clock, service=self.name, retry=self._retry)
        finally:
            for task in list(self._queued):
                task.cancel()
            await self.runner.close()
            await consumer.stop()

    def health(self) -> dict:
        body = {"ok": True, "runner": self.runner.name, "planned_tasks": len(self.state.planned)}
        if hasattr(self.runner, "queued"):
            body |= {"running_per_party": self.runner.running(), "queued": len(self.runner.queued())}
        return body


def build(settings: FerrySettings, bus: Bus, clock: Clock) -> SchedulerService:
    from services.executor.threads import thread_env
    from services.scheduler.adapters.launchers import LocalProcessLauncher
    from services.scheduler.adapters.leases import LeasingLauncher

    if settings.scheduler.runner == "kubernetes":
        return _kubernetes(settings, bus, clock)
    base_env = {k: v for k, v in os.environ.items() if k.startswith("FERRY_") and k != "FERRY_TASK_SPEC"}
    base_env["FERRY_KAFKA__BOOTSTRAP"] = settings.kafka.bootstrap
    base_env["FERRY_BUS__KIND"] = "kafka"
    base_env |= thread_env(settings.executor.torch_threads)  # executors share the node's cores
    work_dir = Path(settings.scheduler.work_dir)
    zygote = None
    if settings.scheduler.zygote:
        from services.scheduler.adapters.zygote import Zygote

        zygote = Zygote(env=base_env)
    cpu = None
    if settings.scheduler.local_cpu_limits:
        from services.scheduler.adapters.cpu_limits import CpuLimiter, parse_cpu_limits

        cpu = CpuLimiter(parse_cpu_limits(settings.scheduler.local_cpu_limits))
    launcher = LeasingLauncher(LocalProcessLauncher(work_dir, base_env, zygote, cpu), work_dir,
                               settings.scheduler.adopt_poll_s)
    return SchedulerService(bus, clock, _gated(settings, clock, lambda observe: SupervisedRunner(
        launcher, observe, clock)), settings.retry.policy())


def _gated(settings: FerrySettings, clock: Clock, make_runner, node_of=lambda party: "local"):
    """The runner behind an admission gate when limits are set (all local executors share one node)."""
    from services.scheduler.adapters.admission import AdmissionGate, AdmissionLimits

    limits = AdmissionLimits(settings.scheduler.max_running_per_party, settings.scheduler.max_running_per_node)
    if limits.unlimited:
        return make_runner
    return lambda observe: AdmissionGate(make_runner, observe, limits, clock, node_of)


_SCHEDULER_ONLY = frozenset({"FERRY_KAFKA__TLS_CA_FILE", "FERRY_KAFKA__TLS_CERT_FILE", "FERRY_KAFKA__TLS_KEY_FILE",
                             "FERRY_KAFKA__TLS_CERT_DIR",
                             # paths on the scheduler's host: a Pod gets its own from its Job's volumes
                             "FERRY_EXECUTOR__DATA_DIR", "FERRY_EXECUTOR__CHECKPOINT_DIR",
                             "FERRY_EXECUTOR__ARTIFACTS_DIR", "FERRY_EXECUTOR__LEASE_FILE"})


def executor_pod_env(environ: dict[str, str], bootstrap: str) -> dict[str, str]:
    """What a scheduler passes on to its executor Pods: the bus, logging, retry and executor settings
    (heartbeats, threads, ...), never its own HTTP and runner settings nor its host's paths."""
    env = {k: v for k, v in environ.items()
           if k.startswith(("FERRY_KAFKA__", "FERRY_LOG__", "FERRY_RETRY__", "FERRY_EXECUTOR__"))
           and k not in _SCHEDULER_ONLY}
    return env | {"FERRY_KAFKA__BOOTSTRAP": bootstrap, "FERRY_BUS__KIND": "kafka"}


def _kubernetes(settings: FerrySettings, bus: Bus, clock: Clock) -> SchedulerService:
    from services.scheduler.adapters.kubernetes import JobSettings, KubeApi, KubernetesRunner, PartyCredentials
    from services.scheduler.adapters.node_registry import load_node_registry

    if settings.scheduler.node_registry is None:
        raise SystemExit("FERRY_SCHEDULER__NODE_REGISTRY must name the node registry (docs/node-registry.md)")
    registry = load_node_registry(settings.scheduler.node_registry, default_namespace=settings.scheduler.namespace)
    env = executor_pod_env(dict(os.environ), settings.kafka.bootstrap)
    sched = settings.scheduler
    credentials = PartyCredentials(sched.executor_identity_secret, sched.executor_key_registry,
                                   "" if settings.kafka.insecure_plaintext else sched.executor_kafka_tls_secret)
    if sched.executor_host_network:
        structlog.get_logger("ferry.scheduler").warning(
            "scheduler.INSECURE_host_network", detail="FERRY_SCHEDULER__EXECUTOR_HOST_NETWORK: executor Pods share "
            "their node's network namespace; development clusters only")
    job_settings = JobSettings(env=tuple(sorted(env.items())), credentials=credentials,
                               host_network=sched.executor_host_network)
    def node_of(party: str) -> str:  # a party's placement: its namespace and node selector
        node = registry.node_for(party)
        return f"{node.namespace}/{sorted(node.node_selector.items())}"

    return SchedulerService(bus, clock, _gated(settings, clock, lambda observe: KubernetesRunner(
        KubeApi(), registry, settings.scheduler.executor_image, observe=observe, clock=clock,
        settings=job_settings), node_of), settings.retry.policy())


def main() -> int:
    from shared.runtime import run_service

    return run_service(build, "scheduler")
