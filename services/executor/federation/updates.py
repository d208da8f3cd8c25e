"""Bounds on what one client may contribute: out-of-range input is rejected, never absorbed.

A signature proves who sent an update, not that it is honest. In a plain round
the aggregator sees each update and refuses one that

- is not finite, or does not have the global model's names, shapes and a float dtype,
- claims no examples, or more than its owner declared when it joined
  (FedAvg weights by example count: a client must not vote for 10^9 rows),
- moves the model further than the flow's `update_clip_norm` (L2 of the delta).

Under secure aggregation the aggregator sees only the sum, so honest clients
clip their own delta to the same norm before masking, and the aggregator
refuses a decoded sum that no set of in-range inputs can produce
(check_secure_sum).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from shared.errors import FerryError, MalformedMessage
from shared.events import RoundMessage

from .transcript import clip_norm

TOLERANCE = 1e-6


class UpdateRejected(FerryError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def delta_norm(local_w: Mapping[str, np.ndarray], global_w: Mapping[str, np.ndarray]) -> float:
    """L2 norm of local - global, in float64: one float64 buffer per tensor, squared in place
    (the same sums as np.sum((l - g) ** 2), without a second model-sized temporary)."""
    total = 0.0
    for k, g in global_w.items():
        d = np.subtract(np.asarray(local_w[k]), np.asarray(g), dtype=np.float64)
        total += float(np.sum(np.square(d, out=d)))
    return math.sqrt(total)


def clip_update(local_w: Mapping[str, np.ndarray], global_w: Mapping[str, np.ndarray],
                bound: float) -> dict[str, np.ndarray]:
    """The client's side: scale its delta into the flow's L2 ball (bound 0: unchanged)."""
    if bound <= 0:
        return dict(local_w)
    norm = delta_norm(local_w, global_w)
    if norm <= bound:
        return dict(local_w)
    factor = bound / norm
    return {k: (np.asarray(g, np.float64) + factor * (np.asarray(local_w[k], np.float64) - g)).astype(
        np.asarray(local_w[k]).dtype) for k, g in global_w.items()}


def check_update(message: RoundMessage, global_w: Mapping[str, np.ndarray], joined: Mapping[str, float],
                 params: Mapping[str, Any], weights: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The update's weights (`weights` when the caller already decoded them, e.g. from a compressed
    delta), or UpdateRejected naming what is out of range."""
    from services.executor.transport import from_tensors

    who = f"{message.sender} in round {message.round}"
    if weights is None:
        try:
            weights = from_tensors(message.tensors)
        except MalformedMessage as exc:
            raise UpdateRejected("malformed", f"{who}: {exc}") from exc
    weights = dict(weights)
    if set(weights) != set(global_w) or any(np.shape(weights[k]) != np.shape(g) for k, g in global_w.items()):
        raise UpdateRejected("wrong_shape", f"{who}: tensors {sorted(weights)} do not match the global model")
    if any(np.asarray(w).dtype.kind != "f" for w in weights.values()):
        raise UpdateRejected("wrong_dtype", f"{who}: tensors of dtypes {sorted({str(np.asarray(w).dtype) for w in weights.values()})}; "
                                            f"a model's weights are floats")
    if not all(np.all(np.isfinite(w)) for w in weights.values()):
        raise UpdateRejected("not_finite", f"{who}: the update holds NaN or infinite values")
    declared = int(joined.get("num_examples", 0))
    if not 0 < message.num_examples <= max(declared, 0):
        raise UpdateRejected("weight_out_of_range", f"{who}: num_examples={message.num_examples}, but it "
                                                    f"declared {declared} training rows when it joined")
    bound = clip_norm(params)
    if bound > 0:
        norm = delta_norm(weights, global_w)
        if norm > bound * (1 + TOLERANCE):
            raise UpdateRejected("norm_out_of_range", f"{who}: the update moves the model by {norm:.4g} (L2), "
                                                      f"the flow's update_clip_norm is {bound}")
    return weights


def check_secure_sum(average: Mapping[str, np.ndarray], global_w: Mapping[str, np.ndarray], total_weight: float,
                     clients: int, params: Mapping[str, Any], step_error: float = 0.0) -> None:
    """A decoded secure sum is the weighted mean of clients' in-range inputs, or it is refused.

    Each honest weight is in (0, 1], so the total is in (0, clients]; each delta is within the
    L2 bound, so their weighted mean is too (the ball is convex). step_error: quantization slack.
    """
    if not (0 < total_weight <= clients * (1 + TOLERANCE) + step_error) or not math.isfinite(total_weight):
        raise UpdateRejected("weight_out_of_range", f"the decoded total weight {total_weight:.6g} is outside "
                                                    f"(0, {clients}]: some client sent an out-of-range weight")
    if not all(np.all(np.isfinite(a)) for a in average.values()):
        raise UpdateRejected("not_finite", "the decoded average is not finite")
    bound = clip_norm(params)
    if bound > 0:
        norm = delta_norm(average, global_w)
        if norm > bound * (1 + 1e-3) + step_error:
            raise UpdateRejected("norm_out_of_range", f"the decoded mean update moves the model by {norm:.4g} (L2), "
                                                      f"above the flow's update_clip_norm {bound}: some client "
                                                      f"sent an out-of-range input")
