"""Same events, different interleavings across keys, duplicates: same final state."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor.core import Anomaly, MonitorState, fold
from shared.events import Status

from tests.monitor.scenarios import deliver, generate, outcome


def _fold(envelopes):
    return fold(MonitorState(), envelopes)


def test_interleavings_and_redeliveries_converge_over_many_seeds():
    finished = 0
    for seed in range(150):
        rng = random.Random(seed)
        scenario = generate(rng, flows=3)
        expected, effects = _fold(scenario.canonical())
        assert not [e for e in effects if isinstance(e, Anomaly)], seed
        for _ in range(4):
            state, _ = _fold(deliver(rng, scenario))
            assert outcome(state) == outcome(expected), seed
        finished += all(f.status.terminal for f in expected.flows.values())
    assert finished == 150  # every generated flow runs to its end


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
