from __future__ import annotations

import dataclasses

import pytest

from services.splitter.core.validation import FlowLimits, validate_flow
from shared.events import FlowSubmitted, PartyRole
from tests.splitter.builders import flow, parties, step

FEDAVG_PARTIES = parties("client", "h-a", "h-b", data="bc") + parties("aggregator", "coord")


def errors(f: FlowSubmitted, registry, known=None, limits=FlowLimits(), **kwargs) -> dict[str, str]:
    found = validate_flow(f, registry, known, limits, **kwargs)
    by_path = {e.path: e.reason for e in found}
    assert len(by_path) == len(found), f"two errors on one path: {found}"
    return by_path


def the_error(f: FlowSubmitted, registry, **kwargs) -> tuple[str, str]:
    found = errors(f, registry, **kwargs)
    assert len(found) == 1, found
    return next(iter(found.items()))


def test_a_valid_flow_has_no_errors(registry):
    f = flow(step("prepare"), step("train", "prepare", algorithm="ferry.fedavg", parties=FEDAVG_PARTIES,
                                   params={"rounds": 3, "strategy": "fedprox", "mu": 0.1}))
    assert errors(f, registry, known=frozenset({"node-a", "node-b", "h-a", "h-b", "coord"})) == {}


@pytest.mark.parametrize("flow_id, fragment", [
    ("", "must not be empty"), ("Flow_1", "lowercase letters"), ("-a", "starting and ending"),
    ("a" * 64, "1-63 characters"),
])
def test_flow_id_must_be_a_safe_name(registry, flow_id, fragment):
    path, reason = the_error(flow(flow_id=flow_id), registry)
    assert path == "id" and fragment in reason


def test_flow_name_must_be_present_and_bounded(registry):
    assert the_error(flow(name="  "), registry) == ("flow", "flow name must not be empty")
    path, reason = the_error(flow(name="n" * 300), registry)
    assert path == "flow" and "300 characters; the limit is 253" in reason


def test_an_empty_flow_is_rejected(registry):
    assert the_error(FlowSubmitted("f", "n", ()), registry) == ("steps", "a flow needs at least one step")


def test_limits_on_steps_parties_and_size(registry):
    small = FlowLimits(max_steps=2, max_parties_per_step=1, max_encoded_bytes=100)
    f = flow(step("a"), step("b"), step("c"))
    found = errors(f, registry, limits=small)
    assert "3 steps; the limit is 2" in found["steps"]
    assert "2 parties; the limit is 1" in found["steps[0].parties"]
    assert "bytes encoded; the limit is 100" in found["$"]


def test_the_encoded_size_given_by_the_caller_wins_over_the_estimate(registry):
    assert errors(flow(), registry, encoded_size=2_000_000)["$"] == \
        "flow is 2000000 bytes encoded; the limit is 1000000"
    assert errors(flow(), registry, limits=FlowLimits(max_encoded_bytes=10), encoded_size=10) == {}


def test_step_names_must_be_present_unique_and_safe(registry):
    found = errors(flow(step("a"), step(""), step("a"), step("Train_1")), registry)
    assert found["steps[1].name"] == "step name must not be empty"
    assert found["steps[2].name"] == "duplicate step name 'a' (also steps[0])"
    assert "step name 'Train_1' must be 1-63 characters" in found["steps[3].name"]


def test_unknown_algorithm_lists_the_known_ones(registry):
    path, reason = the_error(flow(step("a", algorithm="ferry.fedav")), registry)
    assert path == "steps[0].algorithm"
    assert "unknown algorithm 'ferry.fedav'; did you mean 'ferry.fedavg'?" in reason
    assert "ferry.centralized, ferry.data.validate" in reason


def test_unknown_version_lists_the_known_versions(registry):
    assert the_error(flow(step("a", version="2")), registry) == (
        "steps[0].version", "ferry.noop has no version '2' (known versions: 1)")


def test_params_are_checked_against_the_algorithm(registry):
    found = errors(flow(step("a", algorithm="ferry.fedavg", parties=FEDAVG_PARTIES,
                             params={"rounds": 0, "strategy": "fedsgd", "lrr": 1})), registry)
    assert "must be >= 1" in found["steps[0].params.rounds"]
    assert "must be one of" in found["steps[0].params.strategy"]
    assert "unknown parameter" in found["steps[0].params.lrr"]
    assert the_error(flow(step("e", algorithm="ferry.evaluate", parties=parties("party", "p", data="d"))),
                     registry) == ("steps[0].params.model_from", "is required")


def test_parties_must_be_known_when_the_caller_knows_them(registry):
    path, reason = the_error(flow(step("a", parties=parties("worker", "node-a", "nod-b"))), registry,
                             known=frozenset({"node-a", "node-b"}))
    assert path == "steps[0].parties.worker[1]"
    assert "unknown party 'nod-b'; did you mean 'node-b'" in reason
    assert errors(flow(step("a", parties=parties("worker", "zzz"))), registry, known=frozenset())[
        "steps[0].parties.worker[0]"] == "unknown party 'zzz'; known: none"


def test_party_names_must_be_safe(registry):
    found = errors(flow(step("a", parties=parties("worker", "", "Node_A"))), registry)
    assert found["steps[0].parties.worker[0]"] == "party name must not be empty"
    assert "party name 'Node_A' must be 1-63 characters" in found["steps[0].parties.worker[1]"]


def test_a_step_needs_parties(registry):
    assert the_error(flow(step("a", parties=())), registry) == (
        "steps[0].parties", "a step needs at least one party")


def test_roles_must_be_defined_by_the_algorithm(registry):
    f = flow(step("a", algorithm="ferry.fedavg", parties=FEDAVG_PARTIES + parties("clients", "h-c", data="d")))
    path, reason = the_error(f, registry)
    assert path == "steps[0].parties.clients"
    assert "role 'clients' is not defined by ferry.fedavg 1; did you mean 'client'?" in reason


def test_role_party_counts_respect_the_algorithms_bounds(registry):
    no_aggregator = parties("client", "h-a", data="d")
    two_aggregators = no_aggregator + parties("aggregator", "c1", "c2")
    assert the_error(flow(step("a", algorithm="ferry.fedavg", parties=no_aggregator)), registry) == (
        "steps[0].parties.aggregator", "ferry.fedavg needs at least 1 party as 'aggregator', got 0")
    assert the_error(flow(step("a", algorithm="ferry.fedavg", parties=two_aggregators)), registry) == (
        "steps[0].parties.aggregator", "ferry.fedavg allows at most 1 party as 'aggregator', got 2")


def test_a_party_takes_one_role_per_step(registry):
    f = flow(step("a", algorithm="ferry.fedavg", parties=FEDAVG_PARTIES + parties("aggregator", "h-b")))
    found = errors(f, registry)
    assert "party 'h-b' is already in this step at steps[0].parties.client[1]" in found[
        "steps[0].parties.aggregator[1]"]
    assert "at most 1" in found["steps[0].parties.aggregator"]


def test_roles_that_need_data_need_a_data_ref(registry):
    missing = parties("client", "h-a") + parties("aggregator", "coord")
    path, reason = the_error(flow(step("a", algorithm="ferry.fedavg", parties=missing)), registry)
    assert path == "steps[0].parties.client[0]"
    assert "role 'client' of ferry.fedavg needs data" in reason and "parties.h-a.data" in reason


def test_dependencies_must_name_other_existing_steps(registry):
    found = errors(flow(step("prepare"), step("train", "prepar", "train", "prepare", "prepare")), registry)
    assert found["steps[1].depends_on[0]"] == "no step named 'prepar'; did you mean 'prepare'?"
    assert found["steps[1].depends_on[1]"] == "step 'train' cannot depend on itself"
    assert found["steps[1].depends_on[3]"] == "'prepare' is listed twice"
    assert len(found) == 3


def test_a_cycle_is_named_from_its_earliest_step(registry):
    f = flow(step("start"), step("a", "c", "start"), step("b", "a"), step("c", "b"))
    assert the_error(f, registry) == ("steps[1].depends_on", "cycle: a -> c -> b -> a")


def test_every_independent_cycle_is_reported(registry):
    f = flow(step("a", "b"), step("b", "a"), step("c", "d"), step("d", "c"))
    assert errors(f, registry) == {"steps[0].depends_on": "cycle: a -> b -> a",
                                   "steps[2].depends_on": "cycle: c -> d -> c"}


def test_the_error_list_is_capped_so_a_rejection_stays_small(registry):
    f = flow(*(step(f"s{i}", algorithm="nope") for i in range(10)))
    found = validate_flow(f, registry, None, FlowLimits(max_reported_errors=4))
    assert [e.path for e in found] == [f"steps[{i}].algorithm" for i in range(4)] + ["$"]
    assert found[-1].reason == "6 more errors not shown"


def test_all_problems_of_a_flow_are_reported_together(registry):
    f = dataclasses.replace(flow(step("a", version="9"), step("b", "x", parties=(PartyRole("Bad", "worker"),))),
                            flow_id="")
    assert set(errors(f, registry)) == {"id", "steps[0].version", "steps[1].parties.worker[0]",
                                        "steps[1].depends_on[0]"}


def test_builtin_rules_across_parameters_name_the_field():
    from shared.algorithms import validate_params
    from shared.builtin_algorithms import FEDAVG

    errors = validate_params(FEDAVG, {"strategy": "krum", "secure_aggregation": True}, "steps[2].params")
    assert [e.path for e in errors] == ["steps[2].params.secure_aggregation"]
    assert "robust" in errors[0].reason
    errors = validate_params(FEDAVG, {"strategy": "krum", "krum_f": 2, "min_clients": 3}, "p")
    assert [(e.path, "at least 5" in e.reason) for e in errors] == [("p.min_clients", True)]
    assert validate_params(FEDAVG, {"strategy": "fedavg", "secure_aggregation": True}, "p") == []
