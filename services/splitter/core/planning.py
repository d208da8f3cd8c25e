"""From a valid flow to the tasks the scheduler runs: one TaskPlanned per step,
one AlgorithmTaskSpec per party of the step.

Publish order is a topological order of the steps (a task is planned after
every task it depends on), ties broken by the step's position in the flow, so
the same flow always plans to the same sequence. Ids follow `naming`: the same
(flow, step, party, role) always gets the same id, across runs and processes.
"""

from __future__ import annotations

from services.splitter.core.graph import publish_order
from services.splitter.core.naming import algo_task_id, task_id
from shared.algorithms import AlgorithmRegistry, AlgorithmSpec
from shared.events import AlgorithmTaskSpec, FlowSubmitted, Peer, StepSpec, TaskPlanned


class NotPlannable(ValueError):
    """plan_flow was given a flow that validation would reject."""


def plan_flow(flow: FlowSubmitted, registry: AlgorithmRegistry, planned_at_ms: int) -> tuple[TaskPlanned, ...]:
    """The tasks of `flow` in publish order. Precondition: `validate_flow` found no errors."""
    position = {step.name: i for i, step in enumerate(flow.steps)}
    try:
        order = publish_order([[position[d] for d in step.depends_on] for step in flow.steps])
    except (KeyError, ValueError) as exc:
        raise NotPlannable(f"flow {flow.flow_id} has missing or cyclic dependencies: {exc}") from exc
    ids = [task_id(flow.flow_id, step.name) for step in flow.steps]
    flow_task_ids = tuple(ids[p] for p in order)
    return tuple(
        TaskPlanned(
            task_id=ids[p],
            flow_id=flow.flow_id,
            step=flow.steps[p].name,
            depends_on=tuple(dict.fromkeys(ids[position[d]] for d in flow.steps[p].depends_on)),
            algorithm_tasks=_algorithm_tasks(flow.flow_id, ids[p], flow.steps[p], _spec(flow.steps[p], registry)),
            flow_task_ids=flow_task_ids,
            index=index,
            planned_at_ms=planned_at_ms,
        )
        for index, p in enumerate(order)
    )


def _spec(step: StepSpec, registry: AlgorithmRegistry) -> AlgorithmSpec:
    spec = registry.get(step.algorithm, step.version)
    if spec is None:
        raise NotPlannable(f"step {step.name!r}: no algorithm {step.algorithm} {step.version}")
    return spec


def _algorithm_tasks(flow_id: str, task: str, step: StepSpec, spec: AlgorithmSpec) -> tuple[AlgorithmTaskSpec, ...]:
    peers = tuple(sorted((Peer(p.party, p.role) for p in step.parties), key=lambda peer: (peer.party, peer.role)))
    return tuple(
        AlgorithmTaskSpec(
            algo_task_id=algo_task_id(flow_id, step.name, entry.party, entry.role),
            task_id=task,
            flow_id=flow_id,
            step=step.name,
            algorithm=step.algorithm,
            version=step.version,
            params=spec.with_defaults(step.params),  # a fresh dict each: no task shares a mutable mapping
            party=entry.party,
            role=entry.role,
            peers=peers,
            data_ref=entry.data_ref,
            attempt=1,
        )
        for entry in step.parties
    )
