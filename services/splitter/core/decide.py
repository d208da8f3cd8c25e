"""The splitter's whole decision for one submitted flow: plan it, or say precisely why not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from services.splitter.core.planning import plan_flow
from services.splitter.core.sizes import planned_task_size
from services.splitter.core.validation import FlowLimits, validate_flow
from shared.algorithms import AlgorithmRegistry
from shared.events import FieldError, FlowRejected, FlowSubmitted, TaskPlanned


@dataclass(frozen=True)
class Accepted:
    tasks: tuple[TaskPlanned, ...]  # in publish order


@dataclass(frozen=True)
class Rejected:
    rejection: FlowRejected


Decision = Union[Accepted, Rejected]


def decide(flow: FlowSubmitted, registry: AlgorithmRegistry, known_parties: frozenset[str] | None,
           limits: FlowLimits, now_ms: int, encoded_size: int | None = None,
           task_size: Callable[[TaskPlanned], int] = planned_task_size) -> Decision:
    """encoded_size: the flow's size as received, when the caller knows it (see validate_flow).
    task_size: a planned task's size on the wire; by default a JSON estimate that errs high."""
    errors = validate_flow(flow, registry, known_parties, limits, encoded_size)
    if errors:
        return Rejected(FlowRejected(flow.flow_id, tuple(errors)))
    tasks = plan_flow(flow, registry, now_ms)
    oversized = _oversized(flow, tasks, limits.max_planned_task_bytes, task_size)
    if oversized:
        return Rejected(FlowRejected(flow.flow_id, tuple(oversized)))
    return Accepted(tasks)


def _oversized(flow: FlowSubmitted, tasks: tuple[TaskPlanned, ...], limit: int,
               task_size: Callable[[TaskPlanned], int]) -> list[FieldError]:
    by_step = {task.step: task for task in tasks}
    errors = []
    for i, step in enumerate(flow.steps):
        size = task_size(by_step[step.name])
        if size > limit:
            count = len(step.parties)
            errors.append(FieldError(f"steps[{i}].parties",
                                     f"planned, this step is about {size} bytes ({count} algorithm tasks, each "
                                     f"listing all {count} peers); the limit is {limit}: use fewer parties"))
    return errors
