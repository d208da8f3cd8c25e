"""Mergeable statistics: equal to numpy on the pooled data, however the rows are split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from services.executor.data.stats import (LabelCounts, Moments, histogram_of, label_counts_of,
                                          merge_all, merge_histograms, merge_label_counts,
                                          merge_moments, moments_of, uniform_edges)
from shared.errors import DataError

_floats = st.floats(-1e6, 1e6, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 4)), elements=_floats),
       cuts=st.lists(st.integers(0, 40), max_size=5))
def test_merged_chunks_equal_pooled_numpy(x, cuts):
    chunks = np.split(x, sorted(c for c in cuts if c <= len(x)))
    m = merge_all([moments_of(c) for c in chunks])
    assert m.count == len(x)
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(m.variance, x.var(0), rtol=1e-7, atol=1e-3)
    np.testing.assert_array_equal(m.minimum, x.min(0))
    np.testing.assert_array_equal(m.maximum, x.max(0))
    if len(x) > 1:
        np.testing.assert_allclose(m.sample_variance, x.var(0, ddof=1), rtol=1e-7, atol=1e-3)


def test_merge_is_stable_where_sum_of_squares_is_not():
    rng = np.random.default_rng(0)
    x = 1e9 + rng.normal(0, 1, size=(100_000, 1))
    parts = [moments_of(c) for c in np.array_split(x, 37)]
    m = merge_all(parts)
    naive = (x ** 2).mean(0) - x.mean(0) ** 2  # cancels catastrophically at 1e9
    assert abs(m.variance[0] - x.var()) < 1e-6
    assert abs(naive[0] - x.var()) > 1.0


def test_integer_and_bool_columns_are_summarised_in_float64():
    m = moments_of(np.array([True, False, True, True]))
    assert (m.count, float(m.mean), float(m.variance)) == (4, 0.75, 0.1875)
    big = moments_of(np.array([2**40, 2**40 + 2], dtype=np.int64))
    assert float(big.mean) == 2**40 + 1 and float(big.variance) == 1.0


def test_empty_moments_are_the_merge_identity_and_survive_json():
    x = np.arange(12.0).reshape(6, 2)
    m = moments_of(x)
    assert merge_moments(Moments.empty((2,)), m) is m and merge_moments(m, Moments.empty((2,))) is m
    for mm in (m, Moments.empty((2,)), moments_of(np.array([[np.nan, 1.0]]))):
        back = Moments.from_dict(json.loads(json.dumps(mm.to_dict())))
        assert back.count == mm.count
        for f in ("mean", "m2", "minimum", "maximum"):
            np.testing.assert_array_equal(getattr(back, f), getattr(mm, f))


def test_merging_different_shapes_is_an_error():
    with pytest.raises(DataError, match="shapes"):
        merge_moments(moments_of(np.zeros((3, 2))), moments_of(np.zeros((3, 3))))


def test_histograms_equal_numpy_and_add_across_parties():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 3)) * [1, 10, 0.1]
    edges = uniform_edges(x.min(0), x.max(0), 7)
    h = merge_histograms(histogram_of(x[:300], edges), histogram_of(x[300:], edges))
    for j in range(3):
        expected, expected_edges = np.histogram(x[:, j], bins=7, range=(x[:, j].min(), x[:, j].max()))
        np.testing.assert_array_equal(h.counts[j], expected)
        np.testing.assert_allclose(h.edges[j], expected_edges)
    assert h.counts.sum() == 3000
    shared = histogram_of(x, np.linspace(-1, 1, 5))  # one edge vector for every feature
    assert shared.counts.shape == (3, 4)
    with pytest.raises(DataError, match="different edges"):
        merge_histograms(h, histogram_of(x, uniform_edges(x.min(0), x.max(0), 6)))


def test_constant_feature_gets_a_nonempty_bin():
    h = histogram_of(np.full((5, 1), 3.0), uniform_edges(np.array([3.0]), np.array([3.0]), 4))
    assert h.counts.sum() == 5


@given(a=st.lists(st.integers(0, 5), max_size=30), b=st.lists(st.integers(0, 5), max_size=30))
def test_label_counts_merge_equals_pooled(a, b):
    pooled = label_counts_of(np.array(a + b, dtype=np.int64))
    merged = merge_label_counts(label_counts_of(np.array(a, dtype=np.int64)),
                                label_counts_of(np.array(b, dtype=np.int64)))
    assert merged.as_dict() == pooled.as_dict()
    assert merged.total == len(a) + len(b)
    assert LabelCounts.from_dict(json.loads(json.dumps(merged.to_dict()))).as_dict() == merged.as_dict()
