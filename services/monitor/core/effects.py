"""What step() asks the outside world to do or know, besides the new state.

StateChanged (shared.events) goes to ferry.task-events for every applied
transition. The monitor-local effects below are for operators, the command
API and the scheduler; the shell decides where each one is published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from shared.events import StateChanged


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A fact the transition table forbids, or that names nothing known; recorded, not applied."""

    entity_id: str
    reason: str
    cause_event_id: str
    flow_id: str = ""


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """A TaskCommand that makes no sense in the current state (the API answers 409 for these)."""

    command_id: str
    reason: str
    flow_id: str = ""
    task_id: str = ""
    cause_event_id: str = ""


@dataclass(frozen=True, slots=True)
class CancelSiblings:
    """One algorithm task of a task ended FAILED or CANCELLED: its peers would wait for it
    forever, so the scheduler should delete their jobs. The monitor has already moved
    them to CANCELLING (or CANCELLED when they never had a job)."""

    flow_id: str
    task_id: str
    algo_task_ids: tuple[str, ...]
    reason: str
    cause_event_id: str = ""


@dataclass(frozen=True, slots=True)
class DuplicateDropped:
    """An envelope at or below the last sequence seen for its (producer, key); for metrics."""

    producer: str
    key: str
    sequence: int
    last_sequence: int
    event_id: str


Effect = Union[StateChanged, Anomaly, CommandRejected, CancelSiblings, DuplicateDropped]
