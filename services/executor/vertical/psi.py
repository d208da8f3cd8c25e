"""ECDH private set intersection: X25519 blinding of ids hashed to curve25519's prime-order group. Pure.

The group operations are libsodium's, from the copy bundled in PyNaCl's wheel
(no system library; PyNaCl exposes libsodium's edwards25519 and X25519
functions but not its ristretto255 ones):

- hash to the group: SHA-512 of a context-bound encoding of the id, each half
  mapped with `crypto_core_ed25519_from_uniform` (Elligator 2, cofactor cleared)
  and the two points added: the random-oracle construction of RFC 9380, landing
  in the prime-order subgroup with no known discrete log between two ids'
  points. The point is then written as its curve25519 u-coordinate (the
  birational map of RFC 7748 section 4.1, one field inversion with gmpy2;
  libsodium's `crypto_sign_ed25519_pk_to_curve25519` computes the same, slower,
  and the tests check they agree).
- blinding: X25519 (`crypto_scalarmult`) with a 32-byte secret. The clamped
  scalar is a multiple of the cofactor, so a small-order component in a peer's
  point is annihilated and a point on the twist lands in the twist's large
  prime-order subgroup (X25519 is twist-secure); libsodium refuses a point whose
  result is the neutral element (small order). Clamped scalars commute:
  X25519(a, X25519(b, u)) = X25519(b, X25519(a, u)).

X25519 rather than edwards25519 arithmetic for the blinding because libsodium's
`crypto_scalarmult_ed25519*` re-checks subgroup membership with a second full
multiplication on every call: measured 2.3x slower per point on this machine.

Each party blinds its hashed ids and sends them sorted (sorting blinded points
is a permutation that says nothing about the original order); the other side
blinds them again with its own scalar. Ids both hold meet as equal
double-blinded values and nothing else can be recognised (DDH in the
prime-order group). The flow, the step and the step's parties are bound into
the hash, so points from one PSI cannot be matched against another's.

The shared order both parties store is a keyed hash of the id itself, so each
side computes it alone once it knows which of its rows are shared, and a
retried or resumed step reproduces it exactly.

Points travel as one bytes blob (n x 32). Work runs in batches on a thread
pool: PyNaCl's cffi calls release the GIL, so the batches of one party use all
of the machine's cores.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Sequence

import gmpy2
import numpy as np
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from shared.errors import ConfigurationError, DataError

POINT_BYTES = 32  # crypto_scalarmult_BYTES: a curve25519 u-coordinate
_DOMAIN = b"ferry.psi.v2/x25519"
_P = gmpy2.mpz(2**255 - 19)
_Y_MASK = (1 << 255) - 1  # an edwards25519 encoding is y with the sign of x in the top bit
BATCH = 2048  # ids or points per worker task: long enough to amortise the pool, short enough to balance


def context_of(flow_id: str, task_id: str, parties: Sequence[str] = ()) -> bytes:
    """Domain-separation context: the same for every party of one PSI step, different across steps.

    The step's parties (all of them, sorted) are bound in, not the one computing: both sides must
    hash a shared id to the same point."""
    parts = [_DOMAIN, flow_id.encode(), task_id.encode(), *(p.encode() for p in sorted(set(parties)))]
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


def to_montgomery(edwards: bytes) -> bytes:
    """The curve25519 u-coordinate (1 + y) / (1 - y) of an edwards25519 point (not the neutral element)."""
    y = gmpy2.mpz(int.from_bytes(edwards, "little") & _Y_MASK)
    return int((1 + y) * gmpy2.invert(1 - y, _P) % _P).to_bytes(POINT_BYTES, "little")


def hash_to_group(prefix: bytes, ids: Sequence[bytes]) -> list[bytes]:
    base = hashlib.sha512(prefix + b"point")
    from_uniform, add = sodium.crypto_core_ed25519_from_uniform, sodium.crypto_core_ed25519_add
    out = []
    for i in ids:
        h = base.copy()
        h.update(len(i).to_bytes(4, "big"))
        h.update(i)
        d = h.digest()
        out.append(to_montgomery(add(from_uniform(d[:32]), from_uniform(d[32:]))))
    return out


def _hash_and_blind_batch(prefix: bytes, scalar: bytes, ids: Sequence[bytes]) -> bytes:
    mult = sodium.crypto_scalarmult
    return b"".join([mult(scalar, u) for u in hash_to_group(prefix, ids)])


def _blind_batch(scalar: bytes, blob: bytes) -> bytes:
    mult = sodium.crypto_scalarmult
    try:
        return b"".join([mult(scalar, blob[i:i + POINT_BYTES]) for i in range(0, len(blob), POINT_BYTES)])
    except CryptoError as exc:  # libsodium refuses a small-order point (the result would be the neutral element)
        raise _SmallOrder() from exc


class _SmallOrder(Exception):
    pass


def workers_for(requested: int | None = None) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(requested or cores), cores))


def _batched(fn: Callable, pieces: list, pool: Executor | None) -> bytes:
    if pool is None or len(pieces) <= 1:
        return b"".join(fn(p) for p in pieces)
    return b"".join(pool.map(fn, pieces))


@dataclass(frozen=True)
class Blinder:
    """One party's secret scalar for one PSI run. Never leaves the process, never stored."""

    scalar: bytes

    @classmethod
    def fresh(cls) -> "Blinder":
        return cls(secrets.token_bytes(POINT_BYTES))  # X25519 clamps it: 251 random bits, a multiple of 8

    def hash_and_blind(self, context: bytes, ids: Sequence[bytes], pool: Executor | None = None) -> bytes:
        """a·H(id) for every id, as one blob in the ids' order."""
        pieces = [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)]
        return _batched(lambda piece: _hash_and_blind_batch(context, self.scalar, piece), pieces, pool)

    def blind(self, blob: bytes, sender: str, pool: Executor | None = None) -> bytes:
        """a·P for every point P of a peer's blob; DataError naming the sender for a small-order point."""
        step = BATCH * POINT_BYTES
        pieces = [blob[i:i + step] for i in range(0, len(blob), step)]
        try:
            return _batched(lambda piece: _blind_batch(self.scalar, piece), pieces, pool)
        except _SmallOrder:
            raise DataError(f"{sender} sent a PSI point of small order, which no hashed id can be") from None


def count(blob: bytes) -> int:
    return len(blob) // POINT_BYTES


def to_array(blob: bytes) -> np.ndarray:
    """Points as a (n, 32) uint8 array, the wire form."""
    return np.frombuffer(blob, np.uint8).reshape(count(blob), POINT_BYTES)


def from_array(array: np.ndarray, sender: str) -> bytes:
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != POINT_BYTES:
        raise DataError(f"{sender} sent PSI points of dtype {a.dtype} shape {a.shape}; expected (n, {POINT_BYTES}) uint8")
    return a.tobytes()


def _keys(blob: bytes) -> np.ndarray:
    # Fixed-width byte strings compare as memcmp over all 32 bytes (equal lengths: trailing NULs are no issue).
    return np.frombuffer(blob, f"S{POINT_BYTES}")


def sorted_order(blob: bytes) -> np.ndarray:
    """Positions that sort the points by their bytes: the order blinded points travel in."""
    return np.argsort(_keys(blob), kind="stable")


def take(blob: bytes, positions: np.ndarray) -> bytes:
    return to_array(blob)[np.asarray(positions, np.int64)].tobytes()


def batches(blob: bytes, points_per_batch: int) -> list[bytes]:
    """The blob cut into wire messages of at most `points_per_batch` points (none for an empty set)."""
    step = points_per_batch * POINT_BYTES
    return [blob[i:i + step] for i in range(0, len(blob), step)]


def batch_count(points: int, points_per_batch: int) -> int:
    return -(-points // points_per_batch)


def matches(mine_double: bytes, theirs_double: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(positions in mine, positions in theirs) of equal double-blinded points.

    Ids are unique per party and distinct ids collide with negligible probability, so both
    sides' points are unique and a sorted merge finds the pairs."""
    _, mine, theirs = np.intersect1d(_keys(mine_double), _keys(theirs_double), assume_unique=True,
                                     return_indices=True)
    return mine.astype(np.int64), theirs.astype(np.int64)


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
