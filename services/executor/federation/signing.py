"""Signed round messages: who sent it, for which conversation, and that nothing changed on the way.

The sender signs, with its Ed25519 identity, a digest of the message's context
(flow, task, step, round, attempt, kind, sender, recipient), a fresh 16-byte
nonce and the digest of its payload (tensors, example count, metrics, body).
Receivers check the signature against the federation's key registry and the
context against their own task, and remember nonces: a forged, altered,
re-addressed, replayed or other-conversation message is rejected with a reason.

Signing happens on the whole message, before the transport chunks it; chunks
are reassembled first and verified as one message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from collections import OrderedDict
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.errors import FerryError
from shared.events import AlgorithmTaskSpec, RoundMessage

from .identity import Identity, KeyRegistry

DOMAIN = b"ferry-round-message/v1"
NONCE_BYTES = 16
REMEMBERED_NONCES = 200_000   # per channel; a step exchanges far fewer messages


class RejectedMessage(FerryError):
    """A round message that fails authentication; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _frame(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


def payload_digest(m: RoundMessage) -> bytes:
    """SHA-256 of what the message carries, independent of protobuf's encoding."""
    h = hashlib.sha256(DOMAIN + b"/payload")
    for t in m.tensors:
        h.update(_frame(t.name.encode(), t.dtype.encode(), ",".join(map(str, t.shape)).encode()))
        h.update(len(t.data).to_bytes(8, "big"))
        h.update(t.data)
    # As _frame(examples, body) would, without copying the body into the frame.
    h.update(_frame(str(int(m.num_examples)).encode()) + len(m.body).to_bytes(8, "big"))
    h.update(m.body)
    for name in sorted(m.metrics):
        h.update(_frame(name.encode(), struct.pack(">d", float(m.metrics[name]))))
    return h.digest()


def signed_digest(m: RoundMessage, payload: bytes | None = None) -> bytes:
    """What is signed: the context, the nonce and the payload digest (`payload`, when the caller
    has hashed the payload already: a model is hashed once per message on each side)."""
    fields = (m.flow_id, m.task_id, m.step, str(int(m.round)), str(int(m.attempt)), m.kind.name, m.sender,
              m.recipient)
    return hashlib.sha256(_frame(DOMAIN, *(f.encode() for f in fields), bytes(m.nonce),
                                 payload if payload is not None else payload_digest(m))).digest()


def sign_message(m: RoundMessage, identity: Identity, randbytes=os.urandom, *,
                 digest: bytes | None = None) -> RoundMessage:
    """`digest`: payload_digest(m), when the caller computed it."""
    if m.sender != identity.party:
        raise ValueError(f"{identity.party} cannot sign a message from {m.sender}")
    unsigned = dataclasses.replace(m, nonce=randbytes(NONCE_BYTES), signature=b"")
    return dataclasses.replace(unsigned, signature=identity.sign(signed_digest(unsigned, digest)))


def check_signature(m: RoundMessage, public: bytes, digest: bytes | None = None) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(bytes(m.signature), signed_digest(m, digest))
    except (InvalidSignature, ValueError) as exc:
        raise RejectedMessage("bad_signature", f"{m.kind.name} from {m.sender} does not verify under "
                                               f"{m.sender}'s pinned key (forged or altered)") from exc


def check_context(m: RoundMessage, task: AlgorithmTaskSpec, parties: Iterable[str]) -> None:
    """The message belongs to this step's conversation, between two of its parties, to us."""
    if (m.flow_id, m.task_id, m.step) != (task.flow_id, task.task_id, task.step):
        raise RejectedMessage("other_task", f"{m.kind.name} from {m.sender} is for {m.flow_id}/{m.task_id}"
                                            f"/{m.step}, this is {task.flow_id}/{task.task_id}/{task.step}")
    if m.sender not in set(parties):
        raise RejectedMessage("unknown_sender", f"{m.kind.name} from {m.sender!r}, who is no party of this step")
    if m.recipient not in ("", task.party):
        raise RejectedMessage("other_recipient", f"{m.kind.name} from {m.sender} is addressed to {m.recipient}")


class Verifier:
    """A receiver's memory: nonces seen and each sender's latest attempt. Not thread-safe (one channel)."""

    def __init__(self, task: AlgorithmTaskSpec, registry: KeyRegistry | None):
        self._task = task
        self._registry = registry
        self._parties = {p.party for p in task.peers} | {task.party}
        self._nonces: OrderedDict[bytes, None] = OrderedDict()
        self._attempts: dict[str, int] = {}

    def check(self, m: RoundMessage, digest: bytes | None = None) -> None:
        """`digest`: payload_digest(m), when the caller computed it (the transport, on reassembly)."""
        check_context(m, self._task, self._parties)
        if self._registry is not None:
            if not m.signature or len(m.nonce) != NONCE_BYTES:
                raise RejectedMessage("unsigned", f"{m.kind.name} from {m.sender} carries no signature")
            public = self._registry.key_for(m.sender)
            if public is None:
                raise RejectedMessage("unknown_sender", f"{m.sender} has no key in {self._registry.source}")
            check_signature(m, public, digest)
        latest = self._attempts.get(m.sender, 0)
        if m.attempt < latest:
            raise RejectedMessage("stale_attempt", f"{m.kind.name} from {m.sender} of attempt {m.attempt}; "
                                                   f"{m.sender} is at attempt {latest}")
        if m.nonce:
            if m.nonce in self._nonces:
                raise RejectedMessage("replayed", f"{m.kind.name} of round {m.round} from {m.sender} was "
                                                  f"received before")
            self._nonces[m.nonce] = None
            if len(self._nonces) > REMEMBERED_NONCES:
                self._nonces.popitem(last=False)
        self._attempts[m.sender] = max(latest, int(m.attempt))
