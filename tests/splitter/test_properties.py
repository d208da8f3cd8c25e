"""Properties over random step graphs: valid DAGs plan soundly, cyclic graphs never plan."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.splitter.core.decide import Rejected, decide
from services.splitter.core.naming import MAX_ID_LENGTH, algo_task_id, task_id
from services.splitter.core.planning import NotPlannable, plan_flow
from services.splitter.core.sizes import json_size, planned_task_size
from services.splitter.core.validation import FlowLimits, validate_flow
from shared.algorithms import AlgorithmRegistry
from shared.events import FlowSubmitted
from tests.splitter.builders import flow, parties, step
from tests.splitter.specs import BUILTIN_SPECS

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _names(max_middle: int) -> st.SearchStrategy[str]:
    """Safe names, built directly: much cheaper to generate than from a regex."""
    middle = st.text(ALNUM + "-", max_size=max_middle)
    return st.one_of(st.sampled_from(ALNUM),
                     st.builds(lambda a, m, z: a + m + z, st.sampled_from(ALNUM), middle, st.sampled_from(ALNUM)))


safe_names = st.one_of(_names(6), _names(61))  # mostly short; long ones force hashed ids
# hypothesis reuses one fixture instance across examples, so these are module constants instead
REGISTRY = AlgorithmRegistry(BUILTIN_SPECS)
LIMITS = FlowLimits()
KUBERNETES_ID = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


@st.composite
def step_graphs(draw, min_steps: int = 1) -> tuple[list[str], list[set[str]], list[int]]:
    """Names in a hidden topological rank (each depends only on lower ranks) and a random flow order."""
    names = draw(st.lists(safe_names, min_size=min_steps, max_size=12, unique=True))
    deps = [set(draw(st.lists(st.sampled_from(names[:rank]), max_size=3))) if rank else set()
            for rank in range(len(names))]
    order = draw(st.permutations(range(len(names))))
    return names, deps, order


def as_flow(draw, names: list[str], deps: list[set[str]], order: list[int]) -> FlowSubmitted:
    steps = [step(names[rank], *sorted(deps[rank]),
                  parties=parties("worker", *draw(st.lists(safe_names, min_size=1, max_size=3, unique=True))))
             for rank in order]
    return flow(*steps, flow_id=draw(safe_names))


@st.composite
def acyclic_flows(draw) -> FlowSubmitted:
    return as_flow(draw, *draw(step_graphs()))


@st.composite
def cyclic_flows(draw) -> FlowSubmitted:
    names, deps, order = draw(step_graphs(min_steps=2))
    ring = draw(st.lists(st.sampled_from(range(len(names))), min_size=2, max_size=len(names), unique=True))
    for here, there in zip(ring, ring[1:] + ring[:1]):
        deps[here].add(names[there])
    return as_flow(draw, names, deps, order)


@settings(deadline=None, max_examples=60)
@given(acyclic_flows())
def test_acyclic_flows_plan_with_every_dependency_published_first(f):
    assert validate_flow(f, REGISTRY, None, LIMITS) == []
    tasks = plan_flow(f, REGISTRY, 0)
    position = {t.task_id: t.index for t in tasks}
    assert [t.index for t in tasks] == list(range(len(f.steps)))
    assert all(t.flow_task_ids == tuple(position) for t in tasks)
    for t in tasks:
        for dep in t.depends_on:
            assert dep in position and position[dep] < t.index  # so following depends_on never loops
    by_step = {s.name: s for s in f.steps}
    assert all(len(t.depends_on) == len(set(by_step[t.step].depends_on)) for t in tasks)


@settings(deadline=None, max_examples=60)
@given(acyclic_flows())
def test_ids_are_stable_unique_and_kubernetes_safe(f):
    first, second = plan_flow(f, REGISTRY, 0), plan_flow(f, REGISTRY, 0)
    assert first == second
    task_ids = [t.task_id for t in first]
    algo_ids = [a.algo_task_id for t in first for a in t.algorithm_tasks]
    assert len(set(task_ids)) == len(task_ids) and len(set(algo_ids)) == len(algo_ids)
    for identifier in task_ids + algo_ids:
        assert len(identifier) <= MAX_ID_LENGTH and KUBERNETES_ID.match(identifier), identifier
    assert all(planned_task_size(t) == json_size(t) for t in first)


@settings(deadline=None, max_examples=60)
@given(cyclic_flows())
def test_cyclic_flows_are_rejected_naming_a_real_cycle(f):
    outcome = decide(f, REGISTRY, None, LIMITS, now_ms=0)
    assert isinstance(outcome, Rejected)
    cycles = [e for e in outcome.rejection.errors if e.reason.startswith("cycle: ")]
    assert cycles, outcome.rejection.errors
    position = {s.name: i for i, s in enumerate(f.steps)}
    for error in cycles:
        names = error.reason.removeprefix("cycle: ").split(" -> ")
        assert len(names) >= 3 and names[0] == names[-1]
        assert error.path == f"steps[{position[names[0]]}].depends_on"
        for here, there in zip(names, names[1:]):
            assert there in f.steps[position[here]].depends_on, f"{here} does not depend on {there}"
    with pytest.raises(NotPlannable):
        plan_flow(f, REGISTRY, 0)


@given(st.tuples(safe_names, safe_names), st.tuples(safe_names, safe_names))
def test_distinct_flow_and_step_pairs_never_share_a_task_id(a, b):
    if a != b:
        assert task_id(*a) != task_id(*b)


@given(st.lists(safe_names, min_size=4, max_size=4), st.lists(safe_names, min_size=4, max_size=4))
def test_distinct_algorithm_tasks_never_share_an_id(a, b):
    if a != b:
        assert algo_task_id(*a) != algo_task_id(*b)
