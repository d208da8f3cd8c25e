"""The client's side of one secure round, as pure steps over a frozen state.

    state, [advertise] = client_start(ctx, me, server, keyring, codes)
    state, out = client_step(state, message)   # KEYS, SHARES_IN, SURVIVORS, SIGNATURES

Each step verifies the server's signature and every embedded client
signature, checks the party sets only shrink (U3 <= U2 <= U1, all >= t), and
answers with one signed message. Randomness (keys, the self-mask seed b,
Shamir coefficients, nonces) comes from the OS CSPRNG; it is the only effect.
The state never leaves the process; a client that restarts mid-round has lost
its secrets and is, to the protocol, a dropout.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from . import shamir
from .crypto import RoundContext, pair_mask, seed_commitment, self_mask, seal, share_key, unseal, x25519_pair
from .errors import ProtocolViolation
from .graph import FULL, degree, neighbourhoods
from .keys import KeyRing
from .messages import Signed, Stage, check, signed, threshold_for


@dataclass(frozen=True)
class PeerKeys:
    c_pk: bytes
    s_pk: bytes
    identity: bytes


@dataclass(frozen=True, eq=False)
class ClientState:
    ctx: RoundContext
    me: str
    server: str
    keyring: KeyRing = field(repr=False)
    codes: np.ndarray = field(repr=False)          # quantized input, uint32
    c_sk: bytes = field(repr=False)
    c_pk: bytes = field(repr=False)
    s_sk: bytes = field(repr=False)
    s_pk: bytes = field(repr=False)
    b_seed: bytes = field(repr=False)
    requested_threshold: int | None = None
    expecting: Stage = Stage.KEYS
    server_identity: bytes = b""
    peers: Mapping[str, PeerKeys] = field(default_factory=dict)            # U1
    threshold: int = 0
    held: Mapping[str, tuple[shamir.Share, shamir.Share]] = field(default_factory=dict, repr=False)
    u2: tuple[str, ...] = ()
    u3: tuple[str, ...] = ()
    revealed: Mapping[str, str] = field(default_factory=dict)  # party -> "b" | "s", once per round
    cohort: tuple[str, ...] | None = None   # the signed setup's cohort: U1 must stay inside it
    neighbours: frozenset[str] | None = None   # SecAgg+ sparse graph: the only peers (None: everyone)
    indices: Mapping[str, int] = field(default_factory=dict)   # sparse graph: Shamir x of each cohort member

    def my_side(self, parties) -> set[str]:
        """The parties of a server-wide set that this client deals with: itself and its neighbours."""
        return set(parties) if self.neighbours is None else set(parties) & (self.neighbours | {self.me})


def client_start(ctx: RoundContext, me: str, server: str, keyring: KeyRing, codes: np.ndarray, *,
                 threshold: int | None = None, cohort=None, graph: str = FULL,
                 randbytes=os.urandom) -> tuple[ClientState, list[Signed]]:
    """graph="sparse" (SecAgg+) needs the signed cohort: the graph is a function of it and the round."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint32 or codes.ndim != 1:
        raise ValueError(f"codes must be a 1-d uint32 array, got {codes.dtype} {codes.shape}")
    c_sk, c_pk = x25519_pair(randbytes)
    s_sk, s_pk = x25519_pair(randbytes)
    sparse = {}
    if graph != FULL:
        if cohort is None or me not in cohort:
            raise ValueError(f"the {graph} graph is built over the signed cohort, and {me} must be in it")
        degree(graph, len(cohort))  # an unknown graph name fails here, before any key is made
        sparse = {"neighbours": neighbourhoods(graph, cohort, ctx.info("graph"))[me],
                  "indices": share_indices(cohort)}
    state = ClientState(ctx, me, server, keyring, codes, c_sk, c_pk, s_sk, s_pk, randbytes(32), threshold,
                        cohort=tuple(cohort) if cohort is not None else None, **sparse)
    advert = signed(ctx, keyring, Stage.ADVERTISE, server,
                    {"c_pk": c_pk.hex(), "s_pk": s_pk.hex(), "identity": keyring.public.hex()})
    return state, [advert]


def client_step(state: ClientState, message: Signed) -> tuple[ClientState, list[Signed]]:
    if message.sender != state.server or message.recipient not in ("", state.me):
        raise ProtocolViolation(f"{message.stage.value} from {message.sender} to {message.recipient!r}: "
                                f"clients take stage messages from {state.server} only")
    if message.stage is not state.expecting:
        raise ProtocolViolation(f"{state.me} expected {state.expecting.value}, got {message.stage.value} "
                                f"in round {state.ctx.round}")
    try:
        if message.stage is Stage.KEYS:
            return _on_keys(state, message)
        check(state.ctx, message, state.server_identity)
        return {Stage.SHARES_IN: _on_shares, Stage.SURVIVORS: _on_survivors,
                Stage.SIGNATURES: _on_signatures}[message.stage](state, message)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Missing fields, bad hex, bad key bytes: whoever sent it, it must not crash the client.
        raise ProtocolViolation(f"malformed {message.stage.value} from {message.sender}: {exc!r}") from exc


def advertisement(server: str, party: str, entry: Mapping[str, str]) -> Signed:
    """Rebuild a client's ADVERTISE from its KEYS entry, to check its own signature."""
    header = {k: entry[k] for k in ("c_pk", "s_pk", "identity")}
    return Signed(Stage.ADVERTISE, party, server, header, {}, bytes.fromhex(entry["signature"]))


def _on_keys(state: ClientState, message: Signed) -> tuple[ClientState, list[Signed]]:
    ctx, me = state.ctx, state.me
    server_identity = state.keyring.accept(state.server, bytes.fromhex(message.header["server_identity"]))
    check(ctx, message, server_identity)
    entries: Mapping[str, Mapping[str, str]] = message.header["clients"]
    if state.cohort is not None and not set(entries) <= set(state.cohort):
        raise ProtocolViolation(f"the key list of round {ctx.round} names {sorted(set(entries) - set(state.cohort))}, "
                                f"outside the signed cohort {list(state.cohort)}")
    if state.my_side(entries) != set(entries):
        raise ProtocolViolation(f"the key list of round {ctx.round} names {sorted(set(entries) - state.my_side(entries))}, "
                                f"who are not {me}'s neighbours in the round's graph")
    peers = {}
    for party in sorted(entries):
        entry = entries[party]
        identity = state.keyring.accept(party, bytes.fromhex(entry["identity"]))
        check(ctx, advertisement(state.server, party, entry), identity)
        peers[party] = PeerKeys(bytes.fromhex(entry["c_pk"]), bytes.fromhex(entry["s_pk"]), identity)
    mine = peers.get(me)
    if mine is None or (mine.c_pk, mine.s_pk) != (state.c_pk, state.s_pk):
        raise ProtocolViolation(f"the key list of round {ctx.round} does not carry {me}'s own keys")
    if len({p.c_pk for p in peers.values()}) < len(peers) or len({p.s_pk for p in peers.values()}) < len(peers):
        raise ProtocolViolation("two clients advertise the same public key (a replayed advertisement)")
    if state.neighbours is None:
        t = threshold_for(len(peers), state.requested_threshold)
        xs = share_indices(peers)
    else:   # relative to the neighbourhood the graph fixed, not to who of it answered
        t = threshold_for(len(state.neighbours) + 1, state.requested_threshold)
        if len(peers) < t:
            raise ProtocolViolation(f"only {len(peers)} of {me}'s neighbourhood advertised keys, below t={t}")
        xs = {p: state.indices[p] for p in peers}
    if int(message.header["threshold"]) != t:
        raise ProtocolViolation(f"the server announces t={message.header['threshold']}, the rule gives t={t}")
    b_shares = shamir.split(state.b_seed, t, xs)
    s_shares = shamir.split(state.s_sk, t, xs)
    blobs = {}
    for v in peers:
        if v == me:
            continue
        plaintext = json.dumps({"sender": me, "recipient": v, "b": b_shares[v].to_bytes().hex(),
                                "s": s_shares[v].to_bytes().hex()}).encode()
        key = share_key(state.c_sk, peers[v].c_pk, ctx, me, v)
        blobs[v] = seal(key, plaintext, ctx.info("share", me, v))
    state = dataclasses.replace(state, expecting=Stage.SHARES_IN, server_identity=server_identity, peers=peers,
                                threshold=t, held={me: (b_shares[me], s_shares[me])})
    commitment = {"b_commit": seed_commitment(state.b_seed, ctx, me)}
    return state, [signed(ctx, state.keyring, Stage.SHARES, state.server, commitment, blobs)]


def share_indices(peers) -> dict[str, int]:
    """Shamir x of each client: its 1-based position in sorted U1 (the server computes it alike)."""
    return {party: i + 1 for i, party in enumerate(sorted(peers))}


def _on_shares(state: ClientState, message: Signed) -> tuple[ClientState, list[Signed]]:
    ctx, me = state.ctx, state.me
    u2 = tuple(sorted(set(message.blobs) | {me}))
    if not set(u2) <= set(state.peers):
        raise ProtocolViolation(f"shares from parties outside the key list: {sorted(set(u2) - set(state.peers))}")
    if len(u2) < state.threshold:
        raise ProtocolViolation(f"only {len(u2)} clients shared keys, below t={state.threshold}")
    my_x = share_indices(state.peers)[me] if state.neighbours is None else state.indices[me]
    held = dict(state.held)
    for u, blob in message.blobs.items():
        key = share_key(state.c_sk, state.peers[u].c_pk, ctx, u, me)
        plain = json.loads(unseal(key, blob, ctx.info("share", u, me), f"share from {u} to {me}"))
        if plain.get("sender") != u or plain.get("recipient") != me:
            raise ProtocolViolation(f"share from {u} names {plain.get('sender')} -> {plain.get('recipient')}")
        b, s = shamir.Share.from_bytes(bytes.fromhex(plain["b"])), shamir.Share.from_bytes(bytes.fromhex(plain["s"]))
        if b.x != my_x or s.x != my_x:
            raise ProtocolViolation(f"share from {u} is for index {b.x}, {me} holds index {my_x}")
        held[u] = (b, s)
    y = state.codes.astype("<u4")                                           # a copy: masked in place
    y += self_mask(state.b_seed, ctx, me, len(state.codes))                  # uint32: wraps mod 2^32
    for v in u2:
        if v == me:
            continue
        mask = pair_mask(state.s_sk, state.peers[v].s_pk, ctx, me, v, len(state.codes))
        if me < v:   # +PRG(s_uv) for v > u, -PRG(s_uv) for v < u: they cancel
            y += mask
        else:
            y -= mask
    state = dataclasses.replace(state, expecting=Stage.SURVIVORS, held=held, u2=u2)
    return state, [signed(ctx, state.keyring, Stage.MASKED, state.server, {}, {"y": y.tobytes()})]


def _on_survivors(state: ClientState, message: Signed) -> tuple[ClientState, list[Signed]]:
    u3 = tuple(message.header["u3"])
    if list(u3) != sorted(set(u3)) or not state.my_side(u3) <= set(state.u2):
        raise ProtocolViolation(f"survivor list {list(u3)} is not a sorted subset of U2 {list(state.u2)}")
    if state.cohort is not None and not set(u3) <= set(state.cohort):
        raise ProtocolViolation(f"survivor list {list(u3)} names parties outside the signed cohort")
    if state.me not in u3:
        raise ProtocolViolation(f"{state.me} is not among the survivors of round {state.ctx.round}")
    if len(state.my_side(u3)) < state.threshold:
        raise ProtocolViolation(f"only {len(state.my_side(u3))} survivors among {state.me}'s neighbourhood, "
                                f"below t={state.threshold}")
    state = dataclasses.replace(state, expecting=Stage.SIGNATURES, u3=u3)
    return state, [signed(state.ctx, state.keyring, Stage.CONSISTENCY, state.server, {"u3": list(u3)})]


def consistency_message(server: str, party: str, u3, signature: bytes) -> Signed:
    return Signed(Stage.CONSISTENCY, party, server, {"u3": list(u3)}, {}, signature)


def _on_signatures(state: ClientState, message: Signed) -> tuple[ClientState, list[Signed]]:
    if tuple(message.header["u3"]) != state.u3:
        raise ProtocolViolation(f"the server showed {state.me} survivors {list(state.u3)} but now claims "
                                f"{message.header['u3']}: refusing to unmask")
    signatures: Mapping[str, str] = message.header["signatures"]
    # Only signatures this client can check count: its neighbourhood's (everyone's in the full graph).
    mine = {p: sig for p, sig in signatures.items() if p in state.my_side(state.u3)}
    if not set(signatures) <= set(state.u3) or len(mine) < state.threshold:
        raise ProtocolViolation(f"{len(mine)} consistency signatures from {sorted(mine)} among {state.me}'s "
                                f"neighbourhood; need t={state.threshold} from survivors")
    for party, sig in mine.items():
        check(state.ctx, consistency_message(state.server, party, state.u3, bytes.fromhex(sig)),
              state.peers[party].identity)
    # Survivors' masked inputs are in the sum: reveal their self-mask seed b. Dropped
    # clients' are not: reveal their mask key s so the server can cancel the pairwise masks
    # it still holds. One or the other, never both: both would unmask that client.
    survivors, dropped = set(state.u2) & set(state.u3), set(state.u2) - set(state.u3)
    if survivors & dropped:  # cannot happen (U3 <= U2); checked because the stake is a client's privacy
        raise ProtocolViolation(f"{sorted(survivors & dropped)} would have both shares revealed")
    revealed = {v: "b" for v in survivors} | {v: "s" for v in dropped}
    blobs = {f"b/{v}": state.held[v][0].to_bytes() for v in sorted(survivors)}
    blobs |= {f"s/{v}": state.held[v][1].to_bytes() for v in sorted(dropped)}
    state = dataclasses.replace(state, expecting=Stage.DONE, revealed=revealed)
    return state, [signed(state.ctx, state.keyring, Stage.UNMASK, state.server, {}, blobs)]
