"""Terse constructors for flows in tests; defaults make a valid one-step noop flow."""

from __future__ import annotations

from typing import Any, Iterable

from shared.events import FlowSubmitted, PartyRole, StepSpec

NOOP_PARTIES = (PartyRole("node-a", "worker"), PartyRole("node-b", "worker"))


def step(name: str, *depends_on: str, algorithm: str = "ferry.noop", version: str = "1",
         parties: Iterable[PartyRole] = NOOP_PARTIES, params: dict[str, Any] | None = None) -> StepSpec:
    return StepSpec(name, algorithm, version, params or {}, tuple(parties), tuple(depends_on))


def flow(*steps: StepSpec, flow_id: str = "flow-1", name: str = "test flow") -> FlowSubmitted:
    return FlowSubmitted(flow_id, name, steps or (step("only"),))


def parties(role: str, *names: str, data: str = "") -> tuple[PartyRole, ...]:
    return tuple(PartyRole(n, role, data) for n in names)
