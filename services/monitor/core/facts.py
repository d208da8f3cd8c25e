"""Facts about one algorithm task: JobEvent, Observation, ExecutorProgress.

A fact may arrive before its task's plan (the plan is on another topic); it
is parked on a placeholder entry and replayed, in arrival order, when the plan
arrives (planning.py).
"""

from __future__ import annotations

from services.monitor.core.changes import move_algo, note_algo, settle_task, with_algo
from services.monitor.core.decide import Verdict, decide
from services.monitor.core.dedup import duplicate, seen
from services.monitor.core.draft import Draft
from services.monitor.core.effects import Anomaly
from services.monitor.core.rounds import record_round, round_point
from services.monitor.core.state import AlgoTask, Outcome, Task, append_record, evolve
from services.monitor.core.transitions import Fact, classify
from shared.events import HEARTBEAT_STAGE, Envelope, JobEvent

PARKED_LIMIT = 1000  # facts kept per unplanned task; a plan that never comes must not eat memory


def on_fact(draft: Draft) -> None:
    env = draft.env
    event = env.event
    task = draft.task(event.task_id)
    if task is not None and duplicate(draft, task.sequences):
        return
    if task is None or not task.planned:
        _park(draft, task, env)
        return
    apply_fact(draft, task, env, seen(task.sequences, env))


def _park(draft: Draft, task: Task | None, env: Envelope) -> None:
    event = env.event
    if task is None:
        task = Task(event.task_id, event.flow_id)
    if len(task.parked) >= PARKED_LIMIT:
        draft.emit(Anomaly(event.task_id, f"{PARKED_LIMIT} facts wait for a plan; dropping this one",
                           env.event_id, event.flow_id))
        parked = task.parked
    else:
        parked = task.parked + (env,)
    draft.put_task(evolve(task, sequences=seen(task.sequences, env), parked=parked))


def apply_fact(draft: Draft, task: Task, env: Envelope, sequences=None) -> None:
    """Apply one fact to a planned task; `sequences`, if given, replace the task's dedup state."""
    event = env.event
    index = _member_index(task, event.algo_task_id)
    extra = {} if sequences is None else {"sequences": sequences}
    if index is None or event.flow_id != task.flow_id:
        task_anomaly(draft, evolve(task, **extra), f"{env.type_name} names algorithm task "
                     f"{event.algo_task_id!r} of flow {event.flow_id!r}, which task {task.task_id} does not have")
        return
    algo, fact = task.algos[index], classify(event)
    decision = decide(algo, fact, event, draft.base.max_attempts)
    verdict = decision.verdict
    if verdict is Verdict.KEEP:
        draft.put_task(with_algo(task, index, _absorb(algo, fact, event, env.timestamp_ms), **extra))
    elif verdict is Verdict.APPLY:
        # What the fact carries (unless a stop confirmed by an older attempt), in the one copy
        # that moves the member (absorbing touches neither its status nor its history).
        absorbed = _absorbed(algo, fact, event, env.timestamp_ms) if event.attempt == algo.attempt else {}
        algo = move_algo(draft, task, algo, decision.to_status, decision.attempt, decision.reason, absorbed)
        settle_task(draft, with_algo(task, index, algo, **extra))
    elif verdict is Verdict.IGNORE:
        draft.put_task(with_algo(task, index, note_algo(draft, algo, Outcome.IGNORED, decision.reason), **extra))
    else:
        draft.emit(Anomaly(algo.algo_task_id, decision.reason, env.event_id, task.flow_id))
        draft.put_task(with_algo(task, index, note_algo(draft, algo, Outcome.ANOMALY, decision.reason), **extra))


def _member_index(task: Task, algo_task_id: str) -> int | None:
    for index, algo in enumerate(task.algos):
        if algo.algo_task_id == algo_task_id:
            return index
    return None


def _absorb(algo: AlgoTask, fact: Fact, event, at_ms: int) -> AlgoTask:
    """The data a fact of the current attempt carries, whatever it does to the status."""
    return evolve(algo, **_absorbed(algo, fact, event, at_ms))


def _absorbed(algo: AlgoTask, fact: Fact, event, at_ms: int) -> dict:
    """_absorb's changes to the member, as evolve() keywords."""
    if fact is Fact.PROGRESS:
        if event.stage == HEARTBEAT_STAGE:  # alive, nothing more: the progress shown stays
            return {"job_attempt": event.attempt, "updated_at_ms": at_ms, "spoke_attempt": event.attempt}
        rounds = algo.rounds
        if event.round > 0 and event.metrics:
            rounds = record_round(rounds, round_point(event.round, event.attempt, at_ms, dict(event.metrics)))
        # A report without round numbers ("started", "finished") keeps the last known round.
        numbered = event.round or event.total_rounds
        return {"job_attempt": event.attempt, "round": event.round if numbered else algo.round,
                "total_rounds": event.total_rounds if numbered else algo.total_rounds,
                "stage": event.stage, "metrics": dict(event.metrics) if event.metrics else algo.metrics,
                "updated_at_ms": at_ms, "rounds": rounds, "spoke_attempt": event.attempt}
    if fact is Fact.JOB_DISPATCH_FAILED:
        return {"updated_at_ms": at_ms}
    if fact is Fact.SEEN_PENDING and event.reason:  # why it waits: queued by admission, unschedulable pod
        return {"job_attempt": event.attempt, "stage": f"pending: {event.reason}", "updated_at_ms": at_ms}
    job_name = event.job_name if type(event) is JobEvent and event.job_name else algo.job_name
    return {"job_attempt": event.attempt, "job_name": job_name, "updated_at_ms": at_ms}


def task_anomaly(draft: Draft, task: Task, reason: str) -> None:
    record = draft.record(Outcome.ANOMALY, task.status, None, 0, reason)
    draft.put_task(evolve(task, history=append_record(task.history, record)))
    draft.emit(Anomaly(task.task_id, reason, draft.env.event_id, task.flow_id))
