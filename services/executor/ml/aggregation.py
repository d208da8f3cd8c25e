"""How client models are combined into one candidate model (pure numpy).

weighted_average is FedAvg's rule (McMahan et al. 2017, "Communication-Efficient
Learning of Deep Networks from Decentralized Data"). The robust rules ignore
num_examples on purpose: a Byzantine client could otherwise claim a huge count
and dominate. They work coordinate-wise (median, trimmed mean: Yin et al. 2018,
"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates") or on
whole flattened vectors (Krum: Blanchard et al. 2017, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent").

Every function returns float64 arrays; the strategy casts to the model's dtype.
Callers validate updates first (weights.check_updates).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .weights import Update, Weights, flatten, unflatten


# Values scaled at a time: a float64 slice of the term that stays in L2 cache on its way into the
# sum, not a model-sized temporary per update per tensor.
FOLD_SLICE = 1 << 15


class WeightedSum:
    """sum_k n_k w_k in float64, one update at a time in the order they are added; then / sum_k n_k.

    n_k w_k of a float32 (or float16) w_k is exact in float64 (24 + 31 bits < 53), so only
    the additions and the final division round; the same updates added in the same order
    give the same bits, so an aggregator can fold updates as they arrive instead of holding
    N models (OrderedFold keeps the order fixed whatever the arrival order).
    """

    def __init__(self) -> None:
        self._acc: Weights | None = None
        self.total = 0

    def add(self, weights: Mapping[str, np.ndarray], n: int) -> None:
        if self._acc is None:
            self._acc = {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in weights.items()}
        scale = float(int(n))
        for k, acc in self._acc.items():
            src, dst = np.asarray(weights[k]).reshape(-1), acc.reshape(-1)
            scratch = np.empty(min(FOLD_SLICE, src.size), dtype=np.float64)
            for i in range(0, src.size, FOLD_SLICE):
                part = src[i:i + FOLD_SLICE]
                scaled = scratch[:part.size]
                np.multiply(part, scale, out=scaled, dtype=np.float64)
                dst[i:i + FOLD_SLICE] += scaled
        self.total += int(n)

    def average(self) -> Weights:
        """The weighted mean, in float64 (divided in place: the sum is consumed)."""
        if self._acc is None:
            raise ValueError("no client updates to average")
        if self.total <= 0:
            raise ValueError("client updates carry no training examples (sum of num_examples is 0)")
        out, self._acc = self._acc, None
        for acc in out.values():
            acc /= self.total
        return out


class OrderedFold:
    """Folds updates into one WeightedSum in a fixed order of senders, whatever order they arrive in.

    An update is folded as soon as every sender before it has been; only out-of-order arrivals
    wait, so the aggregator holds one float64 sum and the updates that came early, not N models.
    The result is bit for bit weighted_average over the answered senders' updates in `order`
    (a sender that never answers is skipped when the fold closes), so a resumed round, whose
    updates arrive in another order, still ends with the same model.
    """

    def __init__(self, order: Sequence[str]) -> None:
        self._order = list(order)
        self._next = 0
        self._waiting: dict[str, Update] = {}
        self._sum = WeightedSum()

    def add(self, sender: str, weights: Mapping[str, np.ndarray], n: int) -> None:
        if sender not in self._order or sender in self._waiting or self._order.index(sender) < self._next:
            raise ValueError(f"{sender!r} is not expected in this fold, or already added")
        self._waiting[sender] = (weights, n)
        while self._next < len(self._order) and self._order[self._next] in self._waiting:
            self._sum.add(*self._waiting.pop(self._order[self._next]))
            self._next += 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> Weights:
        """The weighted average of every update added (those behind a silent sender folded now)."""
        for sender in self._order[self._next:]:
            if sender in self._waiting:
                self._sum.add(*self._waiting.pop(sender))
        self._next = len(self._order)
        return self._sum.average()


def weighted_average(updates: Sequence[Update]) -> Weights:
    """sum_k n_k w_k / sum_k n_k, folded in list order (see WeightedSum)."""
    if not updates:
        raise ValueError("no client updates to average")
    folded = WeightedSum()
    for weights, n in updates:
        folded.add(weights, n)
    return folded.average()


def _stack(updates: Sequence[Update]) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
    if not updates:
        raise ValueError("no client updates to aggregate")
    like = updates[0][0]
    keys = list(like)
    return np.stack([flatten(w, keys) for w, _ in updates]), like


def coordinate_median(updates: Sequence[Update]) -> Weights:
    """Per coordinate median; with an even count, the mean of the two middle values."""
    stacked, like = _stack(updates)
    return unflatten(np.median(stacked, axis=0), like)


def trim_count(n: int, trim_fraction: float) -> int:
    """Values dropped from EACH end: floor(trim_fraction * n), so never half or more."""
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    return math.floor(trim_fraction * n)


def trimmed_mean(updates: Sequence[Update], trim_fraction: float) -> Weights:
    """Per coordinate: sort, drop the k lowest and k highest, average the rest."""
    stacked, like = _stack(updates)
    k = trim_count(len(updates), trim_fraction)
    ordered = np.sort(stacked, axis=0)
    return unflatten(ordered[k:len(updates) - k].mean(axis=0), like)


def krum_scores(vectors: np.ndarray, f: int) -> np.ndarray:
    """score_i = sum of squared distances from i to its n - f - 2 nearest other vectors."""
    n = vectors.shape[0]
    neighbours = n - f - 2
    if f < 0 or neighbours < 1:
        raise ValueError(f"krum with f={f} Byzantine clients needs at least f + 3 = {f + 3} "
                         f"updates, got {n}")
    scores = np.empty(n, dtype=np.float64)
    for i in range(n):
        # Differences, not |a|^2 + |b|^2 - 2ab: that shortcut cancels badly for
        # nearly equal models, which is exactly the case that decides the pick.
        d2 = np.sum((vectors - vectors[i]) ** 2, axis=1)
        d2 = np.delete(d2, i)
        scores[i] = np.sort(d2, kind="stable")[:neighbours].sum()
    return scores


def krum_select(updates: Sequence[Update], f: int) -> int:
    """Index of the update Krum keeps (ties: the lowest index, for determinism)."""
    stacked, _ = _stack(updates)
    return int(np.argmin(krum_scores(stacked, f)))


def krum(updates: Sequence[Update], f: int) -> Weights:
    index = krum_select(updates, f)
    return {k: np.asarray(v, dtype=np.float64).copy() for k, v in updates[index][0].items()}
