"""Party identities: one Ed25519 key per party, pinned in the federation's key registry.

Every party (data owner or coordinator) holds a private key in a file only it
can read; the federation's key registry maps every party name to its public
key. Receivers verify round messages against the registry, never against a
key a message brings along, so whoever can write to the rounds topic cannot
pose as a party, and a coordinator's identity is as pinned as a client's.

Key file: PKCS#8 PEM (what `openssl pkey` reads). Registry: YAML next to the
node registry (docs/node-registry.md), in deploy/k8s the `ferry-keys` ConfigMap:

    parties:
      hospital-a: {ed25519: <64 hex chars>}
      coordinator: {ed25519: <64 hex chars>}

The insecure development mode (no registry) exists only for experiments: every
receiver accepts whatever key a sender uses, and the channel says so in a
warning on every round.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.errors import ConfigurationError

_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")
_PARTY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class KeyRegistryError(ConfigurationError):
    """The key registry or a key file is missing, unreadable or has a bad entry."""


@dataclass(frozen=True)
class Identity:
    """A party's own signing key."""

    party: str
    private: Ed25519PrivateKey = field(repr=False)

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    def sign(self, digest: bytes) -> bytes:
        return self.private.sign(digest)

    @classmethod
    def generate(cls, party: str) -> "Identity":
        return cls(party, Ed25519PrivateKey.generate())


@dataclass(frozen=True)
class KeyRegistry:
    """party -> raw 32-byte Ed25519 public key."""

    keys: Mapping[str, bytes]
    source: str = "<registry>"

    def key_for(self, party: str) -> bytes | None:
        return self.keys.get(party)

    def missing(self, parties: Iterable[str]) -> list[str]:
        return sorted(p for p in set(parties) if p not in self.keys)


@dataclass(frozen=True)
class Trust:
    """What an executor knows: its own identity and the federation's pinned keys.

    registry None is the insecure development mode (explicit setting only).
    """

    identity: Identity
    registry: KeyRegistry | None

    @property
    def insecure(self) -> bool:
        return self.registry is None

    def check_peers(self, parties: Iterable[str]) -> None:
        """Fail the task at start, not mid-round, when a peer has no pinned key or ours is not pinned."""
        if self.registry is None:
            return
        missing = self.registry.missing(parties)
        if missing:
            raise KeyRegistryError(f"parties {missing} have no key in the federation key registry "
                                   f"{self.registry.source}; add them with `ferry keys registry`")
        mine = self.registry.key_for(self.identity.party)
        if mine != self.identity.public:
            raise KeyRegistryError(f"the identity key of {self.identity.party} does not match its entry in "
                                   f"{self.registry.source}: wrong key file, or the registry is stale")


# --- files --------------------------------------------------------------------------------

def key_to_pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def write_key(path: Path, private: Ed25519PrivateKey) -> None:
    """Writes the key readable by its owner only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_to_pem(private))


def read_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyRegistryError(f"identity key file {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyRegistryError(f"identity key file {path}: not an Ed25519 key ({type(key).__name__})")
    return key


def key_path(template: Path | str, party: str) -> Path:
    """The key file of a party; "{party}" in the setting is replaced by the party's name."""
    return Path(str(template).replace("{party}", party))


def parse_registry(document: Any, source: str) -> KeyRegistry:
    if not isinstance(document, Mapping) or not isinstance(document.get("parties"), Mapping):
        raise KeyRegistryError(f"key registry {source}: expected a mapping with 'parties: {{name: {{ed25519: hex}}}}'")
    unknown = sorted(set(document) - {"parties"})
    if unknown:
        raise KeyRegistryError(f"key registry {source}: unknown top-level fields {unknown}")
    keys, seen = {}, {}
    for party, entry in document["parties"].items():
        where = f"key registry {source}: parties.{party}"
        if not isinstance(party, str) or not _PARTY.match(party):
            raise KeyRegistryError(f"{where}: not a valid party name")
        if not isinstance(entry, Mapping) or set(entry) != {"ed25519"}:
            raise KeyRegistryError(f"{where}: expected exactly one field 'ed25519'")
        value = str(entry["ed25519"]).strip().lower()
        if not _HEX_KEY.match(value):
            raise KeyRegistryError(f"{where}.ed25519: expected 64 hex characters (a raw Ed25519 public key)")
        if value in seen:
            raise KeyRegistryError(f"{where}.ed25519: the same key as {seen[value]}: every party needs its own")
        seen[value] = party
        keys[party] = bytes.fromhex(value)
    return KeyRegistry(keys, source)


def load_registry(path: Path) -> KeyRegistry:
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KeyRegistryError(f"key registry {path}: {exc}") from exc
    return parse_registry(document, str(path))


def registry_document(keys: Mapping[str, bytes]) -> dict:
    return {"parties": {p: {"ed25519": keys[p].hex()} for p in sorted(keys)}}


def write_registry(path: Path, keys: Mapping[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# Ferry federation key registry: party -> Ed25519 public key (see docs/keys.md)\n"
                   + yaml.safe_dump(registry_document(keys), sort_keys=True))
    tmp.replace(path)  # readers never see half a registry


def ensure_dev_keys(keys_dir: Path, parties: Iterable[str]) -> tuple[Path, Path]:
    """Development provisioning (embedded default, local runner, `make demo`): a key per party
    under keys_dir, created on first use, and the registry of all of them. Returns
    (key file template, registry path). Production federations provision with `ferry keys`."""
    keys_dir = Path(keys_dir)
    registry_path = keys_dir / "registry.yaml"
    known = dict(load_registry(registry_path).keys) if registry_path.exists() else {}
    changed = False
    for party in sorted(set(parties)):
        path = key_path(keys_dir / "{party}.key", party)
        if not path.exists():
            write_key(path, Ed25519PrivateKey.generate())
        public = read_key(path).public_key().public_bytes_raw()
        if known.get(party) != public:
            known[party], changed = public, True
    if changed or not registry_path.exists():
        write_registry(registry_path, known)
    return keys_dir / "{party}.key", registry_path


def load_trust(party: str, key_file: Path | str | None, registry: Path | None, insecure: bool) -> Trust:
    """The entry point's view of settings.federation, for one party."""
    if registry is None and not insecure:
        raise KeyRegistryError("no federation key registry: set FERRY_FEDERATION__KEY_REGISTRY (and "
                               "FERRY_FEDERATION__IDENTITY_KEY_FILE), or, for development only, "
                               "FERRY_FEDERATION__INSECURE_UNPINNED=true")
    if key_file is None:
        if not insecure:
            raise KeyRegistryError("FERRY_FEDERATION__IDENTITY_KEY_FILE does not name this party's key file")
        return Trust(Identity.generate(party), None)
    identity = Identity(party, read_key(key_path(key_file, party)))
    return Trust(identity, load_registry(registry) if registry is not None else None)


def in_memory_federation(parties: Iterable[str]) -> dict[str, Trust]:
    """Fresh identities for `parties` pinned in one registry (tests, benches, simulations)."""
    identities = {p: Identity.generate(p) for p in parties}
    registry = KeyRegistry({p: i.public for p, i in identities.items()}, "<in-memory>")
    return {p: Trust(i, registry) for p, i in identities.items()}
