"""Round messages: tensors without pickles, chunking with integrity checks, per-task delivery."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.executor.federation.identity import in_memory_federation
from services.executor.round_layout import RoundLayout
from services.executor.transport import Reassembler, RoundChannel, from_tensors, split, to_tensors
from shared import topics
from shared.bus.memory import InMemoryBus
from shared.bus.metered import MeteredBus, Traffic
from shared.clock import SystemClock
from shared.errors import MalformedMessage
from shared.events import AlgorithmTaskSpec, Peer, RoundKind, RoundMessage, Tensor
from shared.messaging import EventPublisher


KEYS = in_memory_federation(["a", "b", "hub", "c0", "c1", "c2", "c3"])


def _spec(party: str, task: str = "t1", clients: tuple[str, ...] = ("a",)) -> AlgorithmTaskSpec:
    peers = tuple(Peer(c, "client") for c in clients) + (Peer("hub", "aggregator"),)
    return AlgorithmTaskSpec(f"{task}.{party}", task, "f", "train", "ferry.fedavg", "1", {}, party,
                             "aggregator" if party == "hub" else "client", peers)


async def _rounds_bus(partitions: int = topics.ROUNDS.partitions) -> InMemoryBus:
    bus = InMemoryBus()
    await bus.ensure_topics([dataclasses.replace(topics.ROUNDS, partitions=partitions)])
    return bus


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


@pytest.mark.parametrize("partitions", [topics.ROUNDS.partitions, 1])  # 1: every stream shares a partition
async def test_channel_delivers_only_this_tasks_messages_for_this_party(partitions):
    bus, clock = await _rounds_bus(partitions), SystemClock()
    clients = ("a", "b")
    a = await RoundChannel(bus, _spec("a", clients=clients), EventPublisher(bus, "a", clock), chunk_bytes=50_000,
                           trust=KEYS["a"]).open()
    hub = await RoundChannel(bus, _spec("hub", clients=clients), EventPublisher(bus, "hub", clock),
                             chunk_bytes=50_000, trust=KEYS["hub"]).open()
    other_task = await RoundChannel(bus, _spec("hub", task="t2"), EventPublisher(bus, "x", clock),
                                    trust=KEYS["hub"]).open()
    await other_task.send(other_task.message(RoundKind.ANNOUNCE, 1))
    await hub.send(hub.message(RoundKind.ANNOUNCE, 1, recipient="b"))
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


async def test_sending_to_a_party_outside_the_step_is_refused():
    bus, clock = await _rounds_bus(), SystemClock()
    hub = await RoundChannel(bus, _spec("hub"), EventPublisher(bus, "hub", clock), trust=KEYS["hub"]).open()
    with pytest.raises(ValueError, match="'mallory' is not a peer"):
        await hub.send(hub.message(RoundKind.ANNOUNCE, 1, recipient="mallory"))


def test_layout_gives_every_stream_of_a_step_its_own_partition_and_wraps_when_the_topic_is_small():
    parties = [f"p{i:02d}" for i in range(32)]
    layout = RoundLayout.of("task-x", parties, 64)
    streams = [layout.inbox(p) for p in parties] + [layout.outbox(p) for p in parties]
    assert sorted(streams) == list(range(64)) and not layout.overlapping
    assert layout.listens("p03") == tuple(sorted({layout.inbox("p03")} |
                                                 {layout.outbox(p) for p in parties if p != "p03"}))
    small = RoundLayout.of("task-x", parties, 3)
    assert small.overlapping and set(small.listens("p00")) <= {0, 1, 2}


async def _one_round_traffic(bus_factory, n_clients: int, floats: int) -> dict[str, int]:
    """Bytes each party fetched over one plain round: model broadcast, one update per client."""
    clock = SystemClock()
    clients = tuple(f"c{i}" for i in range(n_clients))
    inner = await bus_factory()
    meters, channels = {}, {}
    for party in clients + ("hub",):
        meters[party] = MeteredBus(inner, Traffic())
        channels[party] = await RoundChannel(meters[party], _spec(party, task="traffic", clients=clients),
                                             EventPublisher(meters[party], party, clock), trust=KEYS[party]).open()
    model = {"w": np.zeros(floats, np.float32)}
    hub = channels["hub"]
    await hub.send(hub.message(RoundKind.ANNOUNCE, 1, arrays=model))
    for c in clients:
        got = await channels[c].receive(30.0)
        assert got.kind == RoundKind.ANNOUNCE
        await channels[c].send(channels[c].message(RoundKind.UPDATE, 1, recipient="hub", arrays=model))
    updates = [await hub.receive(30.0) for _ in clients]
    assert sorted(u.sender for u in updates) == list(clients)
    for c in clients:  # nothing else reached a client: no other client's update
        assert await channels[c].receive(0.3) is None
    for ch in channels.values():
        await ch.close()
    await inner.stop()
    return {p: m.traffic.fetched[topics.ROUNDS.name] for p, m in meters.items()}


@pytest.fixture(params=["memory", "kafka"])
def bus_factory(request):
    if request.param == "memory":
        return _rounds_bus
    from shared.bus.kafka import KafkaBus, KafkaSettings

    bootstrap = request.getfixturevalue("kafka_bootstrap")

    async def kafka():
        bus = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="traffic"))
        await bus.start()
        await bus.ensure_topics([topics.ROUNDS])
        return bus

    return kafka


async def test_a_client_fetches_the_model_once_and_never_another_clients_update(bus_factory):
    model_bytes = 4 * 600_000   # three chunks per copy
    fetched = await _one_round_traffic(bus_factory, 4, 600_000)
    for c in ("c0", "c1", "c2", "c3"):
        assert model_bytes <= fetched[c] <= 1.01 * model_bytes
    assert 4 * model_bytes <= fetched["hub"] <= 1.01 * 4 * model_bytes


def test_chunks_fit_the_bus_record_limit():
    bus = InMemoryBus()
    assert RoundChannel(bus, _spec("a"), EventPublisher(bus, "a", SystemClock())).chunk_bytes < bus.max_record_bytes
