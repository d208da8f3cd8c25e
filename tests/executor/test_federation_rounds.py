"""The round protocol's pure decisions."""

from __future__ import annotations

from services.executor.federation.rounds import RoundOutcome, RoundPlan, round_outcome, sample_clients


def test_sampling_is_deterministic_respects_minimum_and_fraction():
    clients = [f"c{i}" for i in range(10)]
    a = sample_clients(clients, 0.3, 2, seed=1, round=4)
    assert a == sample_clients(list(reversed(clients)), 0.3, 2, seed=1, round=4)
    assert len(a) == 3 and set(a) <= set(clients)
    assert len(sample_clients(clients, 0.1, 4, seed=1, round=4)) == 4
    assert sample_clients(clients, 1.0, 1, seed=1, round=4) == tuple(sorted(clients))
    assert {sample_clients(clients, 0.3, 1, seed=1, round=r) for r in range(1, 8)} != {a}


def test_a_round_closes_when_all_answered_or_at_the_deadline_with_enough():
    plan = RoundPlan(1, ("a", "b", "c"), deadline=10.0)
    assert round_outcome(plan, {"a", "b", "c"}, 1.0, 2) is RoundOutcome.AGGREGATE
    assert round_outcome(plan, {"a", "b"}, 5.0, 2) is RoundOutcome.WAIT
    assert round_outcome(plan, {"a", "b"}, 10.0, 2) is RoundOutcome.AGGREGATE
    assert round_outcome(plan, {"a", "x"}, 10.0, 2) is RoundOutcome.FAIL  # x was not asked
