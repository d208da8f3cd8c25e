"""What a client feeds into secure aggregation, and how the server reads the sum.

Weighting (FedAvg weights clients by num_examples): each client folds its
weight in before quantizing, so the server's one decoded sum already is the
weighted sum and no single update is ever needed. Client u sends, flattened
in the global model's key order,

    [ w_u * clip(x_u - g) ... ,  w_u * C,  w_u * min(loss_u, C),  clipped_u * C ]

with g the round's global model, C the clip, w_u = min(1, n_u / scale) and
`scale` announced by the aggregator (the largest num_examples of the sampled
clients, which they already report in JOIN): w_u <= 1 keeps every coordinate
inside [-C, C]. The server decodes S = sum w_u*delta_u and W = sum w_u (the
extra coordinate, so dropouts need no bookkeeping), and the weighted average is
g + S / W: the plain FedAvg formula, up to quantization error. The loss
and the fraction of clipped coordinates come out as sums too: the aggregator
reports them without learning any client's value.

Deltas rather than weights: deltas are small and centred on 0, so a small
clip covers them and the grid is fine. Default C = 4: the demo's logistic
regression moves a weight by at most 0.096 in round 1 and ~0.01 by round 20,
so nothing is clipped there while the grid stays fine (below). Tune with
param secagg_clip; the aggregator reports the clipped share as secagg_clipped.

Error bound (k = clients summed, s = QuantConfig(C, max_clients=sampled).step):
each coordinate of S and of W*C is off by at most k*s/2, so the average delta is off by
    |err| <= (k*s/2) * (1 + |avg|/C) / (W - k*s/(2C))
plus float64 rounding, plus any clipping. With 3 clients and C = 4: s = 5.6e-9,
|err| < 1e-8 for weights near 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from services.executor.ml.quantize import QuantConfig, dequantize_sum, quantize

DEFAULT_CLIP = 4.0
EXTRA = 3   # weight, weighted loss, clipped fraction


def quant_config(clip: float, sampled: int) -> QuantConfig:
    """max_clients = the round's sample: no sum of masked inputs can wrap mod 2^32."""
    return QuantConfig(clip=float(clip), max_clients=max(1, int(sampled)))


def vector_length(global_w: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.size(v) for v in global_w.values())) + EXTRA


def client_weight(num_examples: int, scale: float) -> float:
    return float(min(1.0, num_examples / scale)) if scale > 0 else 1.0


def encode_update(local_w: Mapping[str, np.ndarray], global_w: Mapping[str, np.ndarray], weight: float,
                  loss: float, cfg: QuantConfig) -> np.ndarray:
    """uint32 codes of one client's weighted, clipped delta plus the extra coordinates."""
    if set(local_w) != set(global_w):
        raise ValueError(f"local weights {sorted(local_w)} do not match the global model {sorted(global_w)}")
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"weight must be in (0, 1], got {weight}")
    # One float64 vector, worked on in place: a 1M-parameter update is 8 MB per temporary.
    size = sum(int(np.size(g)) for g in global_w.values())
    values = np.empty(size + EXTRA, dtype=np.float64)
    delta, offset = values[:size], 0
    for k, g in global_w.items():
        n = int(np.size(g))
        np.subtract(np.asarray(local_w[k]).ravel(), np.asarray(g).ravel(), out=delta[offset:offset + n],
                    dtype=np.float64)
        offset += n
    if not np.isfinite(delta).all() or not np.isfinite(loss):
        raise ValueError("the local update is not finite: it cannot be securely aggregated")
    c = cfg.clip
    clipped = float(np.count_nonzero(np.abs(delta) > c) / delta.size) if delta.size else 0.0
    np.clip(delta, -c, c, out=delta)
    delta *= weight
    values[size:] = [weight * c, weight * min(max(loss, 0.0), c), clipped * c]
    return quantize(values, cfg, overwrite=True)


@dataclass(frozen=True)
class Decoded:
    average: dict[str, np.ndarray]   # the weighted average model, global + S / W
    total_weight: float              # W
    loss: float                      # weighted mean training loss (clipped at C)
    clipped: float                   # mean fraction of clipped coordinates
    clients: int


def decode_sum(total: np.ndarray, clients: int, global_w: Mapping[str, np.ndarray],
               cfg: QuantConfig) -> Decoded:
    values = dequantize_sum(np.asarray(total, np.uint32), clients, cfg)
    c = cfg.clip
    weight, loss_sum, clipped_sum = values[-3] / c, values[-2], max(0.0, values[-1] / c)
    if not weight > 0:
        raise ValueError(f"the decoded total weight is {weight}: the masked inputs were not well formed")
    mean_delta = values[:-EXTRA] / weight
    average, offset = {}, 0
    for name, g in global_w.items():
        size = int(np.size(g))
        average[name] = np.asarray(g, np.float64) + mean_delta[offset:offset + size].reshape(np.shape(g))
        offset += size
    return Decoded(average, float(weight), float(loss_sum / weight), float(clipped_sum / clients), clients)


def error_bound(cfg: QuantConfig, clients: int, total_weight: float, max_abs_average: float) -> float:
    """The documented bound on |decoded average delta - exact weighted average delta| per coordinate."""
    half = clients * cfg.step / 2.0
    return half * (1.0 + max_abs_average / cfg.clip) / (total_weight - half / cfg.clip) + 1e-12
