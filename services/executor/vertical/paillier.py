"""Vectors of Paillier ciphertexts (python-paillier, `phe`, with gmpy2), and a plain stand-in.

Both backends offer the same operations, so the hetero-LR math (lr.py) is
written once and run encrypted (the protocol) or in the clear (to measure what
encryption costs, and to test the math). Values are fixed point: encrypted
inputs carry base-16 exponent EXP (resolution 2^-32), products add exponents.

Ciphertexts leave a party only re-randomised: `to_wire` asks phe for the
secure ciphertext, which obfuscates (multiplies by a fresh r^n) any value
computed from others' ciphertexts. Without it a host that knows the randomness
of its own [[u]] could strip it off the guest's [[d]] derived from it and read
d, which holds the labels.

Masks for decryption by the arbiter are uniform in Z_n, added to the
encoding, so the arbiter's plaintext is uniform and says nothing about the
gradient it hides.
"""

from __future__ import annotations

import secrets
from typing import Sequence

import numpy as np
from phe import paillier
from phe.paillier import EncodedNumber, EncryptedNumber, PaillierPublicKey

from shared.errors import ConfigurationError, DataError

EXP = -8


def _to_uint8(values: Sequence[int], width: int) -> np.ndarray:
    raw = b"".join(int(v).to_bytes(width, "big") for v in values)
    return np.frombuffer(raw, np.uint8).reshape(len(values), width)


def _from_uint8(array: np.ndarray, width: int, sender: str, what: str) -> list[int]:
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != width:
        raise DataError(f"{sender} sent {what} of dtype {a.dtype} shape {a.shape}; expected (k, {width}) uint8")
    raw = a.tobytes()
    return [int.from_bytes(raw[i:i + width], "big") for i in range(0, len(raw), width)]


def _exponents(arrays, n: int, sender: str) -> list[int]:
    e = np.asarray(arrays.get("e", np.empty(0)))
    if e.dtype != np.int64 or e.shape != (n,) or (e.size and (e.min() < -64 or e.max() > 0)):
        raise DataError(f"{sender} sent exponents of dtype {e.dtype} shape {e.shape}; expected ({n},) int64 in -64..0")
    return e.tolist()


class PaillierBackend:
    """Operations with the public key only: what guest and hosts hold."""

    encrypted = True

    def __init__(self, public_key: PaillierPublicKey):
        self.pk = public_key
        self.n = public_key.n
        self.width = (public_key.nsquare.bit_length() + 7) // 8
        self.n_width = (public_key.n.bit_length() + 7) // 8

    # -- construction and the wire ----------------------------------------
    def key_wire(self) -> dict[str, np.ndarray]:
        return {"n": _to_uint8([self.n], self.n_width)}

    @classmethod
    def from_key_wire(cls, arrays, sender: str, min_bits: int) -> "PaillierBackend":
        raw = np.asarray(arrays.get("n", np.empty((0, 0), np.uint8)))
        if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[0] != 1:
            raise DataError(f"{sender} sent a malformed public key ({raw.dtype}, {raw.shape})")
        n = int.from_bytes(raw.tobytes(), "big")
        if n.bit_length() < min_bits or n % 2 == 0:
            raise DataError(f"{sender} sent a {n.bit_length()}-bit Paillier modulus; key_bits asks for {min_bits}")
        return cls(PaillierPublicKey(n))

    def to_wire(self, values: Sequence[EncryptedNumber]) -> dict[str, np.ndarray]:
        return {"c": _to_uint8([v.ciphertext(be_secure=True) for v in values], self.width),
                "e": np.array([v.exponent for v in values], np.int64)}

    def from_wire(self, arrays, sender: str) -> list[EncryptedNumber]:
        cs = _from_uint8(arrays.get("c", np.empty((0, self.width), np.uint8)), self.width, sender, "ciphertexts")
        if any(not 0 < c < self.pk.nsquare for c in cs):
            raise DataError(f"{sender} sent a ciphertext outside Z*_n^2")
        return [EncryptedNumber(self.pk, c, e) for c, e in zip(cs, _exponents(arrays, len(cs), sender))]

    # -- arithmetic ---------------------------------------------------------
    def _encode(self, value: float, exponent: int = EXP) -> EncodedNumber:
        """Fixed point at base-16 `exponent`; negatives wrap to n - |v| as phe expects."""
        return EncodedNumber(self.pk, int(round(float(value) * 16 ** -exponent)) % self.n, exponent)

    def encrypt(self, values: np.ndarray) -> list[EncryptedNumber]:
        return [self.pk.encrypt_encoded(self._encode(v), None) for v in np.asarray(values, np.float64).ravel()]

    def add(self, a, b) -> list[EncryptedNumber]:
        return [x + y for x, y in zip(a, b, strict=True)]

    def add_plain(self, a, values: np.ndarray) -> list[EncryptedNumber]:
        return [x + self._encode(v, x.exponent) for x, v in zip(a, values, strict=True)]

    def scale(self, a, factor: float) -> list[EncryptedNumber]:
        f = self._encode(factor)
        return [x * f for x in a]

    def dot(self, a, values: np.ndarray) -> EncryptedNumber:
        """Σ a_i v_i."""
        return self.total([x * self._encode(v) for x, v in zip(a, values, strict=True)])

    def xt_dot(self, a, x: np.ndarray) -> list[EncryptedNumber]:
        """Σ_i a_i x_ij for each column j of x: X^T a."""
        x = np.asarray(x, np.float64)
        encoded = [[self._encode(v) for v in row] for row in x]  # once per row, reused per column
        out = []
        for j in range(x.shape[1]):
            total = a[0] * encoded[0][j]
            for i in range(1, len(a)):
                total = total + a[i] * encoded[i][j]
            out.append(total)
        return out

    def total(self, a) -> EncryptedNumber:
        s = a[0]
        for x in a[1:]:
            s = s + x
        return s

    def mask(self, a) -> tuple[list[EncryptedNumber], list[int]]:
        """a + r with r uniform in Z_n per element; returns (masked, r)."""
        masks = [secrets.randbelow(self.n) for _ in a]
        return [x + EncodedNumber(self.pk, r, x.exponent) for x, r in zip(a, masks)], masks

    def unmask(self, arrays, masks: list[int], exponents: list[int], sender: str) -> np.ndarray:
        values = _from_uint8(arrays.get("m", np.empty((0, self.n_width), np.uint8)), self.n_width, sender, "decryptions")
        if len(values) != len(masks) or any(not 0 <= v < self.n for v in values):
            raise DataError(f"{sender} returned {len(values)} decryptions for {len(masks)} masked values")
        return np.array([EncodedNumber(self.pk, (v - r) % self.n, e).decode()
                         for v, r, e in zip(values, masks, exponents)], np.float64)


class PaillierDecryptor:
    """The arbiter's side: holds the private key, which never leaves its process."""

    def __init__(self, bits: int):
        if bits % 2:  # phe would search forever for two bits/2-bit primes whose product has odd length
            raise ConfigurationError(f"params.key_bits must be even, got {bits}")
        self.public_key, self._private = paillier.generate_paillier_keypair(n_length=bits)
        self.backend = PaillierBackend(self.public_key)

    def decrypt_masked(self, arrays, sender: str) -> dict[str, np.ndarray]:
        """Plain encodings of masked ciphertexts (uniform in Z_n): safe to return to their owner."""
        values = self.backend.from_wire(arrays, sender)
        return {"m": _to_uint8([self._private.decrypt_encoded(v).encoding for v in values], self.backend.n_width)}

    def decrypt(self, arrays, sender: str) -> np.ndarray:
        return np.array([self._private.decrypt(v) for v in self.backend.from_wire(arrays, sender)], np.float64)


class PlainBackend:
    """The same protocol in the clear: to measure what encryption costs. No privacy at all."""

    encrypted = False

    def key_wire(self) -> dict[str, np.ndarray]:
        return {}

    def to_wire(self, values) -> dict[str, np.ndarray]:
        return {"v": np.asarray(values, np.float64).reshape(-1)}

    def from_wire(self, arrays, sender: str) -> np.ndarray:
        v = np.asarray(arrays.get("v", np.empty(0)))
        if v.dtype != np.float64 or v.ndim != 1:
            raise DataError(f"{sender} sent values of dtype {v.dtype} shape {v.shape}; expected float64 vector")
        return v

    def encrypt(self, values):
        return np.asarray(values, np.float64).ravel().copy()

    def add(self, a, b):
        return np.asarray(a) + np.asarray(b)

    def add_plain(self, a, values):
        return np.asarray(a) + np.asarray(values, np.float64)

    def scale(self, a, factor: float):
        return np.asarray(a) * float(factor)

    def dot(self, a, values):
        return np.array([float(np.dot(a, values))])[0]

    def xt_dot(self, a, x):
        return np.asarray(x, np.float64).T @ np.asarray(a)

    def total(self, a):
        return float(np.sum(a))

    def mask(self, a):
        return np.asarray(a, np.float64), [0] * len(a)

    def unmask(self, arrays, masks, exponents, sender: str) -> np.ndarray:
        return self.from_wire({"v": arrays.get("m")}, sender)


class PlainDecryptor:
    def __init__(self):
        self.backend = PlainBackend()

    def decrypt_masked(self, arrays, sender: str) -> dict[str, np.ndarray]:
        return {"m": self.backend.from_wire(arrays, sender)}

    def decrypt(self, arrays, sender: str) -> np.ndarray:
        return self.backend.from_wire(arrays, sender)
