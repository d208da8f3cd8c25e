"""The aggregator's side of one secure round, as pure steps over a frozen state.

    state = server_start(ctx, keyring, sampled, length)
    state = server_receive(state, message)      # collect one client message of the open stage
    state, out = server_advance(state)          # close the stage (all answered, or the deadline)
    total, survivors = server_result(state)     # after UNMASK: sum of the survivors' codes mod 2^32

Stages it collects, with the set each one defines:
    ADVERTISE -> U1 -> KEYS      SHARES -> U2 -> SHARES_IN     MASKED -> U3 -> SURVIVORS
    CONSISTENCY -> U4 -> SIGNATURES                            UNMASK -> U5 -> result
Every set must reach t, or the round fails (TooFewClients). The server only
ever holds masked inputs; it learns b_v for v in U3 and s_v for v in U2 \\ U3,
which together reveal only the sum.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from . import shamir
from .client import share_indices
from .crypto import RoundContext, pair_mask, seed_commitment, self_mask, x25519_public
from .errors import LateMessage, ProtocolViolation, TooFewClients, UntrustedKey
from .graph import FULL, neighbourhoods
from .keys import KeyRing
from .messages import Signed, Stage, check, signed, threshold_for

_NEXT = {Stage.ADVERTISE: Stage.SHARES, Stage.SHARES: Stage.MASKED, Stage.MASKED: Stage.CONSISTENCY,
         Stage.CONSISTENCY: Stage.UNMASK, Stage.UNMASK: Stage.DONE}


@dataclass(frozen=True, eq=False)
class ServerState:
    ctx: RoundContext
    keyring: KeyRing = field(repr=False)
    sampled: tuple[str, ...]
    length: int                                   # words in every masked vector
    requested_threshold: int | None = None
    collecting: Stage = Stage.ADVERTISE
    inbox: Mapping[str, Signed] = field(default_factory=dict, repr=False)   # the open stage's messages
    identities: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    adverts: Mapping[str, Signed] = field(default_factory=dict, repr=False)  # U1
    threshold: int = 0
    shares: Mapping[str, Signed] = field(default_factory=dict, repr=False)   # U2
    masked: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)  # U3
    u3: tuple[str, ...] = ()
    total: np.ndarray | None = field(default=None, repr=False)
    graph: Mapping[str, frozenset[str]] | None = field(default=None, repr=False)  # SecAgg+; None: full

    @property
    def me(self) -> str:
        return self.keyring.party

    def side(self, party: str, parties) -> set[str]:
        """Those of `parties` that `party` deals with: itself and its neighbours (all in the full graph)."""
        return set(parties) if self.graph is None else set(parties) & (self.graph[party] | {party})

    def indices(self) -> dict[str, int]:
        return share_indices(self.adverts if self.graph is None else self.sampled)

    def expected(self) -> frozenset[str]:
        """Who may still answer the open stage."""
        return {Stage.ADVERTISE: frozenset(self.sampled), Stage.SHARES: frozenset(self.adverts),
                Stage.MASKED: frozenset(self.shares), Stage.CONSISTENCY: frozenset(self.u3),
                Stage.UNMASK: frozenset(self.u3), Stage.DONE: frozenset()}[self.collecting]

    def complete(self) -> bool:
        return set(self.inbox) >= self.expected()


def server_start(ctx: RoundContext, keyring: KeyRing, sampled, length: int,
                 threshold: int | None = None, graph: str = FULL) -> ServerState:
    """`sampled` is the signed cohort; graph="sparse" builds the SecAgg+ graph over it."""
    sampled = tuple(sorted(sampled))
    nbrs = None if graph == FULL else neighbourhoods(graph, sampled, ctx.info("graph"))
    return ServerState(ctx, keyring, sampled, int(length), threshold, graph=nbrs)


def server_receive(state: ServerState, message: Signed) -> ServerState:
    if message.recipient != state.me:
        raise ProtocolViolation(f"{message.stage.value} from {message.sender} is addressed to {message.recipient!r}")
    if message.stage is not state.collecting:
        raise LateMessage(f"{message.stage.value} from {message.sender} while collecting {state.collecting.value}")
    if message.sender not in state.expected():
        raise ProtocolViolation(f"{message.sender} is not expected in {message.stage.value} "
                                f"of round {state.ctx.round}")
    try:
        return _receive(state, message)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Missing fields, bad hex, bad key bytes: whoever sent it, it must not crash the aggregator.
        raise ProtocolViolation(f"malformed {message.stage.value} from {message.sender}: {exc!r}") from exc


def _receive(state: ServerState, message: Signed) -> ServerState:
    if message.stage is Stage.ADVERTISE:
        identity = state.keyring.accept(message.sender, bytes.fromhex(message.header["identity"]))
        check(state.ctx, message, identity)
        if state.identities.get(message.sender, identity) != identity:
            raise UntrustedKey(f"{message.sender} advertised before under another identity key: "
                               f"the first one stands")
        for name in ("c_pk", "s_pk"):  # decodable now, so that unmasking cannot fail on them later
            X25519PublicKey.from_public_bytes(bytes.fromhex(message.header[name]))
        # Before KEYS goes out a client may advertise again under the same identity (a redelivery,
        # a restart with a PKI key): the latest wins.
        return dataclasses.replace(state, inbox={**state.inbox, message.sender: message},
                                   identities={**state.identities, message.sender: identity})
    if message.sender in state.inbox:
        return state  # after ADVERTISE the first message stands: a second one could equivocate
    check(state.ctx, message, state.identities[message.sender])
    _validate(state, message)
    return dataclasses.replace(state, inbox={**state.inbox, message.sender: message})


def _validate(state: ServerState, m: Signed) -> None:
    if m.stage is Stage.SHARES and set(m.blobs) != state.side(m.sender, state.adverts) - {m.sender}:
        raise ProtocolViolation(f"{m.sender} sent shares for {sorted(m.blobs)}, expected every other member of U1 "
                                f"{'among its neighbours' if state.graph is not None else ''}")
    if m.stage is Stage.SHARES and not re.fullmatch(r"[0-9a-f]{64}", str(m.header.get("b_commit", ""))):
        raise ProtocolViolation(f"{m.sender} sent shares without a commitment to its self-mask seed")
    if m.stage is Stage.MASKED and len(m.blobs.get("y", b"")) != 4 * state.length:
        raise ProtocolViolation(f"{m.sender}'s masked vector has {len(m.blobs.get('y', b''))} bytes, "
                                f"expected {4 * state.length}")
    if m.stage is Stage.CONSISTENCY and tuple(m.header.get("u3", ())) != state.u3:
        raise ProtocolViolation(f"{m.sender} signed survivors {m.header.get('u3')}, not {list(state.u3)}")
    if m.stage is Stage.UNMASK:
        dropped = state.side(m.sender, state.shares) - set(state.u3)
        wanted = {f"b/{v}" for v in state.side(m.sender, state.u3)} | {f"s/{v}" for v in dropped}
        both = {name[2:] for name in m.blobs if name.startswith("b/")} & {name[2:] for name in m.blobs
                                                                           if name.startswith("s/")}
        if both:
            raise ProtocolViolation(f"{m.sender} revealed both shares of {sorted(both)}: refused unread")
        if set(m.blobs) != wanted:
            raise ProtocolViolation(f"{m.sender} unmasked {sorted(m.blobs)}, expected {sorted(wanted)}")


def server_advance(state: ServerState) -> tuple[ServerState, list[Signed]]:
    """Close the open stage with the clients that answered; the next stage's messages."""
    stage, got = state.collecting, dict(sorted(state.inbox.items()))
    if stage is Stage.DONE:
        raise ProtocolViolation("the round is already done")
    if stage is not Stage.ADVERTISE:
        need = state.threshold
    elif state.graph is None:
        need = threshold_for(len(got), state.requested_threshold)
    else:   # relative to the neighbourhood, as every client computes it
        need = threshold_for(len(next(iter(state.graph.values()))) + 1, state.requested_threshold)
    if len(got) < need:
        raise TooFewClients(f"round {state.ctx.round}: {len(got)} clients ({sorted(got)}) answered "
                            f"{stage.value}, the threshold is {need}")
    state = dataclasses.replace(state, collecting=_NEXT[stage], inbox={})
    ctx, ring = state.ctx, state.keyring
    if stage is Stage.ADVERTISE:
        entries = {p: {**m.header, "signature": m.signature.hex()} for p, m in got.items()}
        state = dataclasses.replace(state, adverts=got, threshold=need)
        if state.graph is None:
            return state, [signed(ctx, ring, Stage.KEYS, "", {"clients": entries, "threshold": need,
                                                              "server_identity": ring.public.hex()})]
        # SecAgg+: each client gets its own neighbourhood's keys only (O(log n) entries)
        return state, [signed(ctx, ring, Stage.KEYS, v, {"clients": {p: entries[p] for p in sorted(state.side(v, got))},
                                                         "threshold": need, "server_identity": ring.public.hex()})
                       for v in got]
    if stage is Stage.SHARES:
        state = dataclasses.replace(state, shares=got)
        return state, [signed(ctx, ring, Stage.SHARES_IN, v, {}, {u: got[u].blobs[v] for u in got
                                                                  if u != v and v in got[u].blobs})
                       for v in got]
    if stage is Stage.MASKED:
        masked = {p: np.frombuffer(m.blobs["y"], dtype="<u4").astype(np.uint32) for p, m in got.items()}
        state = dataclasses.replace(state, masked=masked, u3=tuple(masked))
        return state, [signed(ctx, ring, Stage.SURVIVORS, "", {"u3": list(state.u3)})]
    if stage is Stage.CONSISTENCY:
        sigs = {p: m.signature.hex() for p, m in got.items()}
        return state, [signed(ctx, ring, Stage.SIGNATURES, "", {"u3": list(state.u3), "signatures": sigs})]
    return dataclasses.replace(state, total=_unmask(state, got)), []


def _collect(state: ServerState, unmask: Mapping[str, Signed], kind: str, owner: str) -> list[shamir.Share]:
    xs = state.indices()
    shares = []
    for holder, m in unmask.items():
        if f"{kind}/{owner}" not in m.blobs:   # sparse graph: not one of owner's neighbours
            continue
        share = shamir.Share.from_bytes(m.blobs[f"{kind}/{owner}"])
        if share.x != xs[holder]:
            raise ProtocolViolation(f"{holder} sent a share with index {share.x}, it holds index {xs[holder]}")
        shares.append(share)
    return shares


def _unmask(state: ServerState, unmask: Mapping[str, Signed]) -> np.ndarray:
    ctx, n, t = state.ctx, state.length, state.threshold
    total = np.zeros(n, dtype=np.uint32)
    for y in state.masked.values():
        total += y                                   # uint32 arithmetic: mod 2^32
    for v in state.u3:                               # survivors: remove their self masks
        b_seed = _committed_seed(state, _enough(state, _collect(state, unmask, "b", v), v), v)
        total -= self_mask(b_seed, ctx, v, n)
    public_s = {p: bytes.fromhex(m.header["s_pk"]) for p, m in state.adverts.items()}
    for d in sorted(set(state.shares) - set(state.u3)):  # dropped after sharing: remove their pair masks
        s_sk = shamir.reconstruct(_enough(state, _collect(state, unmask, "s", d), d), t)
        if x25519_public(s_sk) != public_s[d]:
            raise ProtocolViolation(f"the mask key rebuilt for dropped client {d} does not match its "
                                    f"advertised key: some client sent a bad share")
        for v in sorted(state.side(d, state.u3)):      # v masked with d only if they are neighbours
            mask = pair_mask(s_sk, public_s[v], ctx, d, v, n)
            if v < d:   # undo v's +PRG (d > v) or -PRG (d < v)
                total -= mask
            else:
                total += mask
    return total


def _enough(state: ServerState, shares: list[shamir.Share], owner: str) -> list[shamir.Share]:
    if len(shares) < state.threshold:
        raise TooFewClients(f"round {state.ctx.round}: {len(shares)} shares of {owner}'s secret came back, "
                            f"the threshold is {state.threshold}: its mask cannot be removed")
    return shares


MAX_SUBSETS = 256   # robust reconstruction: t-subsets tried when some share is corrupt


def _committed_seed(state: ServerState, shares: list[shamir.Share], owner: str) -> bytes:
    """v's self-mask seed, checked against the commitment v signed at share time.

    With more than t shares, a corrupt one is outvoted: the first t-subset whose
    secret matches the commitment wins (bounded search); the holders left out are named.
    """
    commitment = state.shares[owner].header["b_commit"]
    t = state.threshold
    for tried, subset in enumerate(itertools.combinations(sorted(shares, key=lambda s: s.x), t)):
        if tried >= MAX_SUBSETS:
            break
        try:
            seed = shamir.reconstruct(list(subset), t)
        except ProtocolViolation:
            continue
        if seed_commitment(seed, state.ctx, owner) == commitment:
            return seed
    raise ProtocolViolation(f"the self-mask shares of {owner} do not rebuild the seed it committed to: "
                            f"some client sent a corrupted share (index one of {sorted(s.x for s in shares)})")


def server_result(state: ServerState) -> tuple[np.ndarray, tuple[str, ...]]:
    if state.total is None:
        raise ProtocolViolation(f"round {state.ctx.round} is still collecting {state.collecting.value}")
    return state.total, state.u3
