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


# Elements summed per block: a float64 block of the sum and of one term stay in L2 cache while
# every update is folded in, instead of a model-sized float64 temporary per update per tensor.
_SUM_BLOCK = 1 << 15


def weighted_average(updates: Sequence[Update]) -> Weights:
    """sum_k n_k w_k / sum_k n_k.

    Each element is 0 + (float64(w_1) * n_1/total) + (float64(w_2) * n_2/total) + ..., in the
    order of `updates`, whatever the block size: the same float64 operations in the same order,
    so the result does not depend on how the work is cut (resume = uninterrupted, bit for bit).
    """
    if not updates:
        raise ValueError("no client updates to average")
    total = sum(int(n) for _, n in updates)
    if total <= 0:
        raise ValueError("client updates carry no training examples (sum of num_examples is 0)")
    keys = list(updates[0][0])
    out: Weights = {}
    for k in keys:
        shape = np.shape(updates[0][0][k])
        acc = np.zeros(shape, dtype=np.float64)
        flat_acc = acc.reshape(-1)
        terms = [(np.asarray(weights[k]).reshape(-1), int(n) / total) for weights, n in updates]
        term = np.empty(min(_SUM_BLOCK, flat_acc.size), dtype=np.float64)
        for start in range(0, flat_acc.size, _SUM_BLOCK):
            block = flat_acc[start:start + _SUM_BLOCK]
            scaled = term[:block.size]
            for flat, scale in terms:
                np.multiply(flat[start:start + _SUM_BLOCK], scale, out=scaled, dtype=np.float64)
                block += scaled
        out[k] = acc
    return out


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
