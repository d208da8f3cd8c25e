"""Update compression: what a client sends instead of its full-precision model.

Every method encodes the client's *delta* (local model minus the global model
it started from), which is small and centred, and the aggregator adds the
decoded delta back to the global model before averaging. Pure functions over
arrays; the randomness of stochastic rounding comes from the caller's seeded
generator (not secret: it only has to be unbiased).

  fp16   float16 deltas (2 bytes a value)
  bf16   bfloat16 deltas, round-to-nearest-even, carried as uint16 (2 bytes)
  int8   QSGD-style stochastic quantisation to 127 levels per sign and tensor,
         scale = max |x|: E[decoded] = x exactly (unbiased), 1 byte a value
  int4   the same with 7 levels, two values a byte
  topk   the `fraction` largest |delta + residual| values with their int32
         indices; what is left out is kept as the residual and added to the
         next round's delta (error feedback), so nothing is lost, only delayed

Not composable with secure aggregation here: its masks cancel only in the
32-bit integer ring it quantises into (services/executor/secagg/encoding.py),
so a smaller encoding would need a smaller ring; ferry.fedavg refuses the
combination with a ConfigurationError.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

METHODS = ("none", "fp16", "bf16", "int8", "int4", "topk")
_LEVELS = {"int8": 127, "int4": 7}


def _bf16_encode(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))  # nearest, ties to even
    return (rounded >> np.uint32(16)).astype(np.uint16)


def _bf16_decode(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _stochastic_levels(x: np.ndarray, levels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.float32]:
    scale = np.float32(np.max(np.abs(x))) if x.size else np.float32(0)
    if scale == 0:
        return np.zeros(x.shape, np.int8), np.float32(0)
    scaled = np.abs(x).astype(np.float64) / float(scale) * levels        # in [0, levels]
    low = np.floor(scaled)
    q = low + (rng.random(x.shape) < (scaled - low))                     # E[q] = scaled: unbiased
    return (np.sign(x) * q).astype(np.int8), scale


def _pack_int4(q: np.ndarray) -> np.ndarray:
    nibbles = (q.ravel().astype(np.int16) + 8).astype(np.uint8)          # -7..7 -> 1..15
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(8))
    return (nibbles[0::2] | (nibbles[1::2] << np.uint8(4))).astype(np.uint8)


def _unpack_int4(packed: np.ndarray, size: int) -> np.ndarray:
    nibbles = np.empty(packed.size * 2, np.int16)
    nibbles[0::2], nibbles[1::2] = packed & 0x0F, packed >> 4
    return (nibbles[:size] - 8).astype(np.int8)


def compress(delta: Mapping[str, np.ndarray], method: str, *, rng: np.random.Generator,
             residual: Mapping[str, np.ndarray] | None = None,
             fraction: float = 0.01) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(arrays to send, residual to keep for the next round; empty unless topk)."""
    if method not in METHODS:
        raise ValueError(f"compression must be one of {METHODS}, not {method!r}")
    out: dict[str, np.ndarray] = {}
    kept: dict[str, np.ndarray] = {}
    for name, x in delta.items():
        x = np.asarray(x, dtype=np.float32)
        if method == "none":
            out[name] = x
        elif method == "fp16":
            out[name] = x.astype(np.float16)
        elif method == "bf16":
            out[name] = _bf16_encode(x)
        elif method in _LEVELS:
            q, scale = _stochastic_levels(x, _LEVELS[method], rng)
            out[f"{name}/q"] = _pack_int4(q) if method == "int4" else q.ravel()
            out[f"{name}/scale"] = np.array([scale], np.float32)
        else:  # topk with error feedback
            acc = x + (residual[name] if residual and name in residual else 0)
            flat = acc.ravel()
            k = max(1, int(round(fraction * flat.size)))
            idx = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:].astype(np.int32)
            out[f"{name}/idx"] = np.sort(idx)
            out[f"{name}/val"] = flat[out[f"{name}/idx"]]
            left = flat.copy()
            left[out[f"{name}/idx"]] = 0
            kept[name] = left.reshape(x.shape)
    return out, kept


def decompress(arrays: Mapping[str, np.ndarray], method: str,
               shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The delta back, as float32 arrays of the global model's shapes."""
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=np.int64))
        if method == "none":
            out[name] = np.asarray(arrays[name], np.float32)
        elif method == "fp16":
            out[name] = np.asarray(arrays[name]).astype(np.float32)
        elif method == "bf16":
            out[name] = _bf16_decode(np.asarray(arrays[name], np.uint16))
        elif method in _LEVELS:
            q = arrays[f"{name}/q"]
            q = _unpack_int4(q, size) if method == "int4" else np.asarray(q, np.int8)
            scale = float(arrays[f"{name}/scale"][0])
            out[name] = (q.astype(np.float32) * np.float32(scale / _LEVELS[method])).reshape(shape)
        elif method == "topk":
            flat = np.zeros(size, np.float32)
            idx = np.asarray(arrays[f"{name}/idx"], np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"topk indices of {name} fall outside its {size} values")
            flat[idx] = arrays[f"{name}/val"]
            out[name] = flat.reshape(shape)
        else:
            raise ValueError(f"compression must be one of {METHODS}, not {method!r}")
        if out[name].shape != tuple(shape):
            raise ValueError(f"{name}: decoded shape {out[name].shape}, expected {tuple(shape)}")
    return out
