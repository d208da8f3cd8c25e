"""Kafka ACLs for a Ferry federation, derived from the topic catalogue, and a tiny client to
create them (Kafka's CreateAcls, version 1, over mutual TLS as a super user).

Principals are roles (shared/pki.py maps a certificate's OU to ``User:<role>``):
- ``admin`` and ``broker`` are super users (operators, the test harness, the CLI);
- services (splitter, scheduler, monitor) read their inputs, write their outputs, read their
  own outputs back (they rebuild state from them at start), see and create ``ferry.*`` topics
  (each one creates the catalogue at start) and use their own consumer group;
- ``party`` (every executor) writes rounds, progress, observations (its own exit report) and dead
  letters and reads rounds: no
  flow documents, plans, commands or other parties' progress;
- ``upstream`` submits flows and follows rejections and task events;
- any other principal (a certificate from the CA with another role) is allowed nothing, and a
  client without a certificate from the CA never completes the TLS handshake.

Stdlib only, so the development broker script can apply them.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass

from shared.topics import CATALOGUE, TopicSpec

ORGANISATION = "Ferry"
# Certificate subject -> principal: RFC 2253 names, as Kafka sees them (most specific first);
# CN=hospital-a,OU=party,O=Ferry becomes User:party.
PRINCIPAL_MAPPING_RULES = f"RULE:^CN=[^,]+,OU=([^,]+),O={ORGANISATION}$/$1/,DEFAULT"

# Kafka's enum codes (org.apache.kafka.common.{resource,acl}).
TOPIC, GROUP = 2, 3
LITERAL, PREFIXED = 3, 4
READ, WRITE, CREATE, DESCRIBE = 3, 4, 5, 8
ALLOW = 3
_OP_NAMES = {READ: "Read", WRITE: "Write", CREATE: "Create", DESCRIBE: "Describe"}

SERVICES = ("splitter", "scheduler", "monitor")
# Catalogue names of producers/consumers -> the role whose certificate they hold. None: a
# super user (the CLI and operators use the admin certificate).
_ROLE_OF = {"splitter": "splitter", "scheduler": "scheduler", "monitor": "monitor",
            "monitor-api": "monitor", "executor": "party", "upstream": "upstream",
            "cli": None, "operators": None}


@dataclass(frozen=True, order=True)
class AclBinding:
    principal: str      # e.g. "User:party"
    resource_type: int
    resource_name: str
    pattern: int
    operation: int

    def __str__(self) -> str:
        kind = {TOPIC: "topic", GROUP: "group"}[self.resource_type]
        pat = "prefix " if self.pattern == PREFIXED else ""
        return f"{self.principal} may {_OP_NAMES[self.operation]} {kind} {pat}{self.resource_name!r}"


def federation_acls(catalogue: tuple[TopicSpec, ...] = CATALOGUE) -> list[AclBinding]:
    out: set[AclBinding] = set()

    def allow(role: str, rtype: int, name: str, op: int, pattern: int = LITERAL) -> None:
        out.add(AclBinding(f"User:{role}", rtype, name, pattern, op))

    for spec in catalogue:
        for who in spec.producers:
            role = _ROLE_OF.get(who, who)
            if role:
                allow(role, TOPIC, spec.name, WRITE)
                if role in SERVICES:
                    allow(role, TOPIC, spec.name, READ)
        for who in spec.consumers:
            role = _ROLE_OF.get(who, who)
            if role:
                allow(role, TOPIC, spec.name, READ)
    for role in SERVICES:
        allow(role, TOPIC, "ferry.", DESCRIBE, PREFIXED)
        allow(role, TOPIC, "ferry.", CREATE, PREFIXED)
        allow(role, GROUP, f"ferry-{role}", READ, PREFIXED)
    allow("upstream", GROUP, "ferry-upstream", READ, PREFIXED)
    return sorted(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def encode_create_acls(bindings: list[AclBinding]) -> bytes:
    """CreateAcls v1 request body."""
    body = struct.pack(">i", len(bindings))
    for b in bindings:
        body += (struct.pack(">b", b.resource_type) + _str(b.resource_name) + struct.pack(">b", b.pattern)
                 + _str(b.principal) + _str("*") + struct.pack(">bb", b.operation, ALLOW))
    return body


def decode_create_acls(resp: bytes) -> list[tuple[int, str | None]]:
    """(error_code, error_message) per binding from a CreateAcls v1 response body."""
    (n,) = struct.unpack_from(">i", resp, 4)  # after throttle_time_ms
    pos, out = 8, []
    for _ in range(n):
        code, mlen = struct.unpack_from(">hh", resp, pos)
        pos += 4
        msg = None if mlen < 0 else resp[pos:pos + mlen].decode(errors="replace")
        pos += max(mlen, 0)
        out.append((code, msg))
    return out


def request(sock: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    """One Kafka request with a v1 header; returns the response body (v0 header dropped)."""
    hdr = struct.pack(">hhih", api_key, version, 1, 5) + b"ferry"
    sock.sendall(struct.pack(">i", len(hdr) + len(body)) + hdr + body)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf[8:]


def client_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def apply_acls(host: str, port: int, ctx: ssl.SSLContext, bindings: list[AclBinding],
               timeout_s: float = 15.0) -> None:
    """Create ``bindings`` (idempotent: an existing ACL is not an error)."""
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.settimeout(timeout_s)
            results = decode_create_acls(request(s, 30, 1, encode_create_acls(bindings)))
    failed = [(str(b), code, msg) for b, (code, msg) in zip(bindings, results) if code != 0]
    if failed or len(results) != len(bindings):
        raise RuntimeError(f"CreateAcls failed for {len(failed)} of {len(bindings)}: {failed[:3]}")
