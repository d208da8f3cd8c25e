"""Split one dataset's rows across parties: pure, seeded, every row exactly once.

Each function returns one sorted int64 index array per party; together they
are a partition of range(n) (disjoint, covering). Sorted indices keep each
party's rows in the source order, so stored blocks stay in that order too.
"""

from __future__ import annotations

import numpy as np

from shared.errors import ConfigurationError

_MAX_TRIES = 1000


def _check(n_parties: int, seed: int) -> None:
    if not isinstance(n_parties, (int, np.integer)) or n_parties < 1:
        raise ConfigurationError(f"need at least one party, got {n_parties!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer, got {seed!r}")


def iid(n_rows: int, n_parties: int, seed: int) -> list[np.ndarray]:
    """A seeded random split into parts whose sizes differ by at most one."""
    _check(n_parties, seed)
    perm = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, n_parties)]


def dirichlet(labels: np.ndarray, n_parties: int, alpha: float, seed: int,
              min_size: int = 1) -> list[np.ndarray]:
    """Label-skewed split: for each class, party shares ~ Dirichlet(alpha * 1).

    Small alpha concentrates each class on few parties (strong non-IID);
    large alpha approaches IID. Draws repeat (deterministically, from the
    same seeded generator) until every party holds at least min_size rows;
    an impossible request fails instead of looping.
    """
    _check(n_parties, seed)
    if not alpha > 0:
        raise ConfigurationError(f"dirichlet alpha must be > 0, got {alpha!r}")
    labels = np.asarray(labels).reshape(-1)
    if min_size * n_parties > labels.size:
        raise ConfigurationError(f"cannot give {n_parties} parties {min_size} rows each "
                                 f"from {labels.size} rows")
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(labels, return_inverse=True)
    by_class = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    for _ in range(_MAX_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_parties)]
        for rows in by_class:
            rows = rows[rng.permutation(rows.size)]
            shares = rng.dirichlet(np.full(n_parties, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * rows.size).astype(np.int64)
            for p, chunk in enumerate(np.split(rows, cuts)):
                parts[p].append(chunk)
        out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ConfigurationError(
        f"dirichlet(alpha={alpha}) left a party with fewer than {min_size} rows after "
        f"{_MAX_TRIES} draws ({len(classes)} classes, {n_parties} parties): raise alpha "
        "or lower min_size")


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each party's label distribution and
    the pooled one: 0 for identical mixes, towards 1 for disjoint label sets."""
    labels = np.asarray(labels).reshape(-1)
    classes, inverse = np.unique(labels, return_inverse=True)
    pooled = np.bincount(inverse, minlength=len(classes)) / labels.size
    dists = []
    for p in parts:
        if len(p):
            local = np.bincount(inverse[p], minlength=len(classes)) / len(p)
            dists.append(0.5 * np.abs(local - pooled).sum())
    return float(np.mean(dists)) if dists else 0.0


def check_partition(parts: list[np.ndarray], n_rows: int) -> None:
    """Raises unless the parts are disjoint and cover range(n_rows)."""
    allrows = np.concatenate(parts) if parts else np.empty(0, np.int64)
    if allrows.size != n_rows or not np.array_equal(np.sort(allrows), np.arange(n_rows)):
        raise ConfigurationError("partition is not a disjoint cover of the rows")
