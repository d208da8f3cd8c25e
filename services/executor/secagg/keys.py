"""Identity keys: who signed a stage message.

Every party signs its stage messages with an Ed25519 identity key. Where that
key comes from decides what the signatures prove:

- Development (default): each party generates an identity key per task run,
  and peers learn it from the signed advertisement itself (trust on first use
  per round). This stops forgery by anyone else on the topic, and tampering
  in transit, but NOT a malicious aggregator: it relays the advertisements and
  could swap keys (a man in the middle), as Bonawitz et al. note for any
  deployment without a PKI.
- Production: identity keys come from a PKI. Pin every party's public key in
  `trusted_keys` ({party: hex Ed25519 public key}, or the path of a JSON file
  with that mapping; task param `secagg_trusted_keys`), and give each party its
  private key in a file named by FERRY_SECAGG_IDENTITY_KEY_FILE (hex of the
  32-byte seed; "{party}" in the path is replaced by the party's name). With
  pins, a message whose key differs from the pin is rejected.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.errors import ConfigurationError

from .errors import UntrustedKey

IDENTITY_KEY_ENV = "FERRY_SECAGG_IDENTITY_KEY_FILE"


@dataclass(frozen=True)
class KeyRing:
    party: str
    identity: Ed25519PrivateKey = field(repr=False)
    pinned: Mapping[str, bytes] = field(default_factory=dict)   # party -> raw public key

    @property
    def public(self) -> bytes:
        return self.identity.public_key().public_bytes_raw()

    def accept(self, party: str, presented: bytes) -> bytes:
        """The identity key to verify `party`'s messages with, given the one it presents."""
        if len(presented) != 32:
            raise UntrustedKey(f"{party}: identity key must be 32 bytes, got {len(presented)}")
        if self.pinned:
            expected = self.pinned.get(party)
            if expected is None:
                raise UntrustedKey(f"{party} has no pinned identity key in trusted_keys")
            if expected != presented:
                raise UntrustedKey(f"{party} presented identity key {presented.hex()[:16]}..., "
                                   f"but trusted_keys pins {expected.hex()[:16]}...")
        return presented

    @classmethod
    def generate(cls, party: str, pinned: Mapping[str, bytes] | None = None) -> "KeyRing":
        return cls(party, Ed25519PrivateKey.generate(), dict(pinned or {}))

    @classmethod
    def from_params(cls, params: Mapping[str, Any], party: str, environ: Mapping[str, str] = os.environ) -> "KeyRing":
        pinned = load_trusted_keys(params.get("secagg_trusted_keys"))
        path = environ.get(IDENTITY_KEY_ENV)
        if not path:
            if pinned:
                raise ConfigurationError(f"secagg_trusted_keys pins identity keys, but {IDENTITY_KEY_ENV} "
                                         f"does not name this party's private key")
            return cls.generate(party)
        seed = bytes.fromhex(Path(path.replace("{party}", party)).read_text().strip())
        ring = cls(party, Ed25519PrivateKey.from_private_bytes(seed), pinned)
        if pinned and pinned.get(party) != ring.public:
            raise ConfigurationError(f"the identity key of {party} does not match its pin in secagg_trusted_keys")
        return ring


def load_trusted_keys(value: Any) -> dict[str, bytes]:
    """{party: raw key} from a mapping of hex strings, or from the JSON file a string names."""
    if not value:
        return {}
    try:
        mapping = json.loads(Path(value).read_text()) if isinstance(value, str) else dict(value)
        keys = {str(p): bytes.fromhex(k) for p, k in mapping.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"secagg_trusted_keys: {exc}") from exc
    bad = sorted(p for p, k in keys.items() if len(k) != 32)
    if bad:
        raise ConfigurationError(f"secagg_trusted_keys: keys of {bad} are not 32-byte Ed25519 public keys")
    return keys
