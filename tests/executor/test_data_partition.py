"""Partitioning: every row exactly once, deterministic, label skew controlled by alpha."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from services.executor.data.partition import check_partition, dirichlet, iid, label_skew
from shared.errors import ConfigurationError


def _covers(parts, n):
    allrows = np.concatenate(parts)
    return allrows.size == n and np.array_equal(np.sort(allrows), np.arange(n))


@given(n=st.integers(0, 500), k=st.integers(1, 9), seed=st.integers(0, 2**32))
def test_iid_is_a_balanced_sorted_cover(n, k, seed):
    parts = iid(n, k, seed)
    assert len(parts) == k and _covers(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(np.all(np.diff(p) > 0) for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid(n, k, seed)))


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(0, 6), min_size=20, max_size=300),
       k=st.integers(1, 5), alpha=st.floats(0.05, 50), seed=st.integers(0, 10_000))
def test_dirichlet_is_a_deterministic_cover(labels, k, alpha, seed):
    y = np.array(labels)
    try:
        parts = dirichlet(y, k, alpha, seed)
    except ConfigurationError as exc:  # allowed only for the min_size guarantee
        assert "fewer than 1 rows" in str(exc)
        return
    assert len(parts) == k and _covers(parts, len(y)) and min(len(p) for p in parts) >= 1
    check_partition(parts, len(y))
    again = dirichlet(y, k, alpha, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_label_skew_grows_as_alpha_shrinks():
    y = np.repeat(np.arange(10), 300)
    def skew(alpha):
        return np.mean([label_skew(y, dirichlet(y, 8, alpha, seed)) for seed in range(10)])
    skews = [skew(a) for a in (1000.0, 10.0, 1.0, 0.1, 0.01)]
    assert skews == sorted(skews), skews
    assert skews[0] < 0.05 and skews[-1] > 0.6
    assert label_skew(y, iid(len(y), 8, 0)) < 0.1


def test_min_size_is_honoured_or_refused():
    y = np.repeat([0, 1], 50)
    parts = dirichlet(y, 4, 0.05, seed=0, min_size=5)
    assert min(len(p) for p in parts) >= 5
    with pytest.raises(ConfigurationError, match="cannot give 30 parties 5 rows"):
        dirichlet(y, 30, 1.0, seed=0, min_size=5)
    with pytest.raises(ConfigurationError, match="raise alpha"):
        dirichlet(np.zeros(100), 50, 0.001, seed=0, min_size=2)


@pytest.mark.parametrize("call, problem", [
    (lambda: dirichlet(np.zeros(10), 2, 0.0, 0), "alpha must be > 0"),
    (lambda: iid(10, 0, 0), "at least one party"),
    (lambda: iid(10, 2, -1), "seed"),
])
def test_bad_arguments(call, problem):
    with pytest.raises(ConfigurationError, match=problem):
        call()


def test_check_partition_rejects_overlap():
    with pytest.raises(ConfigurationError):
        check_partition([np.array([0, 1]), np.array([1, 2])], 3)
