"""Same events, different interleavings across keys, duplicates: same final state."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor.core import Anomaly, Batch, DuplicateDropped, MonitorState, fold, step
from shared.events import FlowRejected, Status, TaskPlanned

from tests.monitor.scenarios import deliver, generate, outcome


def _fold(envelopes):
    return fold(MonitorState(), envelopes)


def _facts_before_plan(envelopes) -> bool:
    planned = set()
    for env in envelopes:
        if isinstance(env.event, TaskPlanned):
            planned.add(env.event.task_id)
        elif env.key not in planned and not isinstance(env.event, FlowRejected):
            return True
    return False


def test_interleavings_and_redeliveries_converge_over_many_seeds():
    finished = early = 0
    for seed in range(150):
        rng = random.Random(seed)
        scenario = generate(rng, flows=3)
        expected, effects = _fold(scenario.canonical())
        assert not [e for e in effects if isinstance(e, Anomaly)], seed
        for _ in range(4):
            delivery = deliver(rng, scenario)
            early += _facts_before_plan(delivery)
            state, effects = _fold(delivery)
            assert outcome(state) == outcome(expected), seed
            assert any(isinstance(e, DuplicateDropped) for e in effects) or len(delivery) == len(
                scenario.canonical())
        finished += all(f.status.terminal for f in expected.flows.values())
    assert finished == 150  # every generated flow runs to its end
    assert early > 100  # parking before the plan is exercised, not just possible


@settings(max_examples=60, deadline=None)
@given(scenario_seed=st.integers(0, 2**32 - 1), delivery_seed=st.integers(0, 2**32 - 1),
       redeliver=st.floats(0.0, 0.5))
def test_interleavings_converge(scenario_seed, delivery_seed, redeliver):
    scenario = generate(random.Random(scenario_seed), flows=2)
    expected, _ = _fold(scenario.canonical())
    state, _ = _fold(deliver(random.Random(delivery_seed), scenario, redeliver))
    assert outcome(state) == outcome(expected)


def test_the_generator_covers_every_ending():
    endings = set()
    for seed in range(60):
        state, _ = _fold(generate(random.Random(seed), flows=3).canonical())
        endings |= {t.status for t in state.tasks.values()}
    assert endings == {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}


def _step_by_step(envelopes):
    state, effects = MonitorState(), []
    for env in envelopes:
        state, emitted = step(state, env)
        effects.append(list(emitted))
    return state, effects


def test_a_batch_folds_exactly_as_one_step_per_event():
    """Batch (one new state per batch, as the service folds) must give every envelope the very
    effects, and the batch the very state, that successive step() calls give: parked facts,
    redeliveries, failures and cancellations included."""
    for seed in range(40):
        rng = random.Random(seed)
        delivery = deliver(rng, generate(rng, flows=3), redeliver=0.2)
        expected, expected_effects = _step_by_step(delivery)
        for size in (1, 7, len(delivery)):
            state, effects = MonitorState(), []
            for start in range(0, len(delivery), size):
                batch = Batch(state)
                effects += [list(batch.apply(env)) for env in delivery[start:start + size]]
                state = batch.commit()
            assert effects == expected_effects, (seed, size)
            assert dict(state.tasks.items()) == dict(expected.tasks.items()), (seed, size)
            assert dict(state.flows.items()) == dict(expected.flows.items()), (seed, size)
            assert dict(state.algo_to_task.items()) == dict(expected.algo_to_task.items()), (seed, size)
