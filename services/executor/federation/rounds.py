"""Pure decisions of the round protocol: who trains in a round, and when a round closes.

A round closes as soon as every sampled client answered, or at its deadline
with at least `min_clients` answers; below that minimum the step fails.
Clients that missed a round are asked again in the next one.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np


class RoundOutcome(enum.Enum):
    WAIT = "wait"
    AGGREGATE = "aggregate"
    FAIL = "fail"


@dataclass(frozen=True)
class RoundPlan:
    round: int
    sampled: tuple[str, ...]
    deadline: float           # clock.monotonic() seconds


def sample_clients(available: Sequence[str], fraction: float, min_clients: int, seed: int,
                   round: int) -> tuple[str, ...]:
    """A deterministic sample of at least min_clients (or all available) clients.

    Not secret, so a seeded numpy generator is right here: the same flow replays
    the same sample after a resume.
    """
    pool = sorted(available)
    want = min(len(pool), max(min_clients, math.ceil(fraction * len(pool))))
    if want >= len(pool):
        return tuple(pool)
    rng = np.random.default_rng([seed, round])
    return tuple(sorted(rng.choice(pool, size=want, replace=False).tolist()))


def round_outcome(plan: RoundPlan, answered: Collection[str], now: float, min_clients: int) -> RoundOutcome:
    got = set(answered) & set(plan.sampled)
    if got == set(plan.sampled):
        return RoundOutcome.AGGREGATE
    if now < plan.deadline:
        return RoundOutcome.WAIT
    return RoundOutcome.AGGREGATE if len(got) >= min_clients else RoundOutcome.FAIL


def weighted_mean(values: Sequence[tuple[float, int]]) -> float:
    total = sum(n for _, n in values)
    return float(sum(v * n for v, n in values) / total) if total else float("nan")
