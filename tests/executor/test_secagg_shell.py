"""Stage messages survive the trip through a RoundMessage and the wire codec, signature intact."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from services.executor.federation.transcript import RoundSetup
from services.executor.ml.aggregation import weighted_average
from services.executor.secagg import KeyRing, RoundContext, Stage
from services.executor.secagg.messages import check, signed
from services.executor.secagg.shell import (ClientSession, from_round_message, requested_threshold, server_round,
                                            to_round_message)
from services.executor.transport import RoundChannel, split
from shared.errors import MalformedMessage
from shared.events import AlgorithmTaskSpec, RoundKind
from shared.wire import codec

TASK = AlgorithmTaskSpec(algo_task_id="f.train.a", task_id="f.train", flow_id="f", step="train",
                         algorithm="ferry.fedavg", version="1", params={}, party="a", role="client", peers=())
CTX = RoundContext("f", "f.train", "train", 2, 1)


def _channel():
    return RoundChannel(bus=None, task=TASK, publisher=None)


def test_a_signed_stage_message_round_trips_through_the_codec_and_chunking():
    ring = KeyRing.generate("a")
    message = signed(CTX, ring, Stage.MASKED, "agg", {"u3": ["a", "b"]}, {"y": bytes(range(256)) * 8, "z": b""})
    wire = to_round_message(_channel(), 2, message)
    assert wire.kind == RoundKind.SECAGG and json.loads(wire.body)["signature"] == message.signature.hex() and wire.recipient == "agg"
    chunks = split(wire, 300)
    assert len(chunks) > 1  # large blobs take the transport's chunked path like any payload
    back = from_round_message(codec.round_message_from_bytes(codec.round_message_to_bytes(wire)))
    assert back == message
    check(CTX, back, ring.public)


def test_unreadable_secagg_messages_are_malformed():
    wire = to_round_message(_channel(), 2, signed(CTX, KeyRing.generate("a"), Stage.MASKED, "agg"))
    with pytest.raises(MalformedMessage, match="unreadable body"):
        from_round_message(dataclasses.replace(wire, body=b"{not json"))
    with pytest.raises(MalformedMessage, match="unreadable body"):
        from_round_message(dataclasses.replace(wire, body=b'{"stage": "nope", "header": {}}'))
    bad = dataclasses.replace(wire, tensors=(SimpleNamespace(name="y", dtype="<u4", shape=(1,), data=b"abcd"),))
    with pytest.raises(MalformedMessage, match="flat uint8"):
        from_round_message(bad)


def test_min_clients_is_a_floor_on_the_threshold():
    assert requested_threshold({"min_clients": 3}, 3) == 3
    assert requested_threshold({"min_clients": 1, "secagg_threshold": 4}, 5) == 4
    assert requested_threshold({"min_clients": 1}, 10) == 6                                        # > n/2
    assert requested_threshold({"min_clients": 1, "secagg_threshold_fraction": 2 / 3}, 9) == 7      # > 2n/3
    assert requested_threshold({"min_clients": 1, "secagg_threshold_fraction": 0.9}, 9) == 7       # capped at 2/3


# --- the shell's round loop over an in-process hub, with a client lost mid-round ------------------

class _Hub:
    def __init__(self, parties):
        self.queues = {p: asyncio.Queue() for p in parties}


class _Channel:
    """RoundChannel's interface over a hub; every message goes through the wire codec."""

    def __init__(self, hub, party, drop_stages=()):
        self.hub, self.party, self.drop_stages = hub, party, set(drop_stages)
        self._factory = RoundChannel(None, dataclasses.replace(TASK, party=party), None)
        self.silent = False

    def message(self, *args, **kwargs):
        return self._factory.message(*args, **kwargs)

    async def send(self, message):
        if message.kind == RoundKind.SECAGG and from_round_message(message).stage.value in self.drop_stages:
            self.silent = True  # this client falls over here and says nothing more
        if self.silent:
            return
        wire = codec.round_message_to_bytes(message)
        for party, queue in self.hub.queues.items():
            if party != self.party and message.recipient in ("", party):
                queue.put_nowait(codec.round_message_from_bytes(wire))

    async def receive(self, timeout_s):
        try:
            return await asyncio.wait_for(self.hub.queues[self.party].get(), timeout_s)
        except asyncio.TimeoutError:
            return None


def _ctx(party, params):
    log = SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None)
    return SimpleNamespace(params=params, task=dataclasses.replace(TASK, party=party), log=log,
                           clock=SimpleNamespace(monotonic=time.monotonic), check_stop=lambda: None)


async def _secure_round(clients, params, dropped, counts):
    """One server_round over the hub, `dropped` falling over after sharing keys; the decoded
    average and the exact weighted average of the others."""
    hub = _Hub(("agg",) + clients)
    rings = KeyRing.federation(("agg",) + clients)
    global_w = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}
    local = {c: {k: v + 0.1 * (i + 1) for k, v in global_w.items()} for i, c in enumerate(clients)}

    async def client(party, channel):
        session = ClientSession(_ctx(party, params), channel, rings[party], "agg")
        while True:
            message = await channel.receive(2.0 + 2 * params["round_timeout_s"])  # outlive a stage's wait
            if message is None:
                return
            if message.kind == RoundKind.ANNOUNCE:
                await session.start(message, RoundSetup.from_body(message.body), local[party], global_w,
                                    counts[party], 0.5)
            elif message.kind == RoundKind.SECAGG:
                await session.handle(message)

    tasks = [asyncio.create_task(client(c, _Channel(hub, c, ("masked",) if c in dropped else ())))
             for c in clients]
    decoded = await server_round(_ctx("agg", params), _Channel(hub, "agg"), rings["agg"], round=2,
                                 sampled=clients, global_w=global_w, shape={"n_features": 3.0, "n_classes": 2.0},
                                 joined={c: {"num_examples": float(n)} for c, n in counts.items()}, clients=clients)
    for task in tasks:
        task.cancel()
    return decoded, weighted_average([(local[c], counts[c]) for c in clients if c not in dropped])


async def test_server_round_survives_a_client_lost_after_sharing_keys():
    clients = ("a", "b", "c")
    decoded, exact = await _secure_round(clients, {"round_timeout_s": 0.5, "min_clients": 2}, {"c"},
                                         {"a": 100, "b": 300, "c": 200})
    assert decoded.clients == 2
    for k in exact:
        assert np.allclose(decoded.average[k], exact[k], atol=1e-7)
    assert decoded.loss == pytest.approx(0.5, abs=1e-7)


async def test_server_round_over_the_sparse_graph_with_a_dropout():
    """secagg_graph: sparse through the shell: the aggregator and every client build the same graph from
    the signed setup (a client given another one would refuse its KEYS), and the sum comes out exact."""
    clients = tuple(f"p{i:02d}" for i in range(16))
    params = {"round_timeout_s": 4.0, "min_clients": 16, "secagg_graph": "sparse"}  # 16 clients share one loop
    assert requested_threshold(params, 16) == 7 < requested_threshold({**params, "secagg_graph": "full"}, 16)
    decoded, exact = await _secure_round(clients, params, {"p03"}, {c: 100 + i for i, c in enumerate(clients)})
    assert decoded.clients == 15
    for k in exact:
        assert np.allclose(decoded.average[k], exact[k], atol=1e-6)
