"""Named float arrays: the one currency between models, strategies and the wire.

A model's weights are `Weights = dict[str, np.ndarray]`, keyed by the torch
state_dict names. Strategies work on these dicts (or on one flat vector built
in a fixed key order), never on torch objects, so the server step is plain
numpy that can be checkpointed with np.savez(allow_pickle=False).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Weights = dict[str, np.ndarray]
# (client weights, number of training examples behind them)
Update = tuple[Mapping[str, np.ndarray], int]


class WeightsMismatch(ValueError):
    """Two weight dicts that should describe the same model do not."""


def check_compatible(reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray],
                     what: str = "weights") -> None:
    """Same names and shapes as `reference`, and only finite floats.

    Non-finite values are refused here rather than averaged: one NaN from one
    client would silently poison every coordinate it touches in the global model.
    """
    missing = sorted(set(reference) - set(other))
    unexpected = sorted(set(other) - set(reference))
    if missing or unexpected:
        raise WeightsMismatch(f"{what}: missing {missing}, unexpected {unexpected}")
    for name, ref in reference.items():
        arr = np.asarray(other[name])
        if arr.shape != np.shape(ref):
            raise WeightsMismatch(f"{what}: {name!r} has shape {arr.shape}, expected {np.shape(ref)}")
        if arr.dtype.kind != "f":
            raise WeightsMismatch(f"{what}: {name!r} has dtype {arr.dtype}, expected a float dtype")
        if not np.all(np.isfinite(arr)):
            raise WeightsMismatch(f"{what}: {name!r} contains NaN or infinity")


def check_updates(global_weights: Mapping[str, np.ndarray], updates: Sequence[Update]) -> None:
    if not updates:
        raise ValueError("no client updates to aggregate")
    for i, (weights, n) in enumerate(updates):
        check_compatible(global_weights, weights, f"update {i}")
        if int(n) != n or n < 0:
            raise ValueError(f"update {i}: num_examples must be a non-negative integer, got {n!r}")


def to_float64(weights: Mapping[str, np.ndarray]) -> Weights:
    # The server math runs in float64 so that averaging many float32 clients
    # does not add its own rounding on top of theirs.
    return {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}


def cast_like(weights: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray]) -> Weights:
    """Copies of `weights` in the dtypes of `like` (the global model keeps its dtype)."""
    return {k: np.array(weights[k], dtype=np.asarray(like[k]).dtype, copy=True) for k in like}


def flatten(weights: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """One float64 vector, concatenated in `keys` order (robust rules see coordinates)."""
    if not keys:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(weights[k], dtype=np.float64).ravel() for k in keys])


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> Weights:
    """Inverse of flatten(…, list(like)): float64 arrays shaped like `like`."""
    out: Weights = {}
    offset = 0
    for k, ref in like.items():
        size = int(np.prod(np.shape(ref), dtype=np.int64))
        out[k] = np.array(vector[offset:offset + size], dtype=np.float64).reshape(np.shape(ref))
        offset += size
    if offset != vector.size:
        raise WeightsMismatch(f"vector has {vector.size} values, the weights need {offset}")
    return out
