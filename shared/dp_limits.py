"""What the DP-FedAvg accountant can certify, as pure math the splitter can check against.

The accountant (services/executor/ml/privacy_accounting.py, Opacus's RDP accountant)
converts Rényi DP at the orders RDP_ORDERS into (epsilon, delta)-DP with Balle et al.
2020, Theorem 21: epsilon = min over alpha of

    rdp(alpha) + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1).

rdp(alpha) shrinks to 0 as the noise grows, but the rest does not: at a given delta no
amount of noise certifies an epsilon below `epsilon_floor(delta)` (about 0.10 at
delta = 1e-5). A dp_target_epsilon at or below it would fail every client at run time
("the privacy budget is too low"), so the splitter refuses it up front.
"""

from __future__ import annotations

import math

# Opacus's RDPAccountant.DEFAULT_ALPHAS, passed to it explicitly so the floor below is the
# accountant's own (tests/test_param_ranges.py holds the two together).
RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
# The calibration searches noise multipliers up to ~6.6e5 (Opacus stops doubling past 1e6);
# with at most 10,000 rounds their rdp(alpha) stays below 1e-3, which this margin covers.
CALIBRATION_MARGIN = 1e-3


def epsilon_floor(delta: float) -> float:
    """The smallest epsilon any noise multiplier is accounted with at this delta."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return min(math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in RDP_ORDERS)


def smallest_target_epsilon(delta: float) -> float:
    """The smallest dp_target_epsilon the calibration reaches at this delta, for any rounds <= 10,000."""
    return epsilon_floor(delta) + CALIBRATION_MARGIN
