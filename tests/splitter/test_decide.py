from __future__ import annotations

from services.splitter.core.decide import Accepted, Rejected, decide
from services.splitter.core.planning import plan_flow
from services.splitter.core.sizes import json_size, planned_task_size
from services.splitter.core.validation import FlowLimits
from shared.events import FieldError, FlowRejected
from tests.splitter.builders import flow, parties, step


def test_a_valid_flow_is_accepted_with_its_plan(registry, limits):
    f = flow(step("a"), step("b", "a"))
    assert decide(f, registry, None, limits, now_ms=99) == Accepted(plan_flow(f, registry, 99))


def test_an_invalid_flow_is_rejected_with_every_error(registry, limits):
    f = flow(step("a", "b"), step("b", "a"), flow_id="flow-9")
    assert decide(f, registry, frozenset({"node-a"}), limits, now_ms=0) == Rejected(FlowRejected("flow-9", (
        FieldError("steps[0].parties.worker[1]", "unknown party 'node-b'; did you mean 'node-a'?"),
        FieldError("steps[1].parties.worker[1]", "unknown party 'node-b'; did you mean 'node-a'?"),
        FieldError("steps[0].depends_on", "cycle: a -> b -> a"),
    )))


def test_the_size_on_the_wire_counts_against_the_limit(registry):
    outcome = decide(flow(), registry, None, FlowLimits(max_encoded_bytes=1000), now_ms=0, encoded_size=1001)
    assert isinstance(outcome, Rejected)
    assert outcome.rejection.errors == (FieldError("$", "flow is 1001 bytes encoded; the limit is 1000"),)


def test_a_step_whose_planned_task_is_too_big_for_the_bus_is_rejected(registry, limits):
    # each algorithm task lists every peer, so 300 parties plan to 90,000 peer entries
    crowd = parties("worker", *(f"node-{i}" for i in range(300)))
    outcome = decide(flow(step("small"), step("crowd", parties=crowd)), registry, None, limits, now_ms=0)
    assert isinstance(outcome, Rejected)
    (error,) = outcome.rejection.errors
    assert error.path == "steps[1].parties"
    assert "300 algorithm tasks, each listing all 300 peers" in error.reason
    assert "the limit is 1000000: use fewer parties" in error.reason


def test_the_planned_size_estimate_matches_measuring_the_whole_task(registry):
    (task,) = plan_flow(flow(step("a", parties=parties("worker", "n1", "n2", "n3"), params={"sleep_s": 1})),
                        registry, 0)
    assert planned_task_size(task) == json_size(task)


def test_the_caller_may_measure_planned_tasks_itself(registry, limits):
    outcome = decide(flow(), registry, None, limits, now_ms=0, task_size=lambda task: 2_000_000)
    assert isinstance(outcome, Rejected) and outcome.rejection.errors[0].path == "steps[0].parties"
