"""t-out-of-n Shamir secret sharing over GF(2^521 - 1).

Why this field: the secrets are 32-byte strings (a self-mask seed and an X25519
private key). They must embed in the field without reduction, so the prime
must exceed 2^256; the Mersenne prime 2^521 - 1 does with room to spare, and
is a well-known prime (no primality claim to audit). A share is 70 bytes:
4-byte x, 66-byte y.

Coefficients come from `secrets` (the OS CSPRNG). Any t shares determine the
secret; t - 1 shares are consistent with every secret (information-theoretic
hiding), so `reconstruct` refuses fewer than t rather than return garbage.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Mapping, Sequence

from .errors import NotEnoughShares, ProtocolViolation

PRIME = 2 ** 521 - 1
_Y_BYTES = 66
_X_BYTES = 4
SHARE_BYTES = _X_BYTES + _Y_BYTES


@dataclass(frozen=True)
class Share:
    x: int      # the holder's index, 1..n (never 0: f(0) is the secret)
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(_X_BYTES, "big") + self.y.to_bytes(_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> "Share":
        if len(data) != SHARE_BYTES:
            raise ProtocolViolation(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        x, y = int.from_bytes(data[:_X_BYTES], "big"), int.from_bytes(data[_X_BYTES:], "big")
        if not 0 < x < PRIME or not 0 <= y < PRIME:
            raise ProtocolViolation("share coordinates outside the field")
        return cls(x, y)


def split(secret: bytes, t: int, xs: Mapping[str, int], *, randbelow=secrets.randbelow) -> dict[str, Share]:
    """Shares of `secret` for each holder name -> x in xs; any t of them reconstruct it."""
    if not 1 <= t <= len(xs):
        raise ValueError(f"threshold t={t} must be in [1, {len(xs)}]")
    if len(set(xs.values())) != len(xs) or any(not 0 < x < PRIME for x in xs.values()):
        raise ValueError("share indices must be distinct and non-zero")
    s = int.from_bytes(secret, "big")
    if len(secret) > 64 or s >= PRIME:
        raise ValueError("secret must be at most 64 bytes")
    coefficients = [s] + [randbelow(PRIME) for _ in range(t - 1)]
    return {name: Share(x, _evaluate(coefficients, x)) for name, x in xs.items()}


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    acc = 0
    for c in reversed(coefficients):  # Horner
        acc = (acc * x + c) % PRIME
    return acc


def interpolate_at_zero(shares: Sequence[Share]) -> int:
    """Lagrange interpolation of the given points at 0 (no threshold check: see reconstruct)."""
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        raise ProtocolViolation(f"duplicate share indices {sorted(xs)}")
    total = 0
    for i, si in enumerate(shares):
        num, den = 1, 1
        for j, sj in enumerate(shares):
            if i != j:
                num = num * (-sj.x) % PRIME
                den = den * (si.x - sj.x) % PRIME
        total = (total + si.y * num * pow(den, -1, PRIME)) % PRIME
    return total


def reconstruct(shares: Sequence[Share], t: int, length: int = 32) -> bytes:
    """The `length`-byte secret from at least t shares (exactly t are used: more add nothing)."""
    if len(shares) < t:
        raise NotEnoughShares(f"{len(shares)} shares, the threshold is {t}")
    value = interpolate_at_zero(list(shares)[:t])
    if value >= 2 ** (8 * length):
        # Garbage shares interpolate to a field element that is almost surely not a
        # `length`-byte string: say so instead of truncating. (A targeted change can pass;
        # the server checks a rebuilt mask key against its advertised public key.)
        raise ProtocolViolation("shares are inconsistent: they do not interpolate to a secret of this size")
    return value.to_bytes(length, "big")
