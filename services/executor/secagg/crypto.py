"""Primitives of the protocol, each bound to the round it belongs to.

- Key agreement: X25519. Every client makes two fresh pairs per round: c (to
  encrypt shares) and s (to agree pairwise masks), as in Bonawitz et al.
- Key derivation: HKDF-SHA256 whose `info` is the RoundContext (flow, task,
  step, round, attempt) plus a label and the parties involved. A key derived
  for round 3 is a different key in round 4, so nothing carries across rounds
  or between directions (sender -> recipient differs from recipient -> sender).
- Share encryption: AES-256-GCM with a random 96-bit nonce (the key is fresh per
  round and pair, so even nonce reuse would need two shares to one recipient);
  the same context is the associated data.
- PRG: AES-256-CTR keystream (zero IV: each key is used for exactly one stream)
  read as little-endian uint32 words. numpy's RNG is never used for secrets.
- Signatures: Ed25519 over SHA-256 of a length-prefixed encoding of context,
  stage, sender, recipient, canonical-JSON header and every named blob.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import BadCiphertext, BadSignature, ProtocolViolation

DOMAIN = b"ferry-secagg/v1"
_NONCE = 12


def _frame(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: no two different part lists encode alike."""
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


@dataclass(frozen=True)
class RoundContext:
    """Which run of the protocol a key, ciphertext or signature belongs to.

    attempt is the aggregator's attempt (it drives the session); a retried
    aggregator replays round r under a new attempt and so under new keys.
    transcript is the hash of the round's signed setup (federation/transcript.py):
    a client that saw another model, cohort or threshold derives other keys and
    checks other signatures, so nothing from one run of a round is valid in another.
    """

    flow_id: str
    task_id: str
    step: str
    round: int
    attempt: int
    transcript: str = ""

    def info(self, label: str, *parts: str) -> bytes:
        setup = (f"transcript:{self.transcript}",) if self.transcript else ()
        fields = (self.flow_id, self.task_id, self.step, str(self.round), str(self.attempt), *setup, label, *parts)
        return DOMAIN + _frame(*(f.encode() for f in fields))


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def hkdf(secret: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=DOMAIN, info=info).derive(secret)


# --- X25519 -------------------------------------------------------------------------------

def x25519_pair(randbytes=os.urandom) -> tuple[bytes, bytes]:
    """(private, public) raw 32-byte keys; randbytes is injectable only so tests can be replayed."""
    sk = X25519PrivateKey.from_private_bytes(randbytes(32))
    return sk.private_bytes_raw(), sk.public_key().public_bytes_raw()


def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def agree(private: bytes, peer_public: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # a low-order point gives the all-zero secret: refuse it
        raise ProtocolViolation(f"key agreement failed: {exc}") from exc


# --- share encryption ---------------------------------------------------------------------

def share_key(my_c_private: bytes, their_c_public: bytes, ctx: RoundContext, sender: str, recipient: str) -> bytes:
    return hkdf(agree(my_c_private, their_c_public), ctx.info("share-key", sender, recipient))


def seal(key: bytes, plaintext: bytes, aad: bytes, randbytes=os.urandom) -> bytes:
    nonce = randbytes(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise BadCiphertext(f"{what}: AES-GCM authentication failed (tampered, misdirected, "
                            f"or encrypted for another round/attempt)") from exc


# --- masks --------------------------------------------------------------------------------

_ZEROS = np.zeros(0, dtype=np.uint8)   # the plaintext of every keystream; grown on demand, never written
_CTR_SLACK = 15                          # update_into wants room for one block less a byte


def _zeros(nbytes: int) -> np.ndarray:
    global _ZEROS
    if _ZEROS.size < nbytes:
        _ZEROS = np.zeros(nbytes, dtype=np.uint8)
    return _ZEROS[:nbytes]


def prg_words(key: bytes, length: int) -> np.ndarray:
    """`length` uint32 words of AES-256-CTR keystream under `key`.

    update_into a buffer numpy owns: `update` would build a fresh bytes object of the whole
    stream and then copy it again (at 1M words that was 20x the cost of the cipher itself)."""
    nbytes = 4 * length
    out = np.empty(nbytes + _CTR_SLACK, dtype=np.uint8)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    written = encryptor.update_into(_zeros(nbytes), out)
    if written != nbytes or encryptor.finalize():
        raise RuntimeError(f"AES-CTR produced {written} bytes of keystream, expected {nbytes}")
    return out[:nbytes].view("<u4")


def self_mask(b_seed: bytes, ctx: RoundContext, owner: str, length: int) -> np.ndarray:
    return prg_words(hkdf(b_seed, ctx.info("self-mask", owner)), length)


def seed_commitment(b_seed: bytes, ctx: RoundContext, owner: str) -> str:
    """SHA-256 commitment to a self-mask seed, published with its shares and checked after
    reconstruction: a corrupted share is caught, never turned into a garbage model. The seed is
    256 random bits, so the hash reveals nothing usable about it."""
    return hashlib.sha256(ctx.info("self-mask-commitment", owner) + b_seed).hexdigest()


def pair_mask(my_s_private: bytes, their_s_public: bytes, ctx: RoundContext, a: str, b: str,
              length: int) -> np.ndarray:
    """PRG(s_ab): the same words for a and b (the names are bound in sorted order)."""
    lo, hi = sorted((a, b))
    return prg_words(hkdf(agree(my_s_private, their_s_public), ctx.info("pair-mask", lo, hi)), length)


# --- signatures ---------------------------------------------------------------------------

def message_digest(ctx: RoundContext, stage: str, sender: str, recipient: str, header: Mapping[str, Any],
                   blobs: Mapping[str, bytes]) -> bytes:
    """SHA-256 of _frame(context, header, name, blob, ...), hashed part by part: a masked vector
    is megabytes, and joining it into one frame first would copy it for nothing."""
    parts = [ctx.info("message", stage, sender, recipient), canonical_json(header)]
    for name in sorted(blobs):
        parts += [name.encode(), blobs[name]]
    h = hashlib.sha256()
    for part in parts:
        view = memoryview(part).cast("B")
        h.update(len(view).to_bytes(8, "big"))
        h.update(view)
    return h.digest()


def sign(identity: Ed25519PrivateKey, digest: bytes) -> bytes:
    return identity.sign(digest)


def verify(public: bytes, signature: bytes, digest: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, digest)
    except (InvalidSignature, ValueError) as exc:
        raise BadSignature(f"{what}: signature does not verify under the sender's identity key") from exc
