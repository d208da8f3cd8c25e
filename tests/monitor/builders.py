"""Envelope and state builders for the monitor's tests."""

from __future__ import annotations

from services.monitor.core import MonitorState, step
from services.monitor.core import derive
from services.monitor.core.state import evolve
from shared.events import (AlgorithmTaskSpec, CommandKind, Envelope, ExecutorProgress, FieldError, FlowRejected,
                           JobAction, JobEvent, Observation, Phase, Status, TaskCommand, TaskPlanned)

FLOW = "f1"
TASK = "t1"
ALGO = "a1"


class Feed:
    """Wraps events into envelopes with per-(producer, key) sequences and a ticking clock."""

    def __init__(self, start_ms: int = 1_000):
        self.now = start_ms
        self.sequences: dict[tuple[str, str], int] = {}
        self.count = 0

    def __call__(self, event, key: str | None = None, producer: str | None = None) -> Envelope:
        key = key if key is not None else _default_key(event)
        producer = producer or _default_producer(event)
        seq = self.sequences[(producer, key)] = self.sequences.get((producer, key), 0) + 1
        self.now += 10
        self.count += 1
        return Envelope(event, f"ev-{self.count}", key, seq, producer, self.now)


def _default_key(event) -> str:
    if isinstance(event, (TaskCommand, FlowRejected)):
        return event.flow_id
    return event.task_id


def _default_producer(event) -> str:
    return {TaskPlanned: "splitter/0", JobEvent: "scheduler/0", Observation: "watcher/0",
            ExecutorProgress: "executor/0", TaskCommand: "api/0", FlowRejected: "splitter/0"}[type(event)]


def plan(task_id: str = TASK, algos: tuple[str, ...] = (ALGO,), flow_id: str = FLOW,
         depends_on: tuple[str, ...] = (), flow_task_ids: tuple[str, ...] | None = None) -> TaskPlanned:
    specs = tuple(AlgorithmTaskSpec(a, task_id, flow_id, f"step-{task_id}", "fedavg", "1", {}, f"party-{a}",
                                    "client", ()) for a in algos)
    return TaskPlanned(task_id, flow_id, f"step-{task_id}", depends_on, specs,
                       flow_task_ids if flow_task_ids is not None else (task_id,), 0)


def job(action: JobAction, algo: str = ALGO, attempt: int = 1, task_id: str = TASK, flow_id: str = FLOW,
        retriable: bool = False, reason: str = "") -> JobEvent:
    return JobEvent(algo, task_id, flow_id, attempt, action, f"job-{algo}-{attempt}", "local", reason, retriable)


def seen(phase: Phase, algo: str = ALGO, attempt: int = 1, task_id: str = TASK, flow_id: str = FLOW,
         exit_code: int = 0, retriable: bool = False, reason: str = "") -> Observation:
    return Observation(algo, task_id, flow_id, attempt, phase, f"pod-{algo}", exit_code, reason, "", retriable)


def progress(round_: int = 1, algo: str = ALGO, attempt: int = 1, task_id: str = TASK, flow_id: str = FLOW,
             metrics: dict | None = None) -> ExecutorProgress:
    return ExecutorProgress(algo, task_id, flow_id, attempt, round_, 10, "training",
                            metrics if metrics is not None else {"loss": 1.0 / round_})


def command(kind: CommandKind, task_id: str = "", flow_id: str = FLOW, command_id: str = "c1") -> TaskCommand:
    return TaskCommand(command_id, kind, flow_id, task_id, "alice", "testing")


def rejected(flow_id: str = FLOW) -> FlowRejected:
    return FlowRejected(flow_id, (FieldError("steps[0].algorithm", "unknown algorithm 'x'"),))


def run(feed: Feed, events, state: MonitorState | None = None) -> tuple[MonitorState, list]:
    """Fold events (wrapped by `feed`) and return the state and every effect."""
    state = state if state is not None else MonitorState()
    effects: list = []
    for event in events:
        state, emitted = step(state, event if isinstance(event, Envelope) else feed(event))
        effects.extend(emitted)
    return state, effects


def forced(state: MonitorState, algo_id: str, status: Status, attempt: int = 1, job_attempt: int = 0,
           task_id: str = TASK) -> MonitorState:
    """`state` with one algorithm task put straight into `status` (and its task/flow re-derived)."""
    task = state.tasks[task_id]
    algos = tuple(evolve(a, status=status, attempt=attempt, job_attempt=job_attempt)
                  if a.algo_task_id == algo_id else a for a in task.algos)
    task = evolve(task, algos=algos, status=derive.task_status([a.status for a in algos]))
    flow = state.flows[task.flow_id]
    tasks = state.tasks.set(task_id, task)
    statuses = [tasks[t].status if t in tasks else Status.PENDING for t in flow.task_ids]
    flows = state.flows.set(flow.flow_id, evolve(flow, status=derive.flow_status(statuses)))
    return MonitorState(tasks, flows, state.algo_to_task, state.max_attempts)


def algo_of(state: MonitorState, algo_id: str = ALGO, task_id: str = TASK):
    return next(a for a in state.tasks[task_id].algos if a.algo_task_id == algo_id)


def of_type(effects, cls) -> list:
    return [e for e in effects if isinstance(e, cls)]
