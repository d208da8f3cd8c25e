"""Snapshots of single entries, and a state rebuilt from them.

One snapshot per task and per flow (the compacted ferry.task-state topic
keeps the newest per key). A snapshot carries the entry's dedup sequences, so
restoring the snapshots committed together with the consumer offsets, then
replaying from those offsets, neither loses nor re-applies an event. Format:
UTF-8 JSON, versioned; enums as their wire numbers, facts parked before their
plan as base64 of the wire codec's envelope bytes. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from collections.abc import Iterable, Iterator, Mapping

import orjson

from services.monitor.core.pmap import PMap
from services.monitor.core.rounds import RoundPoint, round_point
from services.monitor.core.state import (DEFAULT_MAX_ATTEMPTS, AlgoTask, Flow, MonitorState, Outcome,
                                         Record, Task)
from shared.events import CommandKind, Envelope, Status
from shared.plain import slots_constructor
from shared.wire import codec

FORMAT = 1


def snapshot_task(state: MonitorState, task_id: str,
                  wire: Mapping[int, tuple[Envelope, bytes]] | None = None) -> bytes:
    """`wire` (id(envelope) -> (envelope, bytes)): the bytes parked envelopes were decoded from,
    where the caller still has them, so they need not be encoded again."""
    task = state.tasks[task_id]
    return _dump(_finite_metrics(task), {
        "format": FORMAT, "kind": "task", "task_id": task.task_id, "flow_id": task.flow_id,
        "status": task.status, "step": task.step, "index": task.index,
        "algorithm": task.algorithm, "version": task.version, "depends_on": list(task.depends_on),
        "planned_at_ms": task.planned_at_ms, "updated_at_ms": task.updated_at_ms, "reason": task.reason,
        "history": [_record(r) for r in task.history], "sequences": _sequences(task.sequences),
        "parked": [_parked(e, wire) for e in task.parked],
        "algos": [_algo(a) for a in task.algos],
    })


def snapshot_flow(state: MonitorState, flow_id: str) -> bytes:
    flow = state.flows[flow_id]
    return _dump(True, {
        "format": FORMAT, "kind": "flow", "flow_id": flow.flow_id, "status": flow.status,
        "task_ids": list(flow.task_ids), "hold": flow.hold, "reason": flow.reason,
        "updated_at_ms": flow.updated_at_ms, "history": [_record(r) for r in flow.history],
        "sequences": _sequences(flow.sequences),
    })


def snapshot_all(state: MonitorState) -> Iterator[bytes]:
    for task_id in state.tasks:
        yield snapshot_task(state, task_id)
    for flow_id in state.flows:
        yield snapshot_flow(state, flow_id)


def touched_since(before: MonitorState, after: MonitorState, flow_ids: Iterable[str],
                  task_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """touched() over a whole batch: `before` is the state before the batch, `flow_ids` and
    `task_ids` every flow and task id its events named. Entries are never removed and every
    change of a step stays inside its event's flow and task, so the entries to rewrite are those
    among these (and the named flows' tasks) that are not the very objects they were before."""
    candidates = dict.fromkeys(task_ids)
    flows = []
    for flow_id in flow_ids:
        flow = after.flows.get(flow_id)
        if flow is None:
            continue
        candidates.update(dict.fromkeys(flow.task_ids))
        if flow is not before.flows.get(flow_id):
            flows.append(flow_id)
    tasks = [t for t in candidates if t and after.tasks.get(t) is not before.tasks.get(t)]
    return tasks, flows


def touched(before: MonitorState, after: MonitorState, env: Envelope) -> tuple[list[str], list[str]]:
    """(task ids, flow ids) whose entries step(before, env) replaced: the snapshots to rewrite.
    Every change of one step stays inside the event's flow (and its own task)."""
    event = env.event
    flow_id = getattr(event, "flow_id", "")
    flow = after.flows.get(flow_id)
    candidates = dict.fromkeys((*(flow.task_ids if flow else ()), getattr(event, "task_id", "")))
    tasks = [t for t in candidates if t and after.tasks.get(t) is not before.tasks.get(t)]
    flows = [flow_id] if flow is not before.flows.get(flow_id) else []
    return tasks, flows


def restore(snapshots: Iterable[bytes], max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> MonitorState:
    """The state the snapshots describe; of two snapshots of one entry the later wins, so
    reading a compacted topic from the start (newest last) gives the newest state."""
    tasks: dict[str, Task] = {}
    flows: dict[str, Flow] = {}
    for blob in snapshots:
        data = _load(blob)
        if data.get("format") != FORMAT:
            raise ValueError(f"monitor snapshot format {data.get('format')!r}; expected {FORMAT}")
        if data["kind"] == "task":
            task = _task(data)
            tasks[task.task_id] = task
        else:
            flow = _flow(data)
            flows[flow.flow_id] = flow
    algo_to_task = ((a.algo_task_id, t.task_id) for t in tasks.values() for a in t.algos)
    return MonitorState(PMap.from_items(tasks.items()), PMap.from_items(flows.items()),
                        PMap.from_items(algo_to_task), max_attempts)


# A parked fact is re-encoded into every snapshot of its task until the plan arrives, and a
# backlog read topic by topic parks thousands: each envelope's text is kept while its object
# lives in the state (the tuple holds the object, so its id is not reused meanwhile).
_PARKED_TEXT: dict[int, tuple[Envelope, str]] = {}
_PARKED_TEXT_MAX = 50_000


def _parked(env: Envelope, wire: Mapping[int, tuple[Envelope, bytes]] | None) -> str:
    hit = _PARKED_TEXT.get(id(env))
    if hit is not None and hit[0] is env:
        return hit[1]
    if len(_PARKED_TEXT) >= _PARKED_TEXT_MAX:
        _PARKED_TEXT.clear()
    source = wire.get(id(env)) if wire else None
    data = source[1] if source is not None and source[0] is env else codec.encode(env)
    text = base64.b64encode(data).decode()
    _PARKED_TEXT[id(env)] = (env, text)
    return text


def _dump(plain: bool, data: dict) -> bytes:
    """Compact UTF-8 JSON. orjson writes it several times faster than the json module (the
    snapshots were a sixth of the monitor's CPU), but writes NaN and infinities as null and
    refuses what JSON cannot say (an int beyond 64 bits, a key not a string); such a snapshot
    (`plain` False: a metric not finite) is written by the json module, as it always was, and
    json.loads reads both. Enums are left in `data` as they are: both write an IntEnum as its
    number and an Outcome as its value (orjson natively, json through _enum_value), so the
    snapshot is not first copied into numbers and strings field by field."""
    if plain:
        try:
            return orjson.dumps(data)
        except (TypeError, orjson.JSONEncodeError):
            pass
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_enum_value).encode()


def _enum_value(value):
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _load(blob: bytes) -> dict:
    try:
        return orjson.loads(blob)
    except orjson.JSONDecodeError:  # NaN or Infinity, as the json module writes them (see _dump)
        return json.loads(blob)


def _finite_metrics(task: Task) -> bool:
    """Whether every metric of the task (its members' latest and per-round ones) is a finite
    number: what orjson writes exactly (see _dump)."""
    try:
        return all(all(map(math.isfinite, a.metrics.values()))
                   and all(all(map(math.isfinite, p.metrics.values())) for p in a.rounds) for a in task.algos)
    except TypeError:  # a value that is not a number at all
        return False


_record_of = slots_constructor(Record)  # as Record(...): restore() builds millions
def _record(r: Record) -> list:
    # Statuses as they are (_dump writes an IntEnum as its number), the outcome's value read off
    # the member (Enum.value is a Python-level property): a snapshot holds many records.
    return [r.outcome._value_, r.from_status, r.to_status, r.attempt, r.cause_event_id, r.cause_type, r.at_ms,
            r.reason]


def _sequences(sequences) -> list:
    return [[producer, key, seq] for (producer, key), seq in sequences.items()]


def _algo(a: AlgoTask) -> dict:
    return {"algo_task_id": a.algo_task_id, "party": a.party, "role": a.role, "status": a.status,
            "attempt": a.attempt, "job_attempt": a.job_attempt, "job_name": a.job_name, "reason": a.reason,
            "round": a.round, "total_rounds": a.total_rounds, "stage": a.stage, "metrics": dict(a.metrics),
            "updated_at_ms": a.updated_at_ms, "history": [_record(r) for r in a.history],
            "rounds": [[p.round, p.attempt, p.at_ms, dict(p.metrics)] for p in a.rounds],
            "spoke_attempt": a.spoke_attempt}


def _status(value) -> Status | None:
    return None if value is None else Status(value)


def _history(rows) -> tuple[Record, ...]:
    return tuple(_record_of(Outcome(o), _status(f), _status(t), attempt, event_id, cause_type, at_ms, reason)
                 for o, f, t, attempt, event_id, cause_type, at_ms, reason in rows)


def _rounds(rows) -> tuple[RoundPoint, ...]:
    # Snapshots written before per-round history existed have no "rounds": an empty history.
    return tuple(round_point(number, attempt, at_ms, metrics) for number, attempt, at_ms, metrics in rows)


def _seqs(rows) -> dict[tuple[str, str], int]:
    return {(producer, key): seq for producer, key, seq in rows}


def _task(d: dict) -> Task:
    algos = tuple(AlgoTask(
        a["algo_task_id"], a["party"], a["role"], Status(a["status"]), a["attempt"], a["job_attempt"],
        a["job_name"], a["reason"], a["round"], a["total_rounds"], a["stage"], a["metrics"],
        a["updated_at_ms"], _history(a["history"]), _rounds(a.get("rounds", ())), a.get("spoke_attempt", 0)) for a in d["algos"])
    parked = tuple(codec.decode(base64.b64decode(p)) for p in d["parked"])
    return Task(d["task_id"], d["flow_id"], _status(d["status"]), d["step"], d["index"], d["algorithm"],
                d["version"], tuple(d["depends_on"]), algos, d["planned_at_ms"], d["updated_at_ms"],
                d["reason"], _history(d["history"]), _seqs(d["sequences"]), parked)


def _flow(d: dict) -> Flow:
    hold = None if d["hold"] is None else CommandKind(d["hold"])
    return Flow(d["flow_id"], Status(d["status"]), tuple(d["task_ids"]), hold, d["reason"],
                d["updated_at_ms"], _history(d["history"]), _seqs(d["sequences"]))
