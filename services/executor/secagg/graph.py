"""The SecAgg+ communication graph (Bell et al., CCS 2020, "Secure Single-Server Aggregation
with (Poly)Logarithmic Overhead").

With the full graph every client agrees keys, Shamir-shares its secrets and
masks pairwise with every other client: O(n) work and ciphertexts per client,
O(n^2) for the aggregator. With the sparse graph it does so only with its k
neighbours, k = O(log n), so a round costs O(n log n) in all.

The graph is a random Harary graph, as in the paper: the cohort is put in a
pseudorandom order and each client is joined to the k/2 clients before it and
the k/2 after it on that ring, so every client has exactly k neighbours and the
relation is symmetric (pairwise masks cancel). The order comes from SHA-256 of
the round's context, which binds the signed round setup (its digest: cohort,
threshold, model, attempt), so the aggregator and every client compute the same
graph and no client can choose its neighbours. The aggregator signs the setup,
so it could try many setups to get a graph it likes; what stops that is that
any graph needs t colluding neighbours of a victim, and t is a majority of the
neighbourhood (see README, threat model).

Thresholds are relative to the neighbourhood: a client's secrets are shared
among its k neighbours and itself, and any t of those k + 1 rebuild them.
"""

from __future__ import annotations

import hashlib
import math
from typing import Mapping, Sequence

FULL, SPARSE = "full", "sparse"
GRAPHS = (FULL, SPARSE)
DEGREE_FACTOR = 1.5   # k = 2 * ceil(1.5 * log2 n): 18 of 49 others at n = 50, 30 of 999 at n = 1000


def sparse_degree(n: int) -> int:
    """k for a cohort of n under the sparse graph (n - 1, i.e. the full graph, when that is smaller)."""
    if n < 2:
        return 0
    return min(n - 1, 2 * math.ceil(DEGREE_FACTOR * math.log2(n)))


def degree(graph: str, n: int) -> int:
    if graph not in GRAPHS:
        raise ValueError(f"secagg_graph must be one of {GRAPHS}, got {graph!r}")
    return n - 1 if graph == FULL else sparse_degree(n)


def harary(parties: Sequence[str], k: int, seed: bytes) -> dict[str, frozenset[str]]:
    """Each party's k neighbours in the random Harary graph H(k, n) keyed by `seed`."""
    names = sorted(set(parties))
    n = len(names)
    if k >= n - 1:
        return {p: frozenset(names) - {p} for p in names}
    if k < 2 or k % 2:
        raise ValueError(f"a sparse graph needs an even degree >= 2, got {k} for {n} parties")
    ring = sorted(names, key=lambda p: hashlib.sha256(seed + p.encode()).digest())
    half = k // 2
    return {p: frozenset(ring[(i + d) % n] for d in range(-half, half + 1) if d) for i, p in enumerate(ring)}


def graph_seed(info: bytes) -> bytes:
    return hashlib.sha256(b"ferry-secagg-graph/v1" + info).digest()


def neighbourhoods(graph: str, cohort: Sequence[str], info: bytes) -> Mapping[str, frozenset[str]]:
    """The graph over the round's cohort (fixed by the signed setup, not by who answers)."""
    return harary(cohort, degree(graph, len(set(cohort))), graph_seed(info))
