"""The splitter's whole decision for one submitted flow: plan it, or say precisely why not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from services.splitter.core.planning import plan_flow
from services.splitter.core.validation import FlowLimits, validate_flow
from shared.algorithms import AlgorithmRegistry
from shared.events import FlowRejected, FlowSubmitted, TaskPlanned


@dataclass(frozen=True)
class Accepted:
    tasks: tuple[TaskPlanned, ...]  # in publish order


@dataclass(frozen=True)
class Rejected:
    rejection: FlowRejected


Decision = Union[Accepted, Rejected]


def decide(flow: FlowSubmitted, registry: AlgorithmRegistry, known_parties: frozenset[str] | None,
           limits: FlowLimits, now_ms: int, encoded_size: int | None = None) -> Decision:
    """encoded_size: the flow's size as received, when the caller knows it (see validate_flow)."""
    errors = validate_flow(flow, registry, known_parties, limits, encoded_size)
    if errors:
        return Rejected(FlowRejected(flow.flow_id, tuple(errors)))
    return Accepted(plan_flow(flow, registry, now_ms))
