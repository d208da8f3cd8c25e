"""The pure protocol: a simulated aggregator and clients exchanging Signed messages directly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.executor.secagg import (BadCiphertext, BadSignature, KeyRing, LateMessage, ProtocolViolation,
                                      RoundContext, Stage, TooFewClients, UntrustedKey, client_start, client_step,
                                      server_advance, server_receive, server_result, server_start, threshold_for)
from services.executor.secagg.crypto import self_mask
from services.executor.secagg.messages import signed

CTX = RoundContext("flow-1", "flow-1.train", "train", 3, 1)
NAMES = ("a", "b", "c", "d", "e")
LENGTH = 257


class Sim:
    """Delivers every message at once; `drop` names, per client stage, who falls silent from then on."""

    def __init__(self, names=NAMES, *, drop=None, threshold=None, seed=0, graph="full"):
        rng = np.random.default_rng(seed)  # test inputs only; nothing secret comes from numpy
        self.codes = {n: rng.integers(0, 2 ** 32, LENGTH, dtype=np.uint32) for n in names}
        self.rings = KeyRing.federation(("agg",) + tuple(names))
        self.server = server_start(CTX, self.rings["agg"], names, LENGTH, threshold, graph=graph)
        self.drop, self.dead, self.sent = drop or {}, set(), []
        self.clients, self.first = {}, {}
        for n in names:
            self.clients[n], out = client_start(CTX, n, "agg", self.rings[n], self.codes[n], threshold=threshold,
                                                cohort=names if graph != "full" else None, graph=graph)
            self.first[n] = self.clients[n]
            self.to_server(n, out)

    def to_server(self, sender, messages):
        for m in messages:
            if sender in self.drop.get(m.stage, ()) or sender in self.dead:
                self.dead.add(sender)
                continue
            self.sent.append(m)  # what reached the aggregator
            self.server = server_receive(self.server, m)

    def advance(self):
        self.server, out = server_advance(self.server)
        return out

    def deliver(self, out):
        for m in out:
            for n in sorted(self.clients):
                if n not in self.dead and m.recipient in ("", n):
                    self.clients[n], replies = client_step(self.clients[n], m)
                    self.to_server(n, replies)

    def run(self):
        while self.server.collecting is not Stage.DONE:
            self.deliver(self.advance())
        return server_result(self.server)

    def expected(self, parties):
        return (sum(self.codes[n].astype(np.uint64) for n in parties) % 2 ** 32).astype(np.uint32)

    def of_stage(self, stage):
        return {m.sender: m for m in self.sent if m.stage is stage}


def test_masks_cancel_exactly_and_hide_each_input():
    sim = Sim()
    total, survivors = sim.run()
    assert survivors == NAMES
    assert np.array_equal(total, sim.expected(NAMES))
    for n, m in sim.of_stage(Stage.MASKED).items():
        y = np.frombuffer(m.blobs["y"], dtype="<u4")
        assert np.mean(y == sim.codes[n]) < 0.01


def test_pairwise_masks_sum_to_zero_mod_2_32():
    sim = Sim()
    sim.run()
    residue = np.zeros(LENGTH, dtype=np.uint32)
    for n, m in sim.of_stage(Stage.MASKED).items():
        y = np.frombuffer(m.blobs["y"], dtype="<u4").astype(np.uint32)
        residue += y - sim.codes[n] - self_mask(sim.first[n].b_seed, CTX, n, LENGTH)
    assert not residue.any()


@pytest.mark.parametrize("silent_at", [Stage.ADVERTISE, Stage.SHARES, Stage.MASKED])
def test_a_client_lost_before_its_masked_input_leaves_the_exact_sum_of_the_rest(silent_at):
    sim = Sim(drop={silent_at: {"c"}})
    total, survivors = sim.run()
    assert survivors == ("a", "b", "d", "e")
    assert np.array_equal(total, sim.expected(survivors))
    if silent_at is Stage.MASKED:  # c shared its keys and masked others' inputs: its mask key was rebuilt
        assert all("s/c" in m.blobs and "b/c" not in m.blobs for m in sim.of_stage(Stage.UNMASK).values())


@pytest.mark.parametrize("silent_at", [Stage.CONSISTENCY, Stage.UNMASK])
def test_a_client_lost_after_its_masked_input_is_still_in_the_sum(silent_at):
    sim = Sim(drop={silent_at: {"c"}})
    total, survivors = sim.run()
    assert survivors == NAMES and np.array_equal(total, sim.expected(NAMES))
    assert "c" not in sim.of_stage(Stage.UNMASK)


def test_two_dropouts_at_different_stages():
    sim = Sim(drop={Stage.MASKED: {"b"}, Stage.UNMASK: {"e"}})
    total, survivors = sim.run()
    assert survivors == ("a", "c", "d", "e") and np.array_equal(total, sim.expected(survivors))


def test_below_the_threshold_the_round_fails():
    sim = Sim(drop={Stage.MASKED: {"a", "b", "c"}})  # t = 3 of 5; two masked inputs left
    with pytest.raises(TooFewClients, match="2 clients .* answered masked, the threshold is 3"):
        sim.run()
    with pytest.raises(TooFewClients, match="at least 2 clients"):
        Sim(names=("a",)).run()


def test_never_both_shares_of_one_client_are_revealed():
    sim = Sim(drop={Stage.MASKED: {"d"}})
    sim.run()
    for m in sim.of_stage(Stage.UNMASK).values():
        b = {k[2:] for k in m.blobs if k.startswith("b/")}
        s = {k[2:] for k in m.blobs if k.startswith("s/")}
        assert b == {"a", "b", "c", "e"} and s == {"d"} and not b & s
    for n in ("a", "b", "c", "e"):
        assert sim.clients[n].revealed == {"a": "b", "b": "b", "c": "b", "e": "b", "d": "s"}
        assert sim.clients[n].expecting is Stage.DONE


def test_a_client_answers_unmask_once_per_round():
    sim = Sim()
    for _ in range(3):               # KEYS, SHARES_IN, SURVIVORS
        sim.deliver(sim.advance())
    signatures = sim.advance()  # CONSISTENCY closed: SIGNATURES
    sim.deliver(signatures)
    with pytest.raises(ProtocolViolation, match="expected done, got signatures"):
        client_step(sim.clients["a"], signatures[0])


def _until_survivors(sim):
    for _ in range(2):               # KEYS, SHARES_IN
        sim.deliver(sim.advance())
    return sim.advance()             # MASKED closed: the SURVIVORS message


def test_an_equivocating_server_cannot_get_both_shares():
    """The server tells a and b that c dropped (to get s_c) and the rest that c survived (to get b_c).
    Clients sign the survivor list they saw; a SIGNATURES message must show t signatures on it."""
    sim = Sim(names=("a", "b", "c", "d"))            # t = 3
    (honest,) = _until_survivors(sim)
    server, ring = sim.server, sim.server.keyring
    lie = signed(CTX, ring, Stage.SURVIVORS, "", {"u3": ["a", "b", "d"]})
    signatures = {}
    for n in ("a", "b"):
        sim.clients[n], (reply,) = client_step(sim.clients[n], lie)
        signatures[n] = reply.signature.hex()
    for n in ("c", "d"):
        sim.clients[n], (reply,) = client_step(sim.clients[n], honest)
        signatures[n] = reply.signature.hex()
    # Only two clients signed the lie: fewer than t.
    short = signed(CTX, ring, Stage.SIGNATURES, "", {"u3": ["a", "b", "d"],
                                                     "signatures": {n: signatures[n] for n in "ab"}})
    with pytest.raises(ProtocolViolation, match="need t=3"):
        client_step(sim.clients["a"], short)
    # Passing d's signature (on the honest list) off as one on the lie fails verification.
    forged = signed(CTX, ring, Stage.SIGNATURES, "", {"u3": ["a", "b", "d"],
                                                      "signatures": {n: signatures[n] for n in "abd"}})
    with pytest.raises(BadSignature, match="consistency message from d"):
        client_step(sim.clients["a"], forged)
    # Showing c the other list fails too.
    with pytest.raises(ProtocolViolation, match="refusing to unmask"):
        client_step(sim.clients["c"], forged)
    assert server is sim.server  # nothing above went through the honest server


def test_the_server_refuses_an_unmask_revealing_both_shares():
    sim = Sim(names=("a", "b", "c"))
    for _ in range(3):
        sim.deliver(sim.advance())
    (signatures,) = sim.advance()
    _, (reply,) = client_step(sim.clients["a"], signatures)
    greedy = signed(CTX, sim.first["a"].keyring, Stage.UNMASK, "agg", {},
                    {**reply.blobs, "s/b": reply.blobs["b/b"]})
    with pytest.raises(ProtocolViolation, match=r"revealed both shares of \['b'\]"):
        server_receive(sim.server, greedy)


def test_bad_signatures_and_tampered_ciphertexts_are_rejected():
    sim = Sim(names=("a", "b", "c"))
    advert = sim.of_stage(Stage.ADVERTISE)["a"]
    fresh = server_start(CTX, sim.rings["agg"], ("a", "b", "c"), LENGTH)
    with pytest.raises(BadSignature, match="advertise message from a"):
        server_receive(fresh, dataclasses.replace(advert, header={**advert.header, "c_pk": "00" * 32}))
    (keys,) = sim.advance()
    with pytest.raises(BadSignature, match="keys message from agg"):
        client_step(sim.clients["a"], dataclasses.replace(keys, header={**keys.header, "threshold": 3}))
    sim.deliver([keys])
    shares_in = {m.recipient: m for m in sim.advance()}
    to_a = shares_in["a"]
    flipped = bytearray(to_a.blobs["b"])
    flipped[-1] ^= 0x80
    tampered = signed(CTX, sim.server.keyring, Stage.SHARES_IN, "a", {}, {**to_a.blobs, "b": bytes(flipped)})
    with pytest.raises(BadCiphertext, match="share from b to a"):
        client_step(sim.clients["a"], tampered)
    replayed = dataclasses.replace(to_a, recipient="c")  # a's ciphertexts shown to c
    with pytest.raises(BadSignature):
        client_step(sim.clients["c"], replayed)


def test_a_message_from_another_round_does_not_verify():
    sim = Sim(names=("a", "b", "c"))
    (keys,) = sim.advance()
    round4 = dataclasses.replace(sim.clients["a"], ctx=dataclasses.replace(CTX, round=4))
    with pytest.raises(BadSignature, match="round 4"):
        client_step(round4, keys)


def test_pinned_keys_reject_an_unknown_identity():
    sim = Sim(names=("a", "b", "c"))
    pins = {n: KeyRing.generate(n).public for n in ("a", "b", "c")}  # a PKI that knows other keys
    pinned_server = server_start(CTX, KeyRing.generate("agg", pins), ("a", "b", "c"), LENGTH)
    with pytest.raises(UntrustedKey, match="a presented identity key"):
        server_receive(pinned_server, sim.of_stage(Stage.ADVERTISE)["a"])
    (keys,) = sim.advance()
    pinned_client = dataclasses.replace(sim.clients["a"], keyring=KeyRing.generate("a", {"agg": pins["a"]}))
    with pytest.raises(UntrustedKey, match="agg presented identity key"):
        client_step(pinned_client, keys)


def test_late_and_unexpected_messages_are_told_apart():
    sim = Sim(names=("a", "b", "c"))
    advert = sim.of_stage(Stage.ADVERTISE)["a"]
    sim.deliver(sim.advance())
    with pytest.raises(LateMessage, match="advertise from a while collecting shares"):
        server_receive(sim.server, advert)
    stranger = signed(CTX, KeyRing.generate("z"), Stage.SHARES, "agg", {}, {})
    with pytest.raises(ProtocolViolation, match="z is not expected"):
        server_receive(sim.server, stranger)


@pytest.mark.parametrize("n, requested, t", [(2, None, 2), (3, None, 2), (4, None, 3), (5, None, 3),
                                             (10, None, 6), (5, 4, 4), (5, 1, 3), (3, 3, 3)])
def test_threshold_rule(n, requested, t):
    assert threshold_for(n, requested) == t


def test_threshold_above_the_clients_fails():
    with pytest.raises(TooFewClients, match="exceeds"):
        threshold_for(3, 4)


def test_malformed_but_signed_messages_are_protocol_violations_not_crashes():
    sim = Sim(names=("a", "b", "c"))
    ring = sim.first["a"].keyring
    bad_key = signed(CTX, ring, Stage.ADVERTISE, "agg", {"c_pk": "00" * 31, "s_pk": "00" * 32,
                                                        "identity": ring.public.hex()})
    fresh = server_start(CTX, sim.rings["agg"], ("a", "b", "c"), LENGTH)
    with pytest.raises(ProtocolViolation, match="malformed advertise from a"):
        server_receive(fresh, bad_key)
    (keys,) = sim.advance()
    hollow = signed(CTX, sim.server.keyring, Stage.KEYS, "", {"server_identity": keys.header["server_identity"]})
    with pytest.raises(ProtocolViolation, match="malformed keys from agg"):
        client_step(sim.clients["a"], hollow)


def test_a_second_advertisement_under_another_identity_is_refused():
    sim = Sim(names=("a", "b", "c"))
    impostor = KeyRing.generate("a")
    _, (advert,) = client_start(CTX, "a", "agg", impostor, sim.codes["a"])
    with pytest.raises(UntrustedKey, match="a presented identity key"):
        server_receive(sim.server, advert)
    _, (again,) = client_start(CTX, "a", "agg", sim.first["a"].keyring, sim.codes["a"])
    assert server_receive(sim.server, again).inbox["a"] is again  # same identity, fresh keys: accepted
