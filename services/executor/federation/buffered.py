"""Buffered asynchronous aggregation (FedBuff, Nguyen et al. 2022): pure decisions and math.

In synchronous FedAvg every round waits for its slowest sampled client. With
`aggregation: async` the aggregator instead keeps a version of the global
model and a buffer: every client trains on the latest version it was sent,
its update lands in the buffer as soon as it arrives, and once the buffer
holds `async_buffer_size` updates they are applied together and the version
moves on. A fast client is sent the new version at once and trains again;
a slow one finishes on its older version and its update counts less:

    staleness  tau_i = version now - version it trained on   (refused above max_staleness)
    weight     s(tau) = 1 / sqrt(1 + tau)                    (FedBuff's polynomial weighting)
    average    a = w + sum_i s(tau_i) n_i delta_i / sum_i n_i
    new model  the strategy's server_step towards a (fedavg: a itself; FedAvgM and FedOpt
               take their server_lr / momentum / adaptive step towards it)

A version counts as one "round" in the flow's `rounds`, progress and checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

Weights = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class BufferPolicy:
    size: int            # K: updates applied together
    max_staleness: int   # updates older than this many versions are refused

    def __post_init__(self) -> None:
        if self.size < 1 or self.max_staleness < 0:
            raise ValueError(f"async_buffer_size must be >= 1 and async_max_staleness >= 0, got {self}")


@dataclass(frozen=True)
class BufferedUpdate:
    sender: str
    base_version: int
    delta: Mapping[str, np.ndarray]  # the client's model minus the version it trained on
    num_examples: int


@dataclass(frozen=True)
class Buffer:
    version: int                                     # the global model's version (= rounds applied)
    updates: tuple[BufferedUpdate, ...] = field(default=())


def staleness_weight(staleness: int) -> float:
    return 1.0 / math.sqrt(1.0 + staleness)


def too_stale(version: int, base_version: int, policy: BufferPolicy) -> str | None:
    """Why an update trained on base_version cannot enter the buffer at `version`, or None."""
    if base_version > version:
        return f"trained on version {base_version}, which does not exist yet (now {version})"
    if version - base_version > policy.max_staleness:
        return (f"trained on version {base_version}, {version - base_version} versions old; "
                f"async_max_staleness is {policy.max_staleness}")
    return None


def add(buffer: Buffer, update: BufferedUpdate) -> Buffer:
    return Buffer(buffer.version, buffer.updates + (update,))


def is_full(buffer: Buffer, policy: BufferPolicy) -> bool:
    return len(buffer.updates) >= policy.size


def averaged_model(global_w: Weights, buffer: Buffer) -> dict[str, np.ndarray]:
    """global_w + the staleness-weighted average delta of the buffer: what server_step steps towards.

    Updates are summed in a fixed order (by sender, then base version), so the result does not
    depend on which of two simultaneous updates Kafka delivered first.
    """
    ordered = sorted(buffer.updates, key=lambda u: (u.sender, u.base_version))
    total = float(sum(u.num_examples for u in ordered))
    if not ordered or total <= 0:
        raise ValueError("an empty buffer has nothing to apply")
    out = {}
    for name, g in global_w.items():
        step = np.zeros(np.shape(g), np.float64)
        for u in ordered:
            step += staleness_weight(buffer.version - u.base_version) * u.num_examples * np.asarray(u.delta[name])
        out[name] = (np.asarray(g, np.float64) + step / total).astype(np.asarray(g).dtype, copy=False)
    return out


def applied(buffer: Buffer) -> Buffer:
    """The empty buffer of the next version."""
    return Buffer(buffer.version + 1)


def mean_staleness(buffer: Buffer) -> float:
    return float(np.mean([buffer.version - u.base_version for u in buffer.updates])) if buffer.updates else 0.0
