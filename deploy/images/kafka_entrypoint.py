"""Entrypoint of the ferry-kafka image: a single-node KRaft broker, mutual TLS only, with ACLs.

``run``: write server.properties from the mounted PKI (/etc/ferry/pki: ca.crt, broker.crt,
broker.key, admin.crt, admin.key), format the storage once, start the broker, create the
federation's ACLs (shared.kafka_acls) as admin, then mark ready and wait; SIGTERM is passed on.
``health``: ready, and the broker answers Metadata over TLS as admin.

Listeners: INTERNAL (kafka:9093, for containers), EXTERNAL (0.0.0.0:9094, advertised as
$KAFKA_EXTERNAL_ADDRESS, e.g. 127.0.0.1:9094, for the host), CONTROLLER (127.0.0.1:9095).
"""
from __future__ import annotations

import base64
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

from shared.kafka_acls import PRINCIPAL_MAPPING_RULES, apply_acls, client_context, federation_acls, request

PKI = Path(os.environ.get("KAFKA_PKI", "/etc/ferry/pki"))
DATA = Path(os.environ.get("KAFKA_DATA", "/var/lib/kafka"))
READY = DATA / ".ferry-ready"
LIBS = "/opt/kafka/libs/*"
# Full JIT (no TieredStopAtLevel=1): TLS needs C2's AES-GCM intrinsics (shared/devtools/kafka_broker.py).
JVM = ["java", "-Xms256m", "-Xmx1g", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
       "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config=warn"]


def _pem(name: str) -> str:
    return (PKI / name).read_text().strip().replace("\n", "\\n")


def properties() -> str:
    external = os.environ.get("KAFKA_EXTERNAL_ADDRESS", "127.0.0.1:9094")
    props = {
        "process.roles": "broker,controller", "node.id": 1,
        "controller.quorum.bootstrap.servers": "127.0.0.1:9095",
        "listeners": "INTERNAL://0.0.0.0:9093,EXTERNAL://0.0.0.0:9094,CONTROLLER://127.0.0.1:9095",
        "advertised.listeners": f"INTERNAL://kafka:9093,EXTERNAL://{external}",
        "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map": "INTERNAL:SSL,EXTERNAL:SSL,CONTROLLER:SSL",
        "ssl.client.auth": "required", "ssl.protocol": "TLSv1.3", "ssl.enabled.protocols": "TLSv1.3",
        "ssl.keystore.type": "PEM", "ssl.keystore.certificate.chain": _pem("broker.crt"),
        "ssl.keystore.key": _pem("broker.key"),
        "ssl.truststore.type": "PEM", "ssl.truststore.certificates": _pem("ca.crt"),
        "ssl.principal.mapping.rules": PRINCIPAL_MAPPING_RULES,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:broker;User:admin", "allow.everyone.if.no.acl.found": "false",
        "log.dirs": DATA / "logs", "num.partitions": 3, "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": 1, "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1, "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1, "group.initial.rebalance.delay.ms": 0,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def probe() -> bool:
    ctx = client_context(str(PKI / "ca.crt"), str(PKI / "admin.crt"), str(PKI / "admin.key"))
    try:
        with socket.create_connection(("127.0.0.1", 9093), timeout=3) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.settimeout(3)
                resp = request(s, 3, 4, struct.pack(">ib", 0, 0))  # Metadata v4, no topics
                return struct.unpack(">i", resp[4:8])[0] >= 1
    except (OSError, struct.error):
        return False


def run() -> int:
    READY.unlink(missing_ok=True)
    props = DATA / "server.properties"
    props.write_text(properties())
    props.chmod(0o600)
    if not (DATA / "logs" / "meta.properties").is_file():
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=").replace("-", "A")
        subprocess.run([*JVM, "-cp", LIBS, "kafka.tools.StorageTool", "format", "--standalone", "-t", cid,
                        "-c", str(props)], check=True, timeout=300)
    broker = subprocess.Popen([*JVM, "-cp", LIBS, "kafka.Kafka", str(props)])
    signal.signal(signal.SIGTERM, lambda *_: broker.send_signal(signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: broker.send_signal(signal.SIGTERM))
    deadline = time.monotonic() + 600  # a loaded 2-core host needs minutes for a cold JVM
    while not probe():
        if broker.poll() is not None or time.monotonic() > deadline:
            broker.kill()
            print("kafka did not become ready", file=sys.stderr)
            return 1
        time.sleep(0.5)
    apply_acls("127.0.0.1", 9093, client_context(str(PKI / "ca.crt"), str(PKI / "admin.crt"),
                                                 str(PKI / "admin.key")), federation_acls())
    READY.touch()
    print("ferry-kafka: ready, ACLs applied", flush=True)
    return broker.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["health"]:
        raise SystemExit(0 if READY.is_file() and probe() else 1)
    raise SystemExit(run())
