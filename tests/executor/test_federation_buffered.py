"""FedBuff's pure core: which updates enter the buffer and what a full buffer makes of the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.executor.federation.buffered import (Buffer, BufferedUpdate, BufferPolicy, add, applied, averaged_model,
                                                   is_full, mean_staleness, staleness_weight, too_stale)

G = {"w": np.array([1.0, 2.0, 3.0], np.float32), "b": np.array([0.5], np.float32)}


def _update(sender, base, shift, n=10):
    return BufferedUpdate(sender, base, {k: np.full_like(v, shift) for k, v in G.items()}, n)


def test_fresh_updates_average_to_the_example_weighted_mean_of_the_clients_models():
    buffer = add(add(Buffer(3), _update("a", 3, 1.0, n=10)), _update("b", 3, -2.0, n=30))
    out = averaged_model(G, buffer)
    expected = (10 * 1.0 + 30 * -2.0) / 40
    for k in G:
        np.testing.assert_allclose(out[k], G[k] + expected, rtol=1e-6)
        assert out[k].dtype == G[k].dtype


def test_a_stale_update_moves_the_model_less_than_a_fresh_one():
    buffer = add(add(Buffer(5), _update("fast", 5, 1.0)), _update("slow", 2, 1.0))
    out = averaged_model(G, buffer)
    expected = (1.0 + 1.0 * staleness_weight(3)) / 2  # 3 versions old: weight 1/sqrt(4) = 1/2
    np.testing.assert_allclose(out["w"], G["w"] + expected, rtol=1e-6)
    assert staleness_weight(3) == pytest.approx(0.5) and mean_staleness(buffer) == 1.5


def test_the_result_does_not_depend_on_arrival_order():
    one, two = _update("a", 4, 0.1), _update("b", 3, 0.7, n=17)
    first = averaged_model(G, add(add(Buffer(4), one), two))
    second = averaged_model(G, add(add(Buffer(4), two), one))
    assert all(first[k].tobytes() == second[k].tobytes() for k in G)


def test_staleness_bound_and_updates_from_the_future_are_refused():
    policy = BufferPolicy(size=2, max_staleness=2)
    assert too_stale(7, 5, policy) is None
    assert "3 versions old" in too_stale(7, 4, policy)
    assert "does not exist yet" in too_stale(7, 8, policy)


def test_a_buffer_is_full_at_its_size_and_applying_it_starts_the_next_version_empty():
    policy = BufferPolicy(size=2, max_staleness=1)
    buffer = add(Buffer(0), _update("a", 0, 1.0))
    assert not is_full(buffer, policy)
    buffer = add(buffer, _update("b", 0, 1.0))
    assert is_full(buffer, policy)
    assert applied(buffer) == Buffer(1)
    with pytest.raises(ValueError):
        averaged_model(G, Buffer(1))
    with pytest.raises(ValueError):
        BufferPolicy(size=0, max_staleness=1)
    assert math.isclose(staleness_weight(0), 1.0)
