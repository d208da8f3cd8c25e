"""ECDH private set intersection over ristretto255 (libsodium via pysodium). Pure.

Each party hashes its ids to the group (SHA-512 of a context-bound encoding,
then libsodium's `crypto_core_ristretto255_from_hash`), blinds them with a
secret scalar and sends them sorted (sorting blinded points is a permutation
that says nothing about the original order). The other side blinds them again
with its own scalar; since a·(b·H(x)) = b·(a·H(x)), ids both hold meet as
equal double-blinded points and nothing else can be recognised (DDH in a
prime-order group). The ids' context (flow and step) is bound into the hash,
so points from one flow cannot be matched against another's.

The shared order both parties store is a keyed hash of the id itself, so each
side computes it alone once it knows which of its rows are shared, and a
retried or resumed step reproduces it exactly.

libsodium's calls go through ctypes, which releases the GIL: blinding runs on
a thread pool the size of the machine.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from shared.errors import ConfigurationError, DataError

try:
    import pysodium
except (ImportError, OSError, ValueError) as exc:  # pysodium raises ValueError when libsodium is absent
    pysodium, _MISSING = None, exc

POINT_BYTES = 32  # crypto_core_ristretto255_BYTES
_DOMAIN = b"ferry.psi.v1"
CHUNK = 2048


def context_of(flow_id: str, task_id: str) -> bytes:
    """Domain-separation context: the same for every party of one PSI step, different across steps."""
    parts = [_DOMAIN, flow_id.encode(), task_id.encode()]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def id_bytes(column: np.ndarray) -> list[bytes]:
    """Canonical bytes of each id: decimal text for integers, the bytes less trailing NULs for
    fixed-width byte strings (a uint8 vector column). Dtype and width do not change an id."""
    a = np.asarray(column)
    if a.ndim == 1 and a.dtype.kind in "iu":
        return [str(v).encode() for v in a.tolist()]
    if a.ndim == 2 and a.dtype == np.uint8:
        return [bytes(row).rstrip(b"\0") for row in a]
    raise ConfigurationError(f"id column must hold integers or fixed-width byte strings (uint8 vectors), "
                             f"got {a.dtype} with row shape {a.shape[1:]}")


def check_unique(ids: Sequence[bytes], where: str) -> None:
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: the id column has duplicate ids; PSI needs one row per id")


def _hash_chunk(prefix: bytes, ids: Sequence[bytes]) -> list[bytes]:
    base = hashlib.sha512(prefix + b"point")
    out = []
    for i in ids:
        h = base.copy()
        h.update(len(i).to_bytes(4, "big"))
        h.update(i)
        out.append(pysodium.crypto_core_ristretto255_from_hash(h.digest()))
    return out


def _blind_chunk(scalar: bytes, points: Sequence[bytes]) -> list[bytes]:
    mult = pysodium.crypto_scalarmult_ristretto255
    return [mult(scalar, p) for p in points]


def _hash_and_blind_chunk(prefix: bytes, scalar: bytes, ids: Sequence[bytes]) -> list[bytes]:
    return _blind_chunk(scalar, _hash_chunk(prefix, ids))


def workers_for(requested: int | None = None) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(requested or cores), cores))


def _chunked(fn, items: Sequence, workers: int, *args) -> list[bytes]:
    pieces = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    if workers == 1 or len(pieces) <= 1:
        return [p for piece in pieces for p in fn(*args, piece)]
    with ThreadPoolExecutor(workers, thread_name_prefix="psi") as pool:
        return [p for part in pool.map(lambda piece: fn(*args, piece), pieces) for p in part]


@dataclass(frozen=True)
class Blinder:
    """One party's secret scalar for one PSI run. Never leaves the process, never stored."""

    scalar: bytes

    @classmethod
    def fresh(cls) -> "Blinder":
        if pysodium is None:
            raise ConfigurationError(f"PSI needs libsodium >= 1.0.18 (Debian: libsodium23) and pysodium on this "
                                     f"node: {_MISSING}")
        return cls(pysodium.crypto_core_ristretto255_scalar_random())

    def hash_and_blind(self, context: bytes, ids: Sequence[bytes], workers: int = 1) -> list[bytes]:
        return _chunked(_hash_and_blind_chunk, ids, workers, context, self.scalar)

    def blind(self, points: Sequence[bytes], workers: int = 1) -> list[bytes]:
        return _chunked(_blind_chunk, points, workers, self.scalar)


def to_array(points: Sequence[bytes]) -> np.ndarray:
    """Points as a (n, 32) uint8 array, the wire form."""
    return np.frombuffer(b"".join(points), np.uint8).reshape(len(points), POINT_BYTES)


def from_array(array: np.ndarray, sender: str) -> list[bytes]:
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != POINT_BYTES:
        raise DataError(f"{sender} sent PSI points of dtype {a.dtype} shape {a.shape}; expected (n, {POINT_BYTES}) uint8")
    raw = a.tobytes()
    return [raw[i:i + POINT_BYTES] for i in range(0, len(raw), POINT_BYTES)]


def sorted_order(points: Sequence[bytes]) -> np.ndarray:
    """Positions that sort the points by their bytes: the order blinded points travel in."""
    return np.argsort(np.array(points, dtype=f"S{POINT_BYTES}"), kind="stable")


def matches(mine_double: Sequence[bytes], theirs_double: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(positions in mine, positions in theirs) of equal double-blinded points."""
    index = {p: i for i, p in enumerate(theirs_double)}
    pairs = [(i, index[p]) for i, p in enumerate(mine_double) if p in index]
    if not pairs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a, b = zip(*pairs)
    return np.asarray(a, np.int64), np.asarray(b, np.int64)


def shared_order(context: bytes, ids: Sequence[bytes]) -> np.ndarray:
    """Positions of `ids` in the order every party of the step stores shared rows in."""
    base = hashlib.sha256(context + b"order")
    keys = []
    for i in ids:
        h = base.copy()
        h.update(len(i).to_bytes(4, "big"))
        h.update(i)
        keys.append(h.digest())
    return np.argsort(np.array(keys, dtype="S32"), kind="stable")
