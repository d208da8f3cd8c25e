"""A model of more than 25 million parameters (100 MB of float32 per copy) through the chunked
round transport, with real FedAvg aggregation, checked bit for bit.

1. In-process bus, the whole platform: a ferry.fedavg flow (two clients, one aggregator,
   an MLP 1000 -> 24,800 -> 10 = 25,072,810 parameters, 2 rounds of one SGD step) runs on
   the EmbeddedPlatform. Every round message crosses services.executor.transport in
   ~112 chunks of 900 KB. From the round messages on the bus, the test reassembles the
   clients' updates of each round and checks that the next announce (round 1) and the final
   model (round 2, also the aggregator's saved artifact) are exactly their FedAvg.
2. Real Kafka (fixture kafka_bootstrap), one round: an aggregator and two clients, each with
   its own KafkaBus, drive RoundChannel directly: announce -> updates -> the real FedAvg
   strategy -> final; every client checks the final model equals the FedAvg of the updates.

Exactness: with two clients, FedAvg is float32(a * w1 + b * w2) computed in float64, where
w * 0.5 (equal row counts) or w * 0.25 / w * 0.75 are exact in float64; the sum is then one
rounding, the same in any formula, so the expected value below is independent of how the
strategy loops.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid

import numpy as np

from services.executor.transport import Reassembler, RoundChannel, from_tensors
from shared import topics
from shared.events import AlgorithmTaskSpec, Peer, RoundKind, RoundMessage
from shared.wire import codec

N_FEATURES, HIDDEN, N_CLASSES = 1000, 24_800, 10
N_PARAMS = HIDDEN * (N_FEATURES + 1 + N_CLASSES) + N_CLASSES  # 25,072,810
CLIENTS = ("clinic-a", "clinic-b")


def _exact_fedavg(updates: list[tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """FedAvg of two updates, as float32((n_1 w_1 + n_2 w_2) / N) in float64, where each n_k w_k is
    exact (a float32 times a count below 2^29), so only the sum and the division round."""
    assert len(updates) == 2
    (w1, n1), (w2, n2) = updates
    return {k: ((w1[k].astype(np.float64) * n1 + w2[k].astype(np.float64) * n2) / (n1 + n2)).astype(np.float32)
            for k in w1}


def _assert_identical(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for k, want in expected.items():
        assert got[k].dtype == np.float32 and got[k].shape == want.shape, k
        assert np.array_equal(got[k], want), f"{k}: {np.count_nonzero(got[k] != want)} values differ"


def _round_messages(bus, task_id: str) -> tuple[list[RoundMessage], dict[tuple[str, int], int]]:
    """The step's broadcast announces, final, and each client's first update per round, in log
    order, reassembled from their chunks. Chunks carry the message's header (kind, round,
    sender, recipient), so repeats (a re-announce to one client, the repeated update it
    answers with) are skipped before they cost 100 MB each."""
    reassembler, out, chunks = Reassembler(), [], {}
    first_update: dict[tuple[str, int], str] = {}
    for record in bus.records(topics.ROUNDS.name):
        if record.key != task_id.encode():
            continue
        chunk = codec.decode(record.value).event
        if chunk.kind in (RoundKind.ANNOUNCE, RoundKind.FINAL) and chunk.recipient:
            continue
        if chunk.kind == RoundKind.UPDATE:
            payload = chunk.payload_id or f"whole-{record.offset}"
            if first_update.setdefault((chunk.sender, chunk.round), payload) != payload:
                continue
        elif chunk.kind not in (RoundKind.ANNOUNCE, RoundKind.FINAL):
            continue
        chunks[(chunk.kind.name, chunk.round)] = chunks.get((chunk.kind.name, chunk.round), 0) + 1
        whole = reassembler.add(chunk)
        if whole is not None:
            out.append(whole)
    return out, chunks


async def test_a_25m_parameter_model_trains_two_rounds_on_the_embedded_platform(tmp_path):
    import torch

    from services.embedded import EmbeddedPlatform
    from services.executor.data.importers import make_table, put_table, with_test_split
    from services.scheduler.adapters.launchers import party_dirs
    from services.splitter.core.flow_document import parse_flow_document

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for party in CLIENTS:  # 16 training rows and 4 test rows each: one SGD step per round
        table = make_table({"X": rng.standard_normal((20, N_FEATURES), dtype=np.float32),
                            "y": np.arange(20, dtype=np.int64) % N_CLASSES}, label="y", features=None)
        put_table(party_dirs(tmp_path, party)["data"], "big", with_test_split(table, 0.2, 0))
    flow = parse_flow_document({
        "flow": "large-model",
        "parties": {**{p: {"data": "big"} for p in CLIENTS}, "coordinator": {}},
        "steps": [{"name": "train", "algorithm": "ferry.fedavg", "version": "1",
                   "params": {"model": "mlp", "hidden": HIDDEN, "rounds": 2, "local_epochs": 1, "batch_size": 16,
                              "lr": 0.05, "optimizer": "sgd", "seed": 3, "min_clients": 2},
                   "parties": {"client": list(CLIENTS), "aggregator": "coordinator"}}],
    }, default_flow_id=f"large-{uuid.uuid4().hex[:8]}")

    started = time.monotonic()
    async with EmbeddedPlatform(tmp_path) as platform:
        await platform.submit(flow)
        view = await platform.wait_for(flow.flow_id, timeout_s=120)
        assert view["status"] == "SUCCEEDED", view
        task_id = view["tasks"][0]["task_id"]
        messages, chunks = _round_messages(platform.bus, task_id)
    elapsed = time.monotonic() - started

    announces = {m.round: m for m in messages if m.kind == RoundKind.ANNOUNCE and not m.recipient}
    finals = [m for m in messages if m.kind == RoundKind.FINAL]
    assert set(announces) == {1, 2} and len(finals) == 1
    assert sum(int(np.prod(t.shape)) for t in announces[1].tensors) == N_PARAMS > 25_000_000
    at_least = 4 * N_PARAMS // platform.bus.max_record_bytes  # 100 MB in chunks of under one record each
    assert chunks[("ANNOUNCE", 1)] > at_least and chunks[("FINAL", 2)] > at_least

    def updates_of(r: int, messages: list[RoundMessage]) -> list[tuple[dict[str, np.ndarray], int]]:
        first: dict[str, RoundMessage] = {}
        for m in messages:  # the aggregator keeps a client's first answer per round
            if m.kind == RoundKind.UPDATE and m.round == r:
                first.setdefault(m.sender, m)
        assert sorted(first) == sorted(CLIENTS)
        return [(from_tensors(first[c].tensors), first[c].num_examples) for c in sorted(first)]

    round1, round2 = updates_of(1, messages), updates_of(2, messages)
    assert [n for _, n in round1] == [16, 16]
    start = from_tensors(announces[1].tensors)
    assert not np.array_equal(round1[0][0]["0.weight"], start["0.weight"])  # the clients did train
    _assert_identical(from_tensors(announces[2].tensors), _exact_fedavg(round1))
    expected = _exact_fedavg(round2)
    _assert_identical(from_tensors(finals[0].tensors), expected)
    with np.load(party_dirs(tmp_path, "coordinator")["artifacts"] / flow.flow_id / "model-train.npz") as saved:
        _assert_identical({k: saved[k] for k in saved.files}, expected)
    aggregator = next(a for a in view["tasks"][0]["algorithm_tasks"] if a["role"] == "aggregator")
    assert aggregator["metrics"]["test_n"] == 8
    del messages, announces, finals, round1, round2, start, expected
    gc.collect()
    assert elapsed < 90, f"two rounds of a 25M-parameter model took {elapsed:.0f} s in-process"


def _spec(task_id: str, party: str, role: str) -> AlgorithmTaskSpec:
    peers = tuple(Peer(c, "client") for c in CLIENTS) + (Peer("coordinator", "aggregator"),)
    return AlgorithmTaskSpec(algo_task_id=f"{task_id}.{party}.{role}", task_id=task_id, flow_id="large-kafka",
                             step="train", algorithm="ferry.fedavg", version="1", params={}, party=party,
                             role=role, peers=peers)


async def test_one_round_of_a_25m_parameter_model_over_real_kafka(kafka_bootstrap):
    from services.executor.ml.strategies import make_strategy
    from shared.bus.kafka import KafkaBus, KafkaSettings
    from shared.clock import SystemClock
    from shared.messaging import EventPublisher

    task_id = f"large-kafka-{uuid.uuid4().hex[:8]}"
    clock = SystemClock()
    buses = {p: KafkaBus(KafkaSettings(bootstrap=kafka_bootstrap, client_id=f"large-{p}"))
             for p in ("coordinator", *CLIENTS)}
    for bus in buses.values():
        await bus.start()
    await buses["coordinator"].ensure_topics([topics.ROUNDS])
    channels = {}
    from services.executor.federation.identity import in_memory_federation

    keys = in_memory_federation(buses)
    try:
        for party, bus in buses.items():
            role = "aggregator" if party == "coordinator" else "client"
            channels[party] = await RoundChannel(bus, _spec(task_id, party, role),
                                                 EventPublisher(bus, f"executor/{party}", clock),
                                                 trust=keys[party]).open()
        rng = np.random.default_rng(11)
        global_w = {"0.weight": rng.standard_normal((HIDDEN, N_FEATURES), dtype=np.float32),
                    "0.bias": rng.standard_normal(HIDDEN, dtype=np.float32),
                    "2.weight": rng.standard_normal((N_CLASSES, HIDDEN), dtype=np.float32),
                    "2.bias": rng.standard_normal(N_CLASSES, dtype=np.float32)}
        assert sum(v.size for v in global_w.values()) == N_PARAMS
        rows = {CLIENTS[0]: 100, CLIENTS[1]: 300}
        sent: dict[str, dict[str, np.ndarray]] = {}

        async def client(index: int, name: str) -> dict[str, np.ndarray]:
            channel = channels[name]
            while True:
                message = await channel.receive(1.0)
                if message is None or message.sender != "coordinator":
                    continue
                if message.kind == RoundKind.ANNOUNCE:
                    received = from_tensors(message.tensors)
                    _assert_identical(received, global_w)
                    # A stand-in for local training: a different, deterministic change per client.
                    noise = np.random.default_rng(100 + index)
                    update = {k: v + noise.standard_normal(v.shape, dtype=np.float32) * np.float32(0.01)
                              for k, v in received.items()}
                    sent[name] = update
                    await channel.send(channel.message(RoundKind.UPDATE, message.round, recipient="coordinator",
                                                       arrays=update, num_examples=rows[name]))
                elif message.kind == RoundKind.FINAL:
                    return from_tensors(message.tensors)

        async def aggregator() -> dict[str, np.ndarray]:
            channel = channels["coordinator"]
            strategy = make_strategy("fedavg")
            await channel.send(channel.message(RoundKind.ANNOUNCE, 1, arrays=global_w))
            updates: dict[str, tuple] = {}
            while len(updates) < len(CLIENTS):
                message = await channel.receive(1.0)
                if message is not None and message.kind == RoundKind.UPDATE and message.round == 1:
                    updates[message.sender] = (from_tensors(message.tensors), message.num_examples)
            _, new_w = strategy.aggregate(strategy.init_state(global_w), global_w,
                                          [updates[c] for c in sorted(updates)])
            await channel.send(channel.message(RoundKind.FINAL, 1, arrays=new_w))
            return new_w

        started = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(aggregator(), *(client(i, c) for i, c in enumerate(CLIENTS))), 120)
        elapsed = time.monotonic() - started
    finally:
        for channel in channels.values():
            await channel.close()
        for bus in buses.values():
            await bus.stop()

    expected = _exact_fedavg([(sent[c], rows[c]) for c in CLIENTS])
    aggregated, *finals = results
    _assert_identical(aggregated, expected)
    for final in finals:
        _assert_identical(final, expected)
    assert elapsed < 90, f"one round of a 25M-parameter model took {elapsed:.0f} s over Kafka"
