"""The development cluster's tooling without a cluster: the binary cache's checksums, the PKI."""
from __future__ import annotations

import hashlib
import ssl

import pytest

from shared.devtools import k8s_cluster
from shared.devtools.k8s_cluster import BINARIES, ClusterError, ensure_binaries
from shared.devtools.k8s_pki import write_pki


def _fake_cache(root, monkeypatch):
    monkeypatch.setenv("FERRY_K8S_CACHE", str(root))
    folder = root / k8s_cluster.version_key()
    (folder / "bin").mkdir(parents=True)
    lines = []
    for name in BINARIES:
        data = f"binary {name}".encode()
        (folder / "bin" / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return folder


def test_a_complete_cache_is_used_without_building(tmp_path, monkeypatch):
    folder = _fake_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(k8s_cluster.subprocess, "run", lambda *a, **k: pytest.fail("must not build"))
    assert ensure_binaries(lambda m: None) == folder / "bin"


def test_a_binary_that_differs_from_its_recorded_sha256_is_refused(tmp_path, monkeypatch):
    folder = _fake_cache(tmp_path, monkeypatch)
    (folder / "bin" / "kube-apiserver").write_bytes(b"tampered")
    with pytest.raises(ClusterError, match="kube-apiserver: sha256 differs"):
        ensure_binaries(lambda m: None)


def test_the_serving_certificate_verifies_strictly_against_the_ca(tmp_path):
    paths = write_pki(tmp_path)
    context = ssl.create_default_context(cafile=str(paths["ca"]))
    context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths["apiserver"], paths["apiserver_key"])
    import socket
    import threading

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.getpeercert()["subject"] == ((("commonName", "kube-apiserver"),),)
                tls.sendall(b"x")
        thread.join(5)
    assert oct(paths["ca_key"].stat().st_mode & 0o777) == "0o600"
