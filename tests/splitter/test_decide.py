from __future__ import annotations

from services.splitter.core.decide import Accepted, Rejected, decide
from services.splitter.core.planning import plan_flow
from services.splitter.core.validation import FlowLimits
from shared.events import FieldError, FlowRejected
from tests.splitter.builders import flow, step


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
