"""Domain events: the frozen dataclasses every service works with.

Protobuf types never leave shared/wire; shared/wire/codec.py converts between
these and the wire messages in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

JsonValue = Any  # what a protobuf Struct can hold: None, bool, float/int, str, list, dict


@dataclass(frozen=True)
class PartyRole:
    party: str
    role: str
    data_ref: str = ""


@dataclass(frozen=True)
class StepSpec:
    name: str
    algorithm: str
    version: str
    params: Mapping[str, JsonValue] = field(default_factory=dict)
    parties: tuple[PartyRole, ...] = ()
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class FlowSubmitted:
    flow_id: str
    name: str
    steps: tuple[StepSpec, ...]
    submitted_by: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldError:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class FlowRejected:
    flow_id: str
    errors: tuple[FieldError, ...]


@dataclass(frozen=True)
class Peer:
    party: str
    role: str


@dataclass(frozen=True)
class AlgorithmTaskSpec:
    algo_task_id: str
    task_id: str
    flow_id: str
    step: str
    algorithm: str
    version: str
    params: Mapping[str, JsonValue]
    party: str
    role: str
    peers: tuple[Peer, ...]
    data_ref: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class TaskPlanned:
    task_id: str
    flow_id: str
    step: str
    depends_on: tuple[str, ...]
    algorithm_tasks: tuple[AlgorithmTaskSpec, ...]
    flow_task_ids: tuple[str, ...]
    index: int
    planned_at_ms: int = 0


class CommandKind(enum.IntEnum):
    SUSPEND = 1
    RESUME = 2
    CANCEL = 3


@dataclass(frozen=True)
class TaskCommand:
    command_id: str
    kind: CommandKind
    flow_id: str
    task_id: str = ""  # empty: the whole flow
    requested_by: str = ""
    reason: str = ""


class JobAction(enum.IntEnum):
    CREATED = 1
    SUSPENDED = 2
    RESUMED = 3
    DELETED = 4
    DISPATCH_FAILED = 5


@dataclass(frozen=True)
class JobEvent:
    algo_task_id: str
    task_id: str
    flow_id: str
    attempt: int
    action: JobAction
    job_name: str = ""
    runner: str = ""
    reason: str = ""
    retriable: bool = False


class Phase(enum.IntEnum):
    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    SUSPENDED = 5
    DELETED = 6


@dataclass(frozen=True)
class Observation:
    algo_task_id: str
    task_id: str
    flow_id: str
    attempt: int
    phase: Phase
    object_name: str = ""
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    retriable: bool = False
    source: str = ""
    observed_at_ms: int = 0


# ExecutorProgress.stage of an executor's heartbeat: proves it is alive, reports no progress.
HEARTBEAT_STAGE = "heartbeat"


@dataclass(frozen=True)
class ExecutorProgress:
    algo_task_id: str
    task_id: str
    flow_id: str
    attempt: int
    round: int = 0
    total_rounds: int = 0
    stage: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)


class Status(enum.IntEnum):
    PENDING = 1
    SCHEDULED = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    SUSPENDING = 6
    SUSPENDED = 7
    RESUMING = 8
    CANCELLING = 9
    CANCELLED = 10
    RETRYING = 11

    @property
    def terminal(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class EntityKind(enum.IntEnum):
    ALGORITHM_TASK = 1
    TASK = 2
    FLOW = 3


@dataclass(frozen=True)
class StateChanged:
    entity: EntityKind
    entity_id: str
    flow_id: str
    task_id: str
    from_status: Status | None
    to_status: Status
    attempt: int = 0
    cause_event_id: str = ""
    cause_type: str = ""
    reason: str = ""
    at_ms: int = 0


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes


class RoundKind(enum.IntEnum):
    ANNOUNCE = 1
    UPDATE = 2
    FINAL = 3
    ABORT = 4
    SECAGG = 5
    JOIN = 6
    EVALUATION = 7


@dataclass(frozen=True)
class RoundMessage:
    flow_id: str
    task_id: str
    step: str
    round: int
    attempt: int
    sender: str
    kind: RoundKind
    recipient: str = ""
    tensors: tuple[Tensor, ...] = ()
    num_examples: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    body: bytes = b""
    signature: bytes = b""
    payload_id: str = ""
    chunk_index: int = 0
    chunk_count: int = 0
    payload_sha256: str = ""
    nonce: bytes = b""


@dataclass(frozen=True)
class DeadLetter:
    source_topic: str
    partition: int
    offset: int
    original_key: bytes
    original_value: bytes
    reason: str
    error_type: str
    consumer: str
    at_ms: int = 0


Event = Union[
    FlowSubmitted, FlowRejected, TaskPlanned, TaskCommand, JobEvent, Observation,
    ExecutorProgress, StateChanged, RoundMessage, DeadLetter,
]


@dataclass(frozen=True)
class Envelope:
    """An event with the metadata every Ferry message carries on the wire."""

    event: Event
    event_id: str
    key: str
    sequence: int
    producer: str
    timestamp_ms: int
    schema_version: int = 1

    @property
    def type_name(self) -> str:
        return type(self.event).__name__
