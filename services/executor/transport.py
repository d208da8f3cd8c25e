"""Round messages between the executors of one training step, over the bus.

Every message of a step travels on ferry.rounds with key = task id, placed by
services/executor/round_layout.py: an addressed message in its recipient's
inbox partition, a message to everyone in its sender's outbox. Each executor
tails its inbox and the other parties' outboxes, so it fetches what is meant
for it and not the other parties' traffic. Messages larger than one record
are split into chunks (one record each, sized from the bus's max_record_bytes)
carrying payload id, index, count and the SHA-256 of the whole, and are
reassembled and verified before anyone sees them. The same path serves plain
and secure training, and any model size.

Every message is signed by its sender's pinned identity before it is chunked
and verified after it is reassembled (services/executor/federation/signing.py);
what fails is counted in ferry_round_messages_rejected_total, logged with its
reason and never reaches a role. Half-assembled payloads are bounded per sender.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import OrderedDict
from typing import Mapping

import numpy as np
import structlog

from services.executor.federation.identity import Trust
from services.executor.federation.signing import RejectedMessage, Verifier, payload_digest, sign_message
from services.executor.memory import return_freed_memory
from services.executor.round_layout import RoundLayout
from shared import topics
from shared.bus.port import Bus, Consumer
from shared.errors import ConfigurationError, MalformedMessage
from shared.events import AlgorithmTaskSpec, RoundMessage, Tensor
from shared.messaging import EventPublisher
from shared.metrics import ROUND_MESSAGES_REJECTED
from shared.wire import codec

# Room left in a record for the chunk's header fields and the envelope around it (ids,
# producer, sequence): a few hundred bytes in practice, kept generous for long ids.
ENVELOPE_ALLOWANCE_BYTES = 16_384
SEND_GROUP_BYTES = 8 << 20   # chunks encoded and handed to the bus at a time


def chunk_bytes_for(bus: Bus) -> int:
    return bus.max_record_bytes - ENVELOPE_ALLOWANCE_BYTES


def to_tensors(arrays: Mapping[str, np.ndarray]) -> tuple[Tensor, ...]:
    """Tensors whose data are views of the arrays (little-endian, C order; copied only when
    the array is neither): the message refers to them until it is sent, so send it before
    changing them in place. The codec copies them once, into the record."""
    out = []
    for name, array in arrays.items():
        a = np.ascontiguousarray(array)
        little = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
        out.append(Tensor(name, little.dtype.str, tuple(a.shape), memoryview(little.reshape(-1).view(np.uint8))))
    return tuple(out)


def payload_bytes(message: RoundMessage) -> int:
    return sum(len(t.data) for t in message.tensors) + len(message.body)


def from_tensors(tensors: tuple[Tensor, ...]) -> dict[str, np.ndarray]:
    out = {}
    for t in tensors:
        dtype = np.dtype(t.dtype)
        if dtype.hasobject:
            raise MalformedMessage(f"tensor {t.name}: object dtype {t.dtype} is refused")
        expected = int(np.prod(t.shape, dtype=np.int64)) * dtype.itemsize
        if len(t.data) != expected:
            raise MalformedMessage(f"tensor {t.name}: {len(t.data)} bytes for shape {t.shape} {t.dtype}")
        out[t.name] = np.frombuffer(t.data, dtype=dtype).reshape(t.shape)
    return out


def split(message: RoundMessage, chunk_bytes: int, digest: bytes | None = None) -> list[RoundMessage]:
    """The message, or its encoding in chunks whose bodies are views of one buffer. Chunks carry
    the SHA-256 payload digest the signature covers (`digest`, when the sender has it already),
    which the receiver checks after reassembly without hashing the payload twice."""
    whole = codec.round_message_to_bytes(message)
    if len(whole) <= chunk_bytes:
        return [message]
    digest = (digest or payload_digest(message)).hex()
    payload_id = uuid.uuid4().hex
    count = -(-len(whole) // chunk_bytes)
    header = dataclasses.replace(message, tensors=(), metrics={}, body=b"", payload_id=payload_id,
                                 chunk_count=count, payload_sha256=digest)
    view = memoryview(whole)
    return [dataclasses.replace(header, chunk_index=i, body=view[i * chunk_bytes:(i + 1) * chunk_bytes])
            for i in range(count)]


class Reassembler:
    """Collects chunks per payload id; yields the original message once complete and intact.

    Chunks are not signed one by one, so anyone could start payloads that never
    complete: each sender keeps at most `max_incomplete` half-assembled payloads,
    and starting one more drops its oldest.
    """

    def __init__(self, max_incomplete: int = 8) -> None:
        self._parts: dict[str, dict[int, bytes]] = {}
        self._open: dict[str, OrderedDict[str, None]] = {}   # sender -> its incomplete payload ids
        self._max_incomplete = max_incomplete
        self.dropped = 0

    def add(self, chunk: RoundMessage) -> RoundMessage | None:
        got = self.assemble(chunk)
        return None if got is None else got[0]

    def assemble(self, chunk: RoundMessage) -> tuple[RoundMessage, bytes | None] | None:
        """(the whole message, its payload digest when it was computed here), once complete."""
        if not chunk.payload_id:
            return chunk, None
        if not 0 <= chunk.chunk_index < chunk.chunk_count:
            raise MalformedMessage(f"chunk {chunk.chunk_index} of {chunk.chunk_count} is out of range")
        pending = self._open.setdefault(chunk.sender, OrderedDict())
        if chunk.payload_id not in pending:
            pending[chunk.payload_id] = None
            while len(pending) > self._max_incomplete:
                self._parts.pop(pending.popitem(last=False)[0], None)
                self.dropped += 1
        parts = self._parts.setdefault(chunk.payload_id, {})
        parts[chunk.chunk_index] = chunk.body
        if len(parts) < chunk.chunk_count:
            return None
        del self._parts[chunk.payload_id]
        pending.pop(chunk.payload_id, None)
        whole = codec.round_message_from_bytes(b"".join([parts.pop(i) for i in range(chunk.chunk_count)]))
        digest = payload_digest(whole)
        if digest.hex() != chunk.payload_sha256:
            raise MalformedMessage(f"payload {chunk.payload_id} fails its SHA-256 check")
        return whole, digest


class RoundChannel:
    """One executor's end of its step's conversation."""

    def __init__(self, bus: Bus, task: AlgorithmTaskSpec, publisher: EventPublisher,
                 chunk_bytes: int | None = None, *, trust: Trust | None = None, log=None,
                 max_incomplete: int = 8):
        self._bus = bus
        self._task = task
        self._publisher = publisher
        self._chunk_bytes = chunk_bytes  # None: from the bus, when sending (a message factory needs no bus)
        self._consumer: Consumer | None = None
        self._layout: RoundLayout | None = None
        self._reassembler = Reassembler(max_incomplete)
        self._ready: list[RoundMessage] = []
        self._trust = trust
        self._verifier = Verifier(task, trust.registry) if trust is not None else None
        self._log = log if log is not None else structlog.get_logger(service="executor")
        self._warned_round: int | None = None
        # Payload bytes (tensor data and body) of whole messages, for the per-round history.
        self.bytes_sent = 0
        self.bytes_received = 0

    @classmethod
    def for_role(cls, ctx, **kwargs) -> "RoundChannel":
        """The channel of a role's step, signed with the executor's identity."""
        return cls(ctx.bus, ctx.task, ctx.publisher, trust=getattr(ctx, "trust", None), log=ctx.log,
                   max_incomplete=getattr(ctx, "max_incomplete_payloads", 8), **kwargs)

    @property
    def chunk_bytes(self) -> int:
        return self._chunk_bytes or chunk_bytes_for(self._bus)

    async def layout(self) -> RoundLayout:
        """Where this step's streams live on the rounds topic (a channel that only sends needs it too)."""
        if self._layout is None:
            t = self._task
            partitions = await self._bus.partition_count(topics.ROUNDS.name)
            self._layout = RoundLayout.of(t.task_id, [p.party for p in t.peers] + [t.party], partitions)
        return self._layout

    async def open(self) -> "RoundChannel":
        if self._trust is None:
            raise ConfigurationError("round messages need this party's identity: set FERRY_FEDERATION__"
                                     "IDENTITY_KEY_FILE and FERRY_FEDERATION__KEY_REGISTRY (see docs/keys.md)")
        t = self._task
        self._trust.check_peers([p.party for p in t.peers] + [t.party])
        layout = await self.layout()
        self._consumer = await self._bus.tail_partitions(topics.ROUNDS.name, layout.listens(t.party))
        return self

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def message(self, kind, round: int, *, recipient: str = "", arrays: Mapping[str, np.ndarray] | None = None,
                num_examples: int = 0, metrics: Mapping[str, float] | None = None, body: bytes = b"") -> RoundMessage:
        t = self._task
        return RoundMessage(flow_id=t.flow_id, task_id=t.task_id, step=t.step, round=round, attempt=t.attempt,
                            sender=t.party, kind=kind, recipient=recipient, tensors=to_tensors(arrays or {}),
                            num_examples=num_examples, metrics=dict(metrics or {}), body=body)

    def reject(self, message: RoundMessage, reason: str, detail: str) -> None:
        """Count and log a message refused by the transport or a role (wrong round, second announce...)."""
        ROUND_MESSAGES_REJECTED.labels(message.kind.name, reason).inc()
        self._log.warning("round.message_rejected", kind=message.kind.name, sender=message.sender,
                          round=message.round, attempt=message.attempt, reason=reason, detail=detail)

    def _warn_insecure(self, round: int) -> None:
        if self._trust is not None and self._trust.insecure and round != self._warned_round:
            self._warned_round = round
            self._log.warning("federation.insecure_unpinned", round=round,
                              detail="FERRY_FEDERATION__INSECURE_UNPINNED: senders are NOT authenticated; "
                                     "anyone who can write to the rounds topic can pose as a party")

    async def send(self, message: RoundMessage) -> None:
        self._warn_insecure(message.round)
        self.bytes_sent += payload_bytes(message)
        digest = payload_digest(message)  # hashed once: signed, and checked by receivers of its chunks
        if self._trust is not None:
            message = sign_message(message, self._trust.identity, digest=digest)
        partition = (await self.layout()).destination(message.sender, message.recipient)
        chunks = split(message, self.chunk_bytes, digest)
        del message  # the chunks' buffer holds the payload now: the tensors' views may go
        key = self._task.task_id
        # A few MiB of records at a time, in order: encoding every chunk first held the model's
        # bytes three times over (buffer, records, the producer's batches) per sending party.
        step = max(1, SEND_GROUP_BYTES // self.chunk_bytes)
        for i in range(0, len(chunks), step):
            await self._publisher.publish_to_partitions([(topics.ROUNDS.name, partition, key, c)
                                                         for c in chunks[i:i + step]])
        if len(chunks) > 1:  # a model's worth of buffers just freed: back to the OS, not the heap
            del chunks
            return_freed_memory()

    def _mine(self, m: RoundMessage) -> bool:
        return (m.task_id == self._task.task_id and m.sender != self._task.party
                and m.recipient in ("", self._task.party))

    async def receive(self, timeout_s: float) -> RoundMessage | None:
        """The next whole message for this party, or None when none arrives in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        assembled = False
        while not self._ready:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            for record in await self._consumer.poll(min(remaining, 0.5)):
                try:
                    chunk = codec.decode(record.value).event
                    if not isinstance(chunk, RoundMessage) or not self._mine(chunk):
                        continue
                    got = self._reassembler.assemble(chunk)
                except MalformedMessage:
                    continue  # not ours to judge: the sender's consumers dead-letter it
                if got is None:
                    continue
                whole, digest = got
                assembled = assembled or bool(chunk.payload_id)
                try:
                    self._verifier.check(whole, digest)
                except RejectedMessage as exc:
                    self.reject(whole, exc.reason, str(exc))
                    continue
                self.bytes_received += payload_bytes(whole)
                self._ready.append(whole)
        if assembled:  # the chunks' records are gone: their pages go back to the OS
            return_freed_memory()
        return self._ready.pop(0)
