"""Round messages: tensors without pickles, chunking with integrity checks, per-task delivery."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.executor.federation.identity import in_memory_federation
from services.executor.transport import Reassembler, RoundChannel, from_tensors, split, to_tensors
from shared.bus.memory import InMemoryBus
from shared.clock import SystemClock
from shared.errors import MalformedMessage
from shared.events import AlgorithmTaskSpec, Peer, RoundKind, RoundMessage, Tensor
from shared.messaging import EventPublisher


def _spec(party: str, task: str = "t1") -> AlgorithmTaskSpec:
    return AlgorithmTaskSpec(f"{task}.{party}", task, "f", "train", "ferry.fedavg", "1", {}, party, "client",
                             (Peer("a", "client"), Peer("hub", "aggregator")))


def test_tensors_round_trip_exactly_and_refuse_object_dtypes():
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1.5, -2.0]),
              "big_endian": np.arange(3, dtype=">i4")}
    back = from_tensors(to_tensors(arrays))
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
    with pytest.raises(MalformedMessage, match="object dtype"):
        from_tensors((Tensor("x", "|O", (1,), b"\x00" * 8),))
    with pytest.raises(MalformedMessage, match="bytes for shape"):
        from_tensors((Tensor("x", "<f4", (4,), b"\x00" * 15),))


def _message(n_floats: int) -> RoundMessage:
    weights = {"w": np.random.default_rng(0).standard_normal(n_floats).astype(np.float32)}
    return RoundMessage("f", "t1", "train", 3, 1, "a", RoundKind.UPDATE, "hub", to_tensors(weights), 10,
                        {"loss": 0.5})


def test_large_messages_are_chunked_and_reassembled_in_any_order():
    message = _message(1_000_000)  # 4 MB of weights
    chunks = split(message, 900_000)
    assert len(chunks) == 5 and all(len(c.body) <= 900_000 for c in chunks)
    reassembler = Reassembler()
    results = [reassembler.add(c) for c in reversed(chunks)]
    assert results[:-1] == [None] * 4
    assert results[-1] == message


def test_a_corrupted_chunk_fails_the_integrity_check():
    chunks = split(_message(300_000), 400_000)
    bad = dataclasses.replace(chunks[1], body=b"x" + chunks[1].body[1:])
    reassembler = Reassembler()
    for chunk in [chunks[0], bad] + chunks[2:-1]:
        assert reassembler.add(chunk) is None
    with pytest.raises(MalformedMessage, match="SHA-256"):
        reassembler.add(chunks[-1])


async def test_channel_delivers_only_this_tasks_messages_for_this_party():
    bus, clock = InMemoryBus(), SystemClock()
    keys = in_memory_federation(["a", "hub"])
    a = await RoundChannel(bus, _spec("a"), EventPublisher(bus, "a", clock), chunk_bytes=50_000,
                           trust=keys["a"]).open()
    hub = await RoundChannel(bus, _spec("hub"), EventPublisher(bus, "hub", clock), chunk_bytes=50_000,
                             trust=keys["hub"]).open()
    other_task = RoundChannel(bus, _spec("hub", task="t2"), EventPublisher(bus, "x", clock), trust=keys["hub"])
    await other_task.send(other_task.message(RoundKind.ANNOUNCE, 1))
    await hub.send(hub.message(RoundKind.ANNOUNCE, 1, recipient="someone-else"))
    big = {"w": np.ones(100_000, np.float32)}
    await hub.send(hub.message(RoundKind.ANNOUNCE, 2, arrays=big))
    got = await a.receive(2.0)
    assert got.round == 2 and got.sender == "hub"
    np.testing.assert_array_equal(from_tensors(got.tensors)["w"], big["w"])
    assert await a.receive(0.2) is None
    assert await hub.receive(0.2) is None  # its own messages are not echoed back


def test_half_assembled_payloads_are_bounded_per_sender():
    """A writer that starts payloads and never finishes them cannot grow a receiver's memory."""
    reassembler = Reassembler(max_incomplete=2)
    junk = [split(_message(30_000), 20_000) for _ in range(5)]
    for chunks in junk:
        assert reassembler.add(chunks[0]) is None
    assert reassembler.dropped == 3 and len(reassembler._parts) == 2
    honest = split(dataclasses.replace(_message(30_000), sender="hub"), 20_000)
    assert [reassembler.add(c) for c in honest][-1] is not None  # other senders are unaffected
