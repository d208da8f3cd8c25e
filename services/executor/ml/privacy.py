"""Differentially private FedAvg (DP-FedAvg, McMahan et al. 2018), the pure math.

Each round, every client's update delta = w_client - w_global is clipped to L2
norm <= C, the clipped deltas are summed with unit weights, Gaussian noise of
standard deviation sigma*C is added to the sum, and the new global model is
g + noisy_sum / k (k = clients summed). Unit weights (not FedAvg's
num_examples) keep each party's influence on the sum below C, so the sum's
L2 sensitivity is exactly C under "zero-out" neighbouring (one party's
contribution replaced by nothing; which parties take part is public: they are
named in the flow). The guarantee is party-level: it covers everything a party
trained on, not single rows (see local DP in docs/differential-privacy.md).

Where the noise comes from (DpConfig.mode):
  central      the aggregator clips each update and adds N(0, (sigma*C)^2) to
               the sum. It sees the un-noised updates (or, under secure
               aggregation, the un-noised sum): it is trusted.
  distributed  under secure aggregation, each of the n clients of the round's
               cohort clips its own delta and adds N(0, (sigma*C)^2 / n); the
               sum of n such shares is N(0, (sigma*C)^2), so the aggregator
               never sees an un-noised sum.

Accounting (effective_noise_multiplier): a share of noise counts only if its
client is honest and was summed. A client that colludes with the aggregator
can subtract its own share; a dropout adds none. With h the declared honest
fraction (param dp_honest_fraction), at most floor((1 - h) * n) of the k
summed clients are assumed dishonest, so the sum carries at least
(k - floor((1 - h) * n)) * (sigma*C)^2 / n of honest noise variance, and the
round is accounted as a Gaussian mechanism with multiplier
sigma * sqrt((k - floor((1 - h) * n)) / n) (in central mode simply sigma).

No amplification by sampling is claimed: the cohort is drawn from a public
seed (services/executor/federation/rounds.py), so every round is accounted as
a full Gaussian mechanism and the reported epsilon is an upper bound.

Noise comes from the operating system's CSPRNG (os.urandom) through
Box-Muller: noise is a secret, and a seeded generator would let anyone who
knows the seed subtract it. Known limitation: floating-point Gaussian samples
are not exactly Gaussian (Mironov 2012); the secure-aggregation path's
32-bit rounding (< 1e-8 per coordinate) is not accounted for either.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .weights import Weights, flatten, unflatten

MODES = ("off", "central", "distributed")
RandomBytes = Callable[[int], bytes]
# Noise is drawn within this many standard deviations of the quantization range's edge
# only with probability ~1e-15 per coordinate; see secagg_range.
RANGE_SIGMAS = 8.0


@dataclass(frozen=True)
class DpConfig:
    mode: str                       # "central" | "distributed"
    clip: float                     # C: L2 bound on each client's update delta
    noise_multiplier: float         # sigma: the whole sum's noise std is sigma * C
    delta: float
    honest_fraction: float = 1.0    # distributed mode: share of the cohort trusted to add its noise

    def __post_init__(self) -> None:
        if self.mode not in MODES[1:]:
            raise ValueError(f"dp mode must be one of {MODES[1:]}, got {self.mode!r}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"dp_clip must be a positive finite number, got {self.clip}")
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"the noise multiplier must be positive and finite, got {self.noise_multiplier}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"dp_delta must be in (0, 1), got {self.delta}")
        if not 0.0 < self.honest_fraction <= 1.0:
            raise ValueError(f"dp_honest_fraction must be in (0, 1], got {self.honest_fraction}")

    @property
    def distributed(self) -> bool:
        return self.mode == "distributed"


def honest_shares(cohort: int, summed: int, honest_fraction: float) -> int:
    """Clients whose noise share is surely in the sum: the summed ones less the possibly dishonest."""
    dishonest = math.floor((1.0 - honest_fraction) * cohort + 1e-9)
    return max(0, min(summed, cohort) - dishonest)


def effective_noise_multiplier(cfg: DpConfig, cohort: int, summed: int) -> float:
    """The multiplier a round is accounted with (module docstring); 0.0 means no guarantee."""
    if not cfg.distributed:
        return cfg.noise_multiplier
    return cfg.noise_multiplier * math.sqrt(honest_shares(cohort, summed, cfg.honest_fraction) / cohort)


def multiplier_for(effective: float, cfg_mode: str, cohort: int, honest_fraction: float) -> float:
    """The sigma to configure so that a full round (everyone summed) is accounted with `effective`."""
    if cfg_mode != "distributed":
        return effective
    honest = honest_shares(cohort, cohort, honest_fraction)
    if honest == 0:
        raise ValueError(f"dp_honest_fraction={honest_fraction} leaves no honest client in a cohort of "
                         f"{cohort}: distributed noise gives no guarantee")
    return effective * math.sqrt(cohort / honest)


def client_noise_std(cfg: DpConfig, cohort: int) -> float:
    """Each client's share in distributed mode: n shares of variance (sigma*C)^2/n sum to (sigma*C)^2."""
    return cfg.noise_multiplier * cfg.clip / math.sqrt(cohort)


def gaussian(size: int, std: float, random_bytes: RandomBytes = os.urandom) -> np.ndarray:
    """`size` draws of N(0, std^2) from a CSPRNG, by Box-Muller on 53-bit uniforms."""
    if size < 0 or not (std >= 0 and math.isfinite(std)):
        raise ValueError(f"gaussian needs size >= 0 and a finite std >= 0, got {size}, {std}")
    pairs = (size + 1) // 2
    raw = np.frombuffer(random_bytes(16 * pairs), dtype="<u8").reshape(2, pairs)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53   # (0, 1]: log is finite
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53           # [0, 1)
    radius, angle = np.sqrt(-2.0 * np.log(u1)), 2.0 * math.pi * u2
    return std * np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]


def clip_l2(vector: np.ndarray, bound: float) -> tuple[np.ndarray, bool]:
    """vector scaled down to L2 norm <= bound, and whether it had to be."""
    norm = float(np.linalg.norm(vector))
    if norm <= bound:
        return vector, False
    return vector * (bound / norm), True


def _delta(local_w: Mapping[str, np.ndarray], global_w: Mapping[str, np.ndarray]) -> np.ndarray:
    if set(local_w) != set(global_w):
        raise ValueError(f"update weights {sorted(local_w)} do not match the global model {sorted(global_w)}")
    keys = list(global_w)
    delta = flatten(local_w, keys) - flatten(global_w, keys)
    if not np.all(np.isfinite(delta)):
        raise ValueError("an update is not finite: it cannot be clipped")
    return delta


def central_average(global_w: Mapping[str, np.ndarray], client_weights: Sequence[Mapping[str, np.ndarray]],
                    cfg: DpConfig, random_bytes: RandomBytes = os.urandom) -> Weights:
    """Central DP-FedAvg: g + (sum of clipped deltas + N(0, (sigma*C)^2)) / k, as float64."""
    if not client_weights:
        raise ValueError("no client updates to average")
    total = np.zeros(sum(int(np.size(v)) for v in global_w.values()), dtype=np.float64)
    for local_w in client_weights:
        total += clip_l2(_delta(local_w, global_w), cfg.clip)[0]
    total += gaussian(total.size, cfg.noise_multiplier * cfg.clip, random_bytes)
    return unflatten(flatten(global_w, list(global_w)) + total / len(client_weights), global_w)


def noised_average(average: Mapping[str, np.ndarray], global_w: Mapping[str, np.ndarray], summed: int,
                   cfg: DpConfig, random_bytes: RandomBytes = os.urandom) -> Weights:
    """Central DP on a securely aggregated average g + S/k of clipped deltas: g + (S + noise)/k."""
    keys = list(global_w)
    a = flatten(average, keys)
    return unflatten(a + gaussian(a.size, cfg.noise_multiplier * cfg.clip, random_bytes) / summed, global_w)


def privatize_update(local_w: Mapping[str, np.ndarray], global_w: Mapping[str, np.ndarray], cfg: DpConfig,
                     cohort: int, random_bytes: RandomBytes = os.urandom) -> Weights:
    """A client's input to secure aggregation: g + clip(delta), plus its noise share when distributed."""
    delta = clip_l2(_delta(local_w, global_w), cfg.clip)[0]
    if cfg.distributed:
        delta = delta + gaussian(delta.size, client_noise_std(cfg, cohort), random_bytes)
    return unflatten(flatten(global_w, list(global_w)) + delta, global_w)


def secagg_range(secagg_clip: float, cfg: DpConfig | None, cohort: int) -> float:
    """The per-coordinate quantization range of secure aggregation: wide enough that a clipped
    delta (each coordinate <= C) plus its noise share is (almost) never cut by the range."""
    if cfg is None:
        return secagg_clip
    share = client_noise_std(cfg, cohort) if cfg.distributed else 0.0
    return max(secagg_clip, cfg.clip + RANGE_SIGMAS * share)


def config_from_params(params: Mapping[str, Any], cohort: int,
                       calibrate: Callable[[float, float, int], float]) -> DpConfig | None:
    """The round's DpConfig from validated flow params; None when dp is off.

    With dp_target_epsilon, `calibrate(target_epsilon, delta, rounds)` returns the effective
    multiplier the accountant needs for `rounds` full rounds; in distributed mode sigma is
    then raised so that the honest shares of a full cohort still carry that much noise.
    """
    mode = str(params.get("dp") or "off")
    if mode == "off":
        return None
    delta, honest = float(params.get("dp_delta", 1e-5)), float(params.get("dp_honest_fraction", 1.0))
    if params.get("dp_target_epsilon") is not None:
        effective = calibrate(float(params["dp_target_epsilon"]), delta, int(params["rounds"]))
        sigma = multiplier_for(effective, mode, cohort, honest)
    elif params.get("dp_noise_multiplier") is not None:
        sigma = float(params["dp_noise_multiplier"])
    else:
        raise ValueError(f"dp={mode!r} needs dp_noise_multiplier or dp_target_epsilon")
    return DpConfig(mode, float(params.get("dp_clip", 1.0)), sigma, delta, honest)
