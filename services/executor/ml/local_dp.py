"""Example-level differential privacy for a client's own training: DP-SGD through Opacus.

DP-FedAvg (privacy.py) protects a *party*: the released model barely depends on
whether one party took part. A party that must protect each of its own records
(a patient, an account) against everyone who sees its update, the aggregator
included, trains with DP-SGD instead (Abadi et al. 2016): each example's gradient
is clipped to L2 norm `max_grad_norm`, and Gaussian noise of std
noise_multiplier * max_grad_norm is added to every batch's sum. Opacus computes
the per-example gradients (GradSampleModule) and does the clipping and noising
(DPOptimizer); its RDP accountant turns the steps this party took over all
rounds into (epsilon, delta), which the client reports with every round.

Accounting assumes batches sampled with rate batch_size / n; training here
shuffles and slices, the usual approximation (as Opacus's own non-Poisson mode).
The noise comes from torch's default generator, not a CSPRNG: Opacus's
secure_mode needs torchcsprng, which is not packaged for this torch. That
matters against an adversary who can reconstruct the generator's state.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class LocalDp:
    noise_multiplier: float
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0 or not self.max_grad_norm > 0 or not 0 < self.delta < 1:
            raise ValueError(f"invalid local DP settings {self}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "LocalDp | None":
        sigma = params.get("local_dp_noise_multiplier")
        if sigma is None:
            return None
        return cls(float(sigma), float(params.get("local_dp_max_grad_norm") or 1.0),
                   float(params.get("local_dp_delta") or 1e-5))

    def epsilon(self, steps: int, sample_rate: float) -> float:
        """epsilon after `steps` DP-SGD steps at this sample rate (inf without noise)."""
        if steps <= 0:
            return 0.0
        if not self.noise_multiplier > 0:
            return math.inf
        from opacus.accountants import RDPAccountant

        accountant = RDPAccountant()
        accountant.history = [(self.noise_multiplier, min(1.0, sample_rate), int(steps))]
        with warnings.catch_warnings():   # "optimal order is the largest alpha": the bound still holds
            warnings.simplefilter("ignore")
            return float(accountant.get_epsilon(delta=self.delta))


def private_training(model, optimizer, dp: LocalDp, batch_size: int):
    """(forward module, stepping optimizer, close) for DP-SGD over `model` and `optimizer`:
    per-example gradients, clipped and noised at each step. close() removes Opacus's hooks."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    # Opacus's hooks on a first layer whose input needs no gradient: expected, and said every step.
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    forward = GradSampleModule(model)
    stepping = DPOptimizer(optimizer, noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
                           expected_batch_size=batch_size)
    return forward, stepping, forward._close
