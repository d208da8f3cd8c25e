"""Per-round history of an algorithm task: what its executor reported for each training round.

Folded from ExecutorProgress facts only after the same guards as every other
fact (dedup by sequence, attempt fencing, terminal absorption: see decide.py),
so a stale attempt's or a duplicated report never rewrites a curve.

Within one attempt, a later report of a round adds to that round's metrics (an
executor reports a round's training first and its evaluation later); a newer
attempt's report of a round replaces it (the retry retrained that round from
its checkpoint). Bounded: the newest ROUNDS_LIMIT rounds per algorithm task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from shared.plain import slots_constructor

ROUNDS_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class RoundPoint:
    round: int
    attempt: int
    at_ms: int                      # envelope time of the newest report folded into this point
    metrics: Mapping[str, float] = field(default_factory=dict)


round_point = slots_constructor(RoundPoint)  # RoundPoint(...) without a frozen setattr per field


def record_round(rounds: tuple[RoundPoint, ...], point: RoundPoint,
                 limit: int = ROUNDS_LIMIT) -> tuple[RoundPoint, ...]:
    """`rounds` (ascending by round) with `point` folded in."""
    if point.round <= 0:
        return rounds
    index = _find(rounds, point.round)
    if index is None:
        merged = point
        out = _insert(rounds, merged)
    else:
        old = rounds[index]
        if point.attempt < old.attempt:
            return rounds   # decide() fences stale attempts; this keeps the function safe on its own
        metrics = {**old.metrics, **point.metrics} if point.attempt == old.attempt else dict(point.metrics)
        merged = round_point(point.round, point.attempt, max(old.at_ms, point.at_ms), metrics)
        out = rounds[:index] + (merged,) + rounds[index + 1:]
    return out[-limit:] if len(out) > limit else out


def _find(rounds: tuple[RoundPoint, ...], number: int) -> int | None:
    # Reports come in round order, so the match, if any, is almost always at the end.
    for i in range(len(rounds) - 1, -1, -1):
        r = rounds[i].round
        if r == number:
            return i
        if r < number:
            return None
    return None


def _insert(rounds: tuple[RoundPoint, ...], point: RoundPoint) -> tuple[RoundPoint, ...]:
    i = len(rounds)
    while i > 0 and rounds[i - 1].round > point.round:
        i -= 1
    return rounds[:i] + (point,) + rounds[i:]
