"""The development cluster's PKI: a CA, the API server's serving certificate, the service-account keys.

ECDSA P-256 throughout (fast to generate, accepted by every Kubernetes component). The
certificates carry key identifiers and basic constraints: strict TLS clients (Python's ssl
with VERIFY_X509_STRICT, Go's crypto/x509) refuse a CA or leaf without them.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_SERVING_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  "kubernetes.default.svc.cluster.local")
_SERVING_IPS = ("127.0.0.1", "10.96.0.1")  # loopback and the first service IP (the `kubernetes` Service)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _builder(subject: str | x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    if isinstance(subject, str):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _leaf(subject: str | x509.Name, ca: x509.Certificate, ca_key, public_key, days: int,
          usage: x509.ObjectIdentifier) -> x509.CertificateBuilder:
    """A CA-signed end-entity certificate's builder: signing key usage only, one extended usage,
    and the key identifiers strict TLS clients insist on."""
    return (_builder(subject, ca.subject, public_key, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def write_pki(folder: Path, days: int = 30) -> dict[str, Path]:
    """Write ca.crt/ca.key, apiserver.crt/key, sa.key/sa.pub (and return their paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry-dev-ca")])
    ca = (_builder("ferry-dev-ca", ca_name, ca_key.public_key(), days)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    serving_key = _key()
    names = [x509.DNSName(n) for n in _SERVING_NAMES] + [x509.IPAddress(ipaddress.ip_address(i)) for i in _SERVING_IPS]
    serving = (_leaf("kube-apiserver", ca, ca_key, serving_key.public_key(), days, ExtendedKeyUsageOID.SERVER_AUTH)
               .add_extension(x509.SubjectAlternativeName(names), critical=False)
               .sign(ca_key, hashes.SHA256()))
    sa_key = _key()
    paths = {"ca": folder / "ca.crt", "ca_key": folder / "ca.key", "apiserver": folder / "apiserver.crt",
             "apiserver_key": folder / "apiserver.key", "sa_key": folder / "sa.key", "sa_pub": folder / "sa.pub"}
    _write(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))
    _write(paths["ca_key"], _pem_key(ca_key), private=True)
    _write(paths["apiserver"], serving.public_bytes(serialization.Encoding.PEM))
    _write(paths["apiserver_key"], _pem_key(serving_key), private=True)
    _write(paths["sa_key"], _pem_key(sa_key), private=True)
    _write(paths["sa_pub"], sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    return paths


def write_client_cert(folder: Path, name: str, common_name: str, organizations: tuple[str, ...] = (),
                      days: int = 30) -> tuple[Path, Path]:
    """A client certificate signed by folder/ca.key (the API server trusts that CA for clients).

    The kubelet authenticates with one: CN system:node:<node>, O system:nodes, which the API
    server's Node authorizer and RBAC grant exactly a kubelet's rights.
    """
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    key = _key()
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    cert = (_leaf(x509.Name(subject), ca, ca_key, key.public_key(), days, ExtendedKeyUsageOID.CLIENT_AUTH)
            .sign(ca_key, hashes.SHA256()))
    crt, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    _write(crt, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _pem_key(key), private=True)
    return crt, key_path
