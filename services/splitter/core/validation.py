"""Semantic validation of a flow: does it name real algorithms, roles, parties and steps,
and can its steps be ordered?

`validate_flow` returns every problem at once, each with the path of the field
as a flow document spells it (see flow_document): ``id`` is FlowSubmitted.flow_id,
``flow`` its name, ``steps[i]...`` the i-th step; ``$`` is the flow as a whole.
Dependency cycles are reported at the depends_on of the cycle's earliest step,
arrows following depends_on: "cycle: a -> b -> a" means a waits for b and b for a.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from services.splitter.core.graph import find_cycles
from services.splitter.core.naming import SAFE_NAME_RULE, is_safe_name
from services.splitter.core.party_rules import party_errors
from services.splitter.core.sizes import json_size
from shared.algorithms import AlgorithmRegistry, AlgorithmSpec, validate_params
from shared.events import FieldError, FlowSubmitted, StepSpec


@dataclass(frozen=True)
class FlowLimits:
    """Bounds that keep one flow from swamping the platform.

    max_steps (200): tasks a flow may plan; each is a TaskPlanned message and monitor state.
    max_parties_per_step (1000): algorithm tasks per step; each becomes a Job or process.
        In practice max_planned_task_bytes binds first: every algorithm task lists all
        peers of its step, so a step's TaskPlanned grows with the square of its parties
        (by the JSON estimate, fewer than 200 parties with short names fit in 1 MB).
    max_encoded_bytes (1,000,000): Kafka's default message.max.bytes is 1 MiB; the rest
        is room for the envelope around the flow.
    max_planned_task_bytes (1,000,000): the same Kafka bound for each TaskPlanned, checked
        by decide after planning (see sizes).
    max_flow_name_length (253): the display name is free text, but not a novel.
    max_reported_errors (100): a rejection travels on Kafka too, so it must stay small
        however broken the flow is; the rest are counted in one last error at "$".
    """

    max_steps: int = 200
    max_parties_per_step: int = 1000
    max_encoded_bytes: int = 1_000_000
    max_planned_task_bytes: int = 1_000_000
    max_flow_name_length: int = 253
    max_reported_errors: int = 100


def validate_flow(flow: FlowSubmitted, registry: AlgorithmRegistry, known_parties: frozenset[str] | None,
                  limits: FlowLimits, encoded_size: int | None = None) -> list[FieldError]:
    """Every semantic problem with `flow`; when empty, plan_flow can plan it.

    known_parties: the parties that exist; None when the caller cannot know (offline validation).
    encoded_size: the flow's size on the wire; when None, estimated by sizes.json_size.
    """
    errors = _flow_errors(flow, limits, encoded_size)
    errors += _step_name_errors(flow.steps)
    for i, step in enumerate(flow.steps):
        spec, algorithm_errors = _algorithm(step, f"steps[{i}]", registry)
        errors += algorithm_errors
        if spec is not None:
            errors += validate_params(spec, step.params, f"steps[{i}].params")
        errors += party_errors(step, f"steps[{i}]", spec, known_parties, limits.max_parties_per_step)
    errors += _dependency_errors(flow.steps)
    return _capped(errors, limits.max_reported_errors)


def _flow_errors(flow: FlowSubmitted, limits: FlowLimits, encoded_size: int | None) -> list[FieldError]:
    errors = []
    if not flow.flow_id:
        errors.append(FieldError("id", "flow id must not be empty"))
    elif not is_safe_name(flow.flow_id):
        errors.append(FieldError("id", f"flow id '{flow.flow_id}' {SAFE_NAME_RULE}"))
    if not flow.name.strip():
        errors.append(FieldError("flow", "flow name must not be empty"))
    elif len(flow.name) > limits.max_flow_name_length:
        errors.append(FieldError("flow", f"flow name has {len(flow.name)} characters; "
                                         f"the limit is {limits.max_flow_name_length}"))
    if not flow.steps:
        errors.append(FieldError("steps", "a flow needs at least one step"))
    elif len(flow.steps) > limits.max_steps:
        errors.append(FieldError("steps", f"has {len(flow.steps)} steps; the limit is {limits.max_steps}"))
    size = encoded_size if encoded_size is not None else json_size(flow)
    if size > limits.max_encoded_bytes:
        errors.append(FieldError("$", f"flow is {size} bytes encoded; the limit is {limits.max_encoded_bytes}"))
    return errors


def _step_name_errors(steps: tuple[StepSpec, ...]) -> list[FieldError]:
    errors = []
    first_at: dict[str, int] = {}
    for i, step in enumerate(steps):
        path = f"steps[{i}].name"
        if not step.name:
            errors.append(FieldError(path, "step name must not be empty"))
            continue
        if not is_safe_name(step.name):
            errors.append(FieldError(path, f"step name '{step.name}' {SAFE_NAME_RULE}"))
        if step.name in first_at:
            errors.append(FieldError(path, f"duplicate step name '{step.name}' (also steps[{first_at[step.name]}])"))
        else:
            first_at[step.name] = i
    return errors


def _algorithm(step: StepSpec, path: str, registry: AlgorithmRegistry) -> tuple[AlgorithmSpec | None, list]:
    spec = registry.get(step.algorithm, step.version)
    if spec is not None:
        return spec, []
    known = registry.names()
    if step.algorithm not in known:
        close = difflib.get_close_matches(step.algorithm, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return None, [FieldError(f"{path}.algorithm", f"unknown algorithm '{step.algorithm}'{hint} "
                                                      f"(known: {', '.join(known) or 'none'})")]
    versions = registry.versions(step.algorithm)
    return None, [FieldError(f"{path}.version", f"{step.algorithm} has no version '{step.version}' "
                                                f"(known versions: {', '.join(versions)})")]


def _dependency_errors(steps: tuple[StepSpec, ...]) -> list[FieldError]:
    position: dict[str, int] = {}
    for i, step in enumerate(steps):
        position.setdefault(step.name, i)  # duplicates are reported with the names
    errors = []
    edges: list[list[int]] = []
    for i, step in enumerate(steps):
        edges.append([])
        for k, dep in enumerate(step.depends_on):
            path = f"steps[{i}].depends_on[{k}]"
            if dep == step.name:
                errors.append(FieldError(path, f"step '{dep}' cannot depend on itself"))
            elif dep not in position:
                close = difflib.get_close_matches(dep, list(position), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                errors.append(FieldError(path, f"no step named '{dep}'{hint}"))
            elif dep in step.depends_on[:k]:
                errors.append(FieldError(path, f"'{dep}' is listed twice"))
            else:
                edges[i].append(position[dep])
    for cycle in find_cycles(edges):
        names = " -> ".join(steps[p].name for p in cycle)
        errors.append(FieldError(f"steps[{cycle[0]}].depends_on", f"cycle: {names}"))
    return errors


def _capped(errors: list[FieldError], limit: int) -> list[FieldError]:
    if len(errors) <= limit:
        return errors
    return errors[:limit] + [FieldError("$", f"{len(errors) - limit} more errors not shown")]
