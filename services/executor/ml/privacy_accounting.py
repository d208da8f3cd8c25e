"""Privacy loss of DP-FedAvg rounds, from Opacus's RDP accountant (the library, not our math).

Why Opacus: it installs with the torch and numpy Ferry already pins (Google's
dp-accounting would downgrade attrs in the shared environment), and it also
provides the DP-SGD engine for example-level local DP. Its RDP accountant
composes subsampled Gaussian mechanisms and converts RDP to (epsilon, delta)
with Balle et al. 2020 (Theorem 21).

Each DP-FedAvg round is one Gaussian mechanism with the round's effective
noise multiplier (privacy.effective_noise_multiplier) and sampling rate 1: no
amplification by sampling is claimed (see privacy.py). The ledger is the list
of those multipliers; it is checkpointed with the model, so a resumed
aggregator reports the same epsilon as an uninterrupted one.

Opacus is imported on first use (it loads much of torch.distributed, seconds
on a busy machine), so flows without DP never pay for it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from typing import Sequence

from shared.dp_limits import RDP_ORDERS

EPSILON_TOLERANCE = 0.01


@dataclass(frozen=True)
class PrivacyLedger:
    """The effective noise multiplier of every round accounted so far."""

    multipliers: tuple[float, ...] = ()

    def record(self, multiplier: float) -> "PrivacyLedger":
        return PrivacyLedger(self.multipliers + (float(multiplier),))

    def epsilon(self, delta: float) -> float:
        return epsilon(self.multipliers, delta)


def epsilon(multipliers: Sequence[float], delta: float) -> float:
    """(epsilon, delta)-DP of the composition of Gaussian mechanisms with these multipliers;
    inf when a round carried no noise."""
    if not multipliers:
        return 0.0
    if any(not m > 0 for m in multipliers):
        return math.inf
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(m, 1.0, len(list(group))) for m, group in groupby(multipliers)]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound is still valid
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta, alphas=list(RDP_ORDERS)))


@lru_cache(maxsize=64)
def calibrate(target_epsilon: float, delta: float, rounds: int) -> float:
    """The smallest noise multiplier (within the accountant's search tolerance) whose `rounds`
    rounds spend at most target_epsilon."""
    if not target_epsilon > 0 or rounds < 1:
        raise ValueError(f"calibration needs target_epsilon > 0 and rounds >= 1, got {target_epsilon}, {rounds}")
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=1.0,
                                          steps=rounds, accountant="rdp", epsilon_tolerance=EPSILON_TOLERANCE,
                                          alphas=list(RDP_ORDERS)))


def round_config(params, cohort: int):
    """privacy.config_from_params with this accountant's calibration: the DpConfig of a round
    of `cohort` clients, or None when the flow has dp off. Both the aggregator and every client
    compute it from the flow's params, so no party takes the noise level from a message."""
    from .privacy import config_from_params

    return config_from_params(params, cohort, calibrate)
