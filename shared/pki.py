"""Certificates for Kafka's mutual TLS: one federation CA, one certificate per service or party.

A certificate's subject is ``CN=<name>,OU=<role>,O=Ferry``. The broker maps a client's
certificate to the Kafka principal ``User:<role>`` (see ``PRINCIPAL_MAPPING_RULES``), and
the ACLs (shared/kafka_acls.py) are written per role: every party gets the same, narrow
rights, while *which* party sent a round message is proven by its Ed25519 signature, not
by Kafka. A certificate from another CA, or none, never completes the TLS handshake.

Files: ``ca.crt``/``ca.key`` (the CA key belongs offline in a real federation) and
``<name>.crt``/``<name>.key`` per holder, keys PKCS#8 PEM, mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.kafka_acls import ORGANISATION, PRINCIPAL_MAPPING_RULES  # noqa: F401  (re-exported)

# Roles the ACLs know. "admin" and "broker" are Kafka super users; anything else (e.g. a
# certificate issued with role "guest") authenticates but is allowed nothing.
ROLES = ("broker", "admin", "splitter", "scheduler", "monitor", "party", "upstream", "guest")
_CA_DAYS, _LEAF_DAYS = 3650, 825


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _name(common_name: str, role: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION)]
    if role:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def create_ca(directory: Path, name: str = "Ferry federation CA") -> Issued:
    """A new self-signed CA in ``directory`` (refuses to overwrite an existing one)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = Issued(directory / "ca.crt", directory / "ca.key")
    if out.cert.exists() or out.key.exists():
        raise FileExistsError(f"{out.cert} already exists; a federation has one CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = _name(name, None)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(out.key, key)
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def issue(directory: Path, name: str, role: str, hosts: tuple[str, ...] = (),
          ca: Issued | None = None) -> Issued:
    """Issue ``<name>.crt``/``<name>.key`` for ``role``, signed by the CA in ``directory``
    (or ``ca``). ``hosts``: DNS names / IP addresses a server certificate answers to."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not name or any(c in name for c in ",+=\"\\<>;/") or name.startswith(("#", " ")):
        raise ValueError(f"name {name!r}: use letters, digits, '-', '_' and '.' only")
    ca = ca or Issued(directory / "ca.crt", directory / "ca.key")
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(name, role)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                     ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                              critical=False))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    out = Issued(directory / f"{name}.crt", directory / f"{name}.key")
    _write_key(out.key, key)
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


# The development federation: what `ferry kafka up`, the test fixture and docker-compose use.
DEV_HOLDERS: tuple[tuple[str, str], ...] = (
    ("admin", "admin"), ("splitter", "splitter"), ("scheduler", "scheduler"), ("monitor", "monitor"),
    ("party", "party"), ("upstream", "upstream"), ("guest", "guest"))
BROKER_HOSTS = ("127.0.0.1", "localhost", "kafka")


def dev_pki(directory: Path, broker_hosts: tuple[str, ...] = BROKER_HOSTS) -> Path:
    """A CA plus broker and per-role certificates in ``directory``, created once and reused."""
    if not (directory / "ca.crt").is_file():
        create_ca(directory, "Ferry development CA")
    if not (directory / "broker.crt").is_file():
        issue(directory, "broker", "broker", broker_hosts)
    for name, role in DEV_HOLDERS:
        if not (directory / f"{name}.crt").is_file():
            issue(directory, name, role)
    return directory
