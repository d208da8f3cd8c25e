"""Example-level local differential privacy: DP-SGD on a client's own training (Abadi et al. 2016).

A client that wants each of its rows protected, whatever the aggregator and the
other parties do, trains with DP-SGD: every step takes a Poisson sample of its
rows (each row with probability q = batch_size / n), clips each row's gradient
to L2 norm C, sums, adds N(0, (sigma*C)^2) noise and divides by the expected
batch size q*n. Per-example gradients come from Opacus (GradSampleModule, the
library, not our autograd hooks); the privacy loss from Opacus's RDP
accountant for the Poisson-subsampled Gaussian mechanism, over every step this
client has taken in the flow.

Why our own sampling and noise, not Opacus's DataLoader and optimizer: the
sample and the noise are secrets (who was in a batch, what was added), so both
come from the operating system's CSPRNG (privacy.gaussian), never from a
seeded generator; Opacus's default noise is torch's Mersenne Twister.

Consequence for users: a local-DP run is not bit-reproducible, and a resumed
client continues with fresh randomness (its step count, hence its epsilon, is
checkpointed and carried on).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .privacy import gaussian

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class LocalDp:
    clip: float              # C: L2 bound of each row's gradient
    noise_multiplier: float  # sigma: noise std of each step's gradient sum is sigma * C

    def __post_init__(self) -> None:
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"local_dp_clip must be positive and finite, got {self.clip}")
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"local_dp_noise_multiplier must be positive and finite, got {self.noise_multiplier}")


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def poisson_sample(n: int, rate: float, random_bytes: RandomBytes = os.urandom) -> torch.Tensor:
    """Indices of the rows in this step's batch: each row independently with probability `rate`."""
    uniform = (np.frombuffer(random_bytes(8 * n), dtype="<u8") >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return torch.from_numpy(np.flatnonzero(uniform < rate))


def dp_sgd_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer, dp: LocalDp,
                 batch_size: int, prox: Callable[[], torch.Tensor] | None = None,
                 random_bytes: RandomBytes = os.urandom) -> tuple[float, int, int]:
    """One epoch of DP-SGD steps on `model` (in place); returns (loss sum, rows seen, steps)."""
    from opacus import GradSampleModule

    n = int(x.shape[0])
    rate = min(1.0, batch_size / n)
    expected = rate * n
    params = [p for p in model.parameters() if p.requires_grad]
    with warnings.catch_warnings():  # Opacus warns about secure_mode; our noise is from os.urandom
        warnings.simplefilter("ignore")
        per_example = GradSampleModule(model, loss_reduction="sum")
    loss_sum, seen, steps = 0.0, 0, steps_per_epoch(n, batch_size)
    try:
        for _ in range(steps):
            idx = poisson_sample(n, rate, random_bytes)
            opt.zero_grad(set_to_none=True)
            total = _clipped_sum(per_example, params, x[idx], y[idx], dp.clip) if len(idx) else None
            for i, p in enumerate(params):
                noise = gaussian(p.numel(), dp.noise_multiplier * dp.clip, random_bytes)
                summed = total[i] if total is not None else torch.zeros_like(p)
                p.grad = (summed + torch.from_numpy(noise).to(p.dtype).view_as(p)) / expected
            if prox is not None:  # FedProx's term depends on no row: added after the noise, not clipped
                grads = torch.autograd.grad(prox(), params)
                for p, g in zip(params, grads):
                    p.grad = p.grad + g
            opt.step()
            if len(idx):
                with torch.no_grad():
                    loss_sum += float(F.cross_entropy(model(x[idx]), y[idx], reduction="sum"))
                seen += len(idx)
    finally:
        per_example._close()  # take Opacus's hooks off: the model goes on to evaluation and the wire
    return loss_sum, seen, steps


def _clipped_sum(per_example: nn.Module, params: list[nn.Parameter], xb: torch.Tensor, yb: torch.Tensor,
                 clip: float) -> list[torch.Tensor]:
    loss = F.cross_entropy(per_example(xb), yb, reduction="sum")
    with warnings.catch_warnings():  # torch: "full backward hook ... no inputs require gradients": by design
        warnings.simplefilter("ignore", UserWarning)
        loss.backward()
    samples = [p.grad_sample for p in params]
    norms = torch.sqrt(sum(s.reshape(len(xb), -1).pow(2).sum(dim=1) for s in samples))
    scale = (clip / (norms + 1e-12)).clamp(max=1.0)
    out = [torch.einsum("b,b...->...", scale, s) for s in samples]
    for p in params:
        p.grad_sample = None
    return out


def local_epsilon(dp: LocalDp, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of `steps` Poisson-subsampled Gaussian steps, from Opacus's RDP accountant."""
    if steps <= 0:
        return 0.0
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(dp.noise_multiplier, min(1.0, sample_rate), steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta))
