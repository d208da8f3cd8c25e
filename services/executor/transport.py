"""Round messages between the executors of one training step, over the bus.

Every message of a step travels on ferry.rounds with key = task id, so the
step's conversation is ordered and lives in one partition; each executor
tails only that partition. Messages larger than one record are split into
chunks (one record each) carrying payload id, index, count and the SHA-256 of
the whole, and are reassembled and verified before anyone sees them. The same
path serves plain and secure training, and any model size.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from typing import Mapping

import numpy as np

from shared import topics
from shared.bus.port import Bus, Consumer
from shared.errors import MalformedMessage
from shared.events import AlgorithmTaskSpec, RoundMessage, Tensor
from shared.messaging import EventPublisher
from shared.wire import codec

DEFAULT_CHUNK_BYTES = 900_000  # below Kafka's 1 MiB default with room for the envelope


def to_tensors(arrays: Mapping[str, np.ndarray]) -> tuple[Tensor, ...]:
    out = []
    for name, array in arrays.items():
        a = np.ascontiguousarray(array)
        little = a.astype(a.dtype.newbyteorder("<"), copy=False)
        out.append(Tensor(name, little.dtype.str, tuple(a.shape), little.tobytes()))
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


def split(message: RoundMessage, chunk_bytes: int) -> list[RoundMessage]:
    whole = codec.round_message_to_bytes(message)
    if len(whole) <= chunk_bytes:
        return [message]
    digest = hashlib.sha256(whole).hexdigest()
    payload_id = uuid.uuid4().hex
    count = -(-len(whole) // chunk_bytes)
    header = dataclasses.replace(message, tensors=(), metrics={}, body=b"", payload_id=payload_id,
                                 chunk_count=count, payload_sha256=digest)
    return [dataclasses.replace(header, chunk_index=i, body=whole[i * chunk_bytes:(i + 1) * chunk_bytes])
            for i in range(count)]


class Reassembler:
    """Collects chunks per payload id; yields the original message once complete and intact."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[int, bytes]] = {}

    def add(self, chunk: RoundMessage) -> RoundMessage | None:
        if not chunk.payload_id:
            return chunk
        if not 0 <= chunk.chunk_index < chunk.chunk_count:
            raise MalformedMessage(f"chunk {chunk.chunk_index} of {chunk.chunk_count} is out of range")
        parts = self._parts.setdefault(chunk.payload_id, {})
        parts[chunk.chunk_index] = chunk.body
        if len(parts) < chunk.chunk_count:
            return None
        del self._parts[chunk.payload_id]
        whole = b"".join(parts[i] for i in range(chunk.chunk_count))
        if hashlib.sha256(whole).hexdigest() != chunk.payload_sha256:
            raise MalformedMessage(f"payload {chunk.payload_id} fails its SHA-256 check")
        return codec.round_message_from_bytes(whole)


class RoundChannel:
    """One executor's end of its step's conversation."""

    def __init__(self, bus: Bus, task: AlgorithmTaskSpec, publisher: EventPublisher,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self._bus = bus
        self._task = task
        self._publisher = publisher
        self._chunk_bytes = chunk_bytes
        self._consumer: Consumer | None = None
        self._reassembler = Reassembler()
        self._ready: list[RoundMessage] = []
        # Payload bytes (tensor data and body) of whole messages, for the per-round history.
        self.bytes_sent = 0
        self.bytes_received = 0

    async def open(self) -> "RoundChannel":
        self._consumer = await self._bus.tail(topics.ROUNDS.name, self._task.task_id.encode())
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

    async def send(self, message: RoundMessage) -> None:
        self.bytes_sent += payload_bytes(message)
        chunks = split(message, self._chunk_bytes)
        key = self._task.task_id
        await self._publisher.publish_many([(topics.ROUNDS.name, key, c) for c in chunks])

    def _mine(self, m: RoundMessage) -> bool:
        return (m.task_id == self._task.task_id and m.sender != self._task.party
                and m.recipient in ("", self._task.party))

    async def receive(self, timeout_s: float) -> RoundMessage | None:
        """The next whole message for this party, or None when none arrives in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._ready:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            for record in await self._consumer.poll(min(remaining, 0.5)):
                try:
                    chunk = codec.decode(record.value).event
                    if not isinstance(chunk, RoundMessage) or not self._mine(chunk):
                        continue
                    whole = self._reassembler.add(chunk)
                except MalformedMessage:
                    continue  # not ours to judge: the sender's consumers dead-letter it
                if whole is not None:
                    self.bytes_received += payload_bytes(whole)
                    self._ready.append(whole)
        return self._ready.pop(0)
