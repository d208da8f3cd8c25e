"""Identity keys: who signed a stage message.

Every party signs its stage messages with its Ed25519 identity, the same key
that signs its round messages (services/executor/federation/identity.py), and
every key a message presents is checked against the federation's key registry:
the aggregator's identity, too, comes from the registry, never from a KEYS
message, so a topic writer racing the real aggregator gets nowhere, and a
malicious aggregator cannot swap the clients' keys (no man in the middle).

Trust on first use (take the key a message presents) remains only for the
explicit insecure development mode (FERRY_FEDERATION__INSECURE_UNPINNED) and
for in-process simulations that ask for it by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import UntrustedKey


@dataclass(frozen=True)
class KeyRing:
    party: str
    identity: Ed25519PrivateKey = field(repr=False)
    pinned: Mapping[str, bytes] = field(default_factory=dict)   # party -> raw public key
    trust_on_first_use: bool = False

    @property
    def public(self) -> bytes:
        return self.identity.public_key().public_bytes_raw()

    def accept(self, party: str, presented: bytes) -> bytes:
        """The identity key to verify `party`'s messages with, given the one it presents."""
        if len(presented) != 32:
            raise UntrustedKey(f"{party}: identity key must be 32 bytes, got {len(presented)}")
        expected = self.pinned.get(party)
        if expected is None:
            if self.trust_on_first_use:
                return presented
            raise UntrustedKey(f"{party} has no pinned identity key in the federation key registry")
        if expected != presented:
            raise UntrustedKey(f"{party} presented identity key {presented.hex()[:16]}..., "
                               f"but the key registry pins {expected.hex()[:16]}...")
        return expected

    @classmethod
    def generate(cls, party: str, pinned: Mapping[str, bytes] | None = None, *,
                 trust_on_first_use: bool = False) -> "KeyRing":
        return cls(party, Ed25519PrivateKey.generate(), dict(pinned or {}), trust_on_first_use)

    @classmethod
    def federation(cls, parties: Iterable[str]) -> dict[str, "KeyRing"]:
        """Rings for in-process simulations: fresh identities, every one pinned in every ring."""
        keys = {p: Ed25519PrivateKey.generate() for p in parties}
        pins = {p: k.public_key().public_bytes_raw() for p, k in keys.items()}
        return {p: cls(p, k, pins) for p, k in keys.items()}

    @classmethod
    def from_trust(cls, trust) -> "KeyRing":
        """The executor's ring: its identity, and the registry's pins (TOFU only when insecure)."""
        pins = dict(trust.registry.keys) if trust.registry is not None else {}
        return cls(trust.identity.party, trust.identity.private, pins, trust_on_first_use=trust.insecure)
