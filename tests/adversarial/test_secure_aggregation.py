"""Attacks on secure aggregation: a racing key list, per-client transcripts, corrupted shares."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from services.demo import HOSPITALS
from services.executor.federation.identity import Identity, Trust
from services.executor.secagg import (BadSignature, KeyRing, ProtocolViolation, Stage, client_start, server_receive,
                                      server_start)
from services.executor.secagg.messages import signed
from services.executor.secagg.shamir import Share
from services.executor.secagg.shell import round_context, to_round_message
from shared.events import RoundKind
from tests.adversarial.harness import AGGREGATOR, prepare, round_messages, run_step
from tests.executor.test_secagg_protocol import CTX, LENGTH, Sim


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = tmp_path_factory.mktemp("secure-attacks")
    prepare(path)
    return path


def test_a_topic_writer_racing_the_aggregator_with_its_own_key_list_is_refused(work):
    """Before: clients took the aggregator's identity from the KEYS message itself, so a faster
    KEYS listing invented clients could make a client mask for the attacker. Now the coordinator's
    key comes from the registry: the forged KEYS never reaches the protocol."""
    params = {"secure_aggregation": True, "rounds": 2}

    async def attack(run):
        while not [m for m in round_messages(run) if m.kind == RoundKind.ANNOUNCE]:
            await asyncio.sleep(0.02)
        announce = next(m for m in round_messages(run) if m.kind == RoundKind.ANNOUNCE)
        mallory = KeyRing.generate(AGGREGATOR)
        invented = {p: KeyRing.generate(p) for p in ("sybil-1", "sybil-2")}
        entries = {p: {"c_pk": "11" * 32, "s_pk": "22" * 32, "identity": r.public.hex(), "signature": "00" * 64}
                   for p, r in invented.items()}
        ctx = round_context(run.specs[AGGREGATOR], 1, 1)
        keys = signed(ctx, mallory, Stage.KEYS, "", {"clients": entries, "threshold": 2,
                                                     "server_identity": mallory.public.hex()})
        forged = run.channel(AGGREGATOR, Trust(Identity(AGGREGATOR, mallory.identity), None))
        await forged.send(to_round_message(forged, announce.round, keys))

    run = asyncio.run(run_step(work, params=params, attack=attack, timeout_s=600))
    assert run.exit_codes == {p: 0 for p in run.specs}, run.exit_codes
    for party in HOSPITALS:
        assert [r["kind"] for r in run.rejections(party, "bad_signature")] == ["SECAGG"]
    assert run.final_metrics(AGGREGATOR)["test_accuracy"] > 0.9


def test_clients_shown_different_setups_cannot_complete_a_round():
    """An aggregator that gives each client its own model (and so its own signed setup) gets
    nothing: the transcript hash is bound into every signature, so the clients' key list no
    longer verifies for any of them."""
    names = ("a", "b", "c")
    rings = KeyRing.federation(("agg",) + names)
    contexts = {n: dataclasses.replace(CTX, transcript=f"setup-for-{n}") for n in names}
    server = server_start(contexts["a"], rings["agg"], names, LENGTH, 2)
    clients = {}
    for n in names:
        clients[n], out = client_start(contexts[n], n, "agg", rings[n], np.zeros(LENGTH, np.uint32), threshold=2)
        for m in out:
            try:
                server = server_receive(server, m)
            except BadSignature:
                pass  # b's and c's advertisements do not verify under a's transcript
    assert set(server.inbox) == {"a"}


def _corrupt(message, key: str):
    share = Share.from_bytes(message.blobs[key])
    blobs = {**message.blobs, key: Share(share.x, (share.y + 1) % (2 ** 521 - 1)).to_bytes()}
    return dataclasses.replace(message, blobs=blobs)  # signature unchanged: the client itself lies


def _a_corrupts_its_share_of_b(sim) -> None:
    """Client a sends the aggregator a wrong share of b's self-mask seed, properly signed."""
    original = sim.to_server

    def lying(sender, messages):
        out = []
        for m in messages:
            if sender == "a" and m.stage is Stage.UNMASK:
                bad = _corrupt(m, "b/b")
                m = signed(CTX, sim.rings["a"], Stage.UNMASK, "agg", bad.header, bad.blobs)
            out.append(m)
        original(sender, out)

    sim.to_server = lying


def test_a_corrupted_self_mask_share_is_caught_and_outvoted():
    """Before: a wrong share rebuilt a wrong seed and a garbage model, silently. Now the seed is
    checked against the commitment b signed when it shared it; with a share to spare, the
    honest t-subset wins and the sum is exact."""
    names = ("a", "b", "c", "d", "e")
    sim = Sim(names=names)
    _a_corrupts_its_share_of_b(sim)
    total, survivors = sim.run()
    assert np.array_equal(total, sim.expected(survivors))


def test_with_no_share_to_spare_a_corrupted_share_fails_the_round_loudly():
    names = ("a", "b", "c")  # t = 2; c falls silent at UNMASK, so exactly t shares arrive
    sim = Sim(names=names, drop={Stage.UNMASK: {"c"}})
    _a_corrupts_its_share_of_b(sim)
    with pytest.raises(ProtocolViolation, match="self-mask shares of b do not rebuild the seed it committed to"):
        sim.run()
