"""The monitor's state: frozen entries for flows, tasks and algorithm tasks.

MonitorState holds persistent maps (see pmap.py) of frozen entries, so one
step() replaces a handful of entries and shares everything else with the
previous state. Statuses of tasks and flows are stored, not recomputed on
read, but they are always the derivation (derive.py) of their children.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping

from services.monitor.core.pmap import EMPTY, PMap
from services.monitor.core.rounds import RoundPoint
from shared.events import CommandKind, Envelope, Status

DEFAULT_MAX_ATTEMPTS = 3
# Applied transitions are few per entity and always kept; ignored facts and
# anomalies can repeat without bound (a crash-looping stale pod), so only the
# newest of those are kept.
UNAPPLIED_HISTORY_LIMIT = 64


class Outcome(enum.Enum):
    APPLIED = "applied"
    IGNORED = "ignored"      # a valid fact that must not change anything (terminal, stale attempt)
    ANOMALY = "anomaly"      # a fact the table forbids in this state; recorded, not applied
    REJECTED = "rejected"    # a command that makes no sense in this state


@dataclass(frozen=True, slots=True)
class Record:
    """One line of an entity's history and why it happened."""

    outcome: Outcome
    from_status: Status | None
    to_status: Status | None
    attempt: int
    cause_event_id: str
    cause_type: str
    at_ms: int
    reason: str = ""


@dataclass(frozen=True)
class AlgoTask:
    algo_task_id: str
    party: str
    role: str
    status: Status
    attempt: int
    # Attempt of the newest job fact seen (0: no job ever existed). A task
    # that never had a job is suspended/cancelled/resumed without the scheduler.
    job_attempt: int = 0
    job_name: str = ""
    reason: str = ""
    round: int = 0
    total_rounds: int = 0
    stage: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    updated_at_ms: int = 0
    history: tuple[Record, ...] = ()
    rounds: tuple[RoundPoint, ...] = ()   # per-round metrics, ascending (rounds.py)
    # The newest attempt whose executor has itself spoken (a heartbeat or a report): until then
    # it may still be starting (importing torch on a loaded node), which liveness.py allows for.
    spoke_attempt: int = 0

    @property
    def dispatched(self) -> bool:
        return self.job_attempt > 0


@dataclass(frozen=True)
class Task:
    """A task (one flow step); status None means facts arrived before its TaskPlanned."""

    task_id: str
    flow_id: str
    status: Status | None = None
    step: str = ""
    index: int = 0
    algorithm: str = ""
    version: str = ""
    depends_on: tuple[str, ...] = ()
    algos: tuple[AlgoTask, ...] = ()
    planned_at_ms: int = 0
    updated_at_ms: int = 0
    reason: str = ""
    history: tuple[Record, ...] = ()
    # Highest envelope sequence applied per (producer, key) routed to this task.
    sequences: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # Facts that arrived before the plan (another topic may lag); replayed on planning.
    parked: tuple[Envelope, ...] = ()

    @property
    def planned(self) -> bool:
        return self.status is not None

    @property
    def dispatched(self) -> bool:
        return any(a.job_attempt for a in self.algos)


@dataclass(frozen=True)
class Flow:
    flow_id: str
    status: Status
    task_ids: tuple[str, ...] = ()
    # A flow-wide SUSPEND or CANCEL also applies to tasks planned after it.
    hold: CommandKind | None = None
    reason: str = ""
    updated_at_ms: int = 0
    history: tuple[Record, ...] = ()
    sequences: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorState:
    tasks: PMap[str, Task] = field(default_factory=lambda: EMPTY)
    flows: PMap[str, Flow] = field(default_factory=lambda: EMPTY)
    algo_to_task: PMap[str, str] = field(default_factory=lambda: EMPTY)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


_new = object.__new__
_set = object.__setattr__


def evolve(entry, **changes):
    """dataclasses.replace() for AlgoTask, Task, Flow and MonitorState, several times faster.

    replace() re-runs __init__, whose frozen setattr per field dominated the
    fold's profile; a copy of the instance __dict__ gives the same frozen
    object (these classes have no __post_init__ and no slots, deliberately).
    Unknown field names are not checked here, on the hot path; a test checks
    every call site.
    """
    attributes = entry.__dict__.copy()
    attributes.update(changes)
    new = _new(type(entry))
    _set(new, "__dict__", attributes)
    return new


def append_record(history: tuple[Record, ...], record: Record) -> tuple[Record, ...]:
    if record.outcome is Outcome.APPLIED or len(history) < UNAPPLIED_HISTORY_LIMIT:
        return history + (record,)
    unapplied = [i for i, r in enumerate(history) if r.outcome is not Outcome.APPLIED]
    if len(unapplied) < UNAPPLIED_HISTORY_LIMIT:
        return history + (record,)
    oldest = unapplied[0]
    return history[:oldest] + history[oldest + 1:] + (record,)
