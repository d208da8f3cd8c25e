"""Streaming, mergeable statistics: pure numpy, no I/O.

Everything here is a monoid: statistics of a block merge with those of the
next block, and a party's statistics merge with another party's, with the
same functions. Federated standardisation rests on that: parties share only
(count, mean, M2, min, max), histogram counts over agreed edges and label
counts, never rows, and the merge gives the pooled values exactly (up to
float rounding).

Means and M2 (sum of squared deviations from the mean) are kept in float64
and merged with Chan et al.'s pairwise formula, which stays accurate where
naive sum / sum-of-squares cancels catastrophically. NaNs propagate: a
column holding NaN has NaN mean and variance, so missing values surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Any, Iterable

import numpy as np

from shared.errors import DataError


@dataclass(frozen=True)
class Moments:
    """count, mean, M2, min and max of rows, elementwise over each row's shape."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    @property
    def variance(self) -> np.ndarray:
        """Population variance (ddof=0), what standardisation divides by."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.m2 / self.count if self.count else np.full_like(self.m2, np.nan)

    @property
    def sample_variance(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.m2 / (self.count - 1) if self.count > 1 else np.full_like(self.m2, np.nan)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.variance)

    @classmethod
    def empty(cls, shape: tuple[int, ...] = ()) -> "Moments":
        return cls(0, np.zeros(shape), np.zeros(shape), np.full(shape, np.inf), np.full(shape, -np.inf))

    def to_dict(self) -> dict[str, Any]:
        # JSON cannot hold inf/nan portably, so they travel as None.
        out: dict[str, Any] = {"count": self.count}
        for field in ("mean", "m2", "minimum", "maximum"):
            out[field] = _nan_to_none(np.asarray(getattr(self, field), np.float64).tolist())
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Moments":
        try:
            def dec(v: Any, fill: float) -> np.ndarray:
                return np.asarray(_none_to(v, fill), dtype=np.float64)

            count = int(d["count"])
            # A missing min/max is only ever an empty set's +/-inf.
            return cls(count, dec(d["mean"], np.nan), dec(d["m2"], np.nan),
                       dec(d["minimum"], np.inf if count == 0 else np.nan),
                       dec(d["maximum"], -np.inf if count == 0 else np.nan))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed statistics {d!r}: {exc}") from exc


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


def _none_to(v: Any, fill: float) -> Any:
    if isinstance(v, list):
        return [_none_to(x, fill) for x in v]
    return fill if v is None else v


def moments_of(x: np.ndarray) -> Moments:
    """Moments over axis 0 (rows); two-pass within the block for accuracy."""
    x = np.asarray(x)
    shape = x.shape[1:]
    if x.shape[0] == 0:
        return Moments.empty(shape)
    xf = x.astype(np.float64, copy=False)
    mean = xf.mean(axis=0)
    m2 = np.square(xf - mean).sum(axis=0)
    return Moments(int(x.shape[0]), mean, m2, xf.min(axis=0), xf.max(axis=0))


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan et al. parallel merge; exact for counts, stable for mean and M2."""
    if a.mean.shape != b.mean.shape:
        raise DataError(f"cannot merge statistics of shapes {a.mean.shape} and {b.mean.shape}")
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + np.square(delta) * (a.count * b.count / n)
    return Moments(n, mean, m2, np.minimum(a.minimum, b.minimum), np.maximum(a.maximum, b.maximum))


def merge_all(parts: Iterable[Moments]) -> Moments:
    return reduce(merge_moments, parts)


@dataclass(frozen=True)
class Histogram:
    """Counts per feature over shared edges: edges (F, bins+1), counts (F, bins).

    Parties that agree on edges (e.g. from merged min/max) can add counts.
    Bins follow np.histogram: half-open, the last one closed; values outside
    the edges are not counted.
    """

    edges: np.ndarray
    counts: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist()}


def uniform_edges(minimum: np.ndarray, maximum: np.ndarray, bins: int) -> np.ndarray:
    """bins equal-width bins per feature spanning [min, max]; a constant feature gets width 1."""
    if bins < 1:
        raise DataError(f"histogram needs at least one bin, got {bins}")
    lo = np.atleast_1d(np.asarray(minimum, np.float64))
    hi = np.atleast_1d(np.asarray(maximum, np.float64))
    # np.histogram's own convention for an empty range: widen by 0.5 each side.
    flat = ~(hi > lo)
    lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
    return lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, bins + 1)[None, :]


def histogram_of(x: np.ndarray, edges: np.ndarray) -> Histogram:
    """Per-feature histogram of a (rows, F) block; edges (F, bins+1) or one shared (bins+1,)."""
    x2 = np.asarray(x).reshape(len(x), -1)
    e = np.asarray(edges, np.float64)
    if e.ndim == 1:
        e = np.broadcast_to(e, (x2.shape[1], e.shape[0]))
    if e.shape[0] != x2.shape[1]:
        raise DataError(f"histogram edges for {e.shape[0]} features, data has {x2.shape[1]}")
    counts = np.stack([np.histogram(x2[:, j], bins=e[j])[0] for j in range(x2.shape[1])])
    return Histogram(np.array(e), counts.astype(np.int64))


def merge_histograms(a: Histogram, b: Histogram) -> Histogram:
    if a.edges.shape != b.edges.shape or not np.array_equal(a.edges, b.edges):
        raise DataError("cannot merge histograms over different edges; agree on edges first")
    return Histogram(a.edges, a.counts + b.counts)


@dataclass(frozen=True)
class LabelCounts:
    """Sorted distinct label values and how often each occurs."""

    values: np.ndarray
    counts: np.ndarray

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def as_dict(self) -> dict[Any, int]:
        return {v.item(): int(c) for v, c in zip(self.values, self.counts)}

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelCounts":
        try:
            return cls(np.asarray(d["values"]), np.asarray(d["counts"], dtype=np.int64))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed label counts {d!r}: {exc}") from exc


def label_counts_of(y: np.ndarray) -> LabelCounts:
    values, counts = np.unique(np.asarray(y).reshape(-1), return_counts=True)
    return LabelCounts(values, counts.astype(np.int64))


def merge_label_counts(a: LabelCounts, b: LabelCounts) -> LabelCounts:
    values = np.concatenate([a.values, b.values])
    counts = np.concatenate([a.counts, b.counts])
    uniq, inverse = np.unique(values, return_inverse=True)
    return LabelCounts(uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64))


@dataclass(frozen=True)
class Summary:
    """What PartyDataset.statistics() returns: all parts mergeable across parties."""

    moments: Moments
    histogram: Histogram | None = None
    labels: LabelCounts | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"moments": self.moments.to_dict(),
                "histogram": self.histogram.to_dict() if self.histogram else None,
                "labels": self.labels.to_dict() if self.labels else None}


def merge_summaries(a: Summary, b: Summary) -> Summary:
    hist = merge_histograms(a.histogram, b.histogram) if a.histogram and b.histogram else None
    if a.labels is None or b.labels is None:
        labels = a.labels or b.labels
    else:
        labels = merge_label_counts(a.labels, b.labels)
    return Summary(merge_moments(a.moments, b.moments), hist, labels)
