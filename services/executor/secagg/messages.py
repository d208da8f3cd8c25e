"""Stage messages: what the pure core consumes and produces.

A `Signed` message is the protocol's unit: a stage name, sender, recipient
("" = every client), a small JSON header (party lists, public keys in hex)
and named binary blobs (ciphertexts, shares, the masked vector). The
signature covers all of it plus the RoundContext, so a message replayed into
another round, attempt, stage or to another recipient fails verification.
The shell maps it one-to-one onto a RoundMessage of kind SECAGG.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from .crypto import RoundContext, message_digest, sign, verify
from .keys import KeyRing


class Stage(str, enum.Enum):
    # client -> server
    ADVERTISE = "advertise"       # c_pk, s_pk, identity key
    SHARES = "shares"             # {recipient: AES-GCM(share of b, share of s_sk)}
    MASKED = "masked"             # y = codes + PRG(b) +- PRG(s_uv), uint32
    CONSISTENCY = "consistency"   # signature over the survivor list U3
    UNMASK = "unmask"             # shares of b (survivors) or of s_sk (dropped), never both
    # server -> clients
    KEYS = "keys"                 # every advertisement of U1, threshold
    SHARES_IN = "shares_in"       # the ciphertexts addressed to one client
    SURVIVORS = "survivors"       # U3: whose masked input arrived
    SIGNATURES = "signatures"     # U3 and at least t clients' signatures on it
    DONE = "done"                 # state marker only: nothing more to collect or answer


@dataclass(frozen=True)
class Signed:
    stage: Stage
    sender: str
    recipient: str
    header: Mapping[str, Any] = field(default_factory=dict)
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    signature: bytes = b""

    def digest(self, ctx: RoundContext) -> bytes:
        return message_digest(ctx, self.stage.value, self.sender, self.recipient, self.header, self.blobs)


def signed(ctx: RoundContext, keyring: KeyRing, stage: Stage, recipient: str,
           header: Mapping[str, Any] | None = None, blobs: Mapping[str, bytes] | None = None) -> Signed:
    unsigned = Signed(stage, keyring.party, recipient, dict(header or {}), dict(blobs or {}))
    return Signed(stage, keyring.party, recipient, unsigned.header, unsigned.blobs,
                  sign(keyring.identity, unsigned.digest(ctx)))


def check(ctx: RoundContext, message: Signed, identity: bytes) -> None:
    """Raises BadSignature unless `identity` signed exactly this message in this round."""
    verify(identity, message.signature, message.digest(ctx),
           f"{message.stage.value} message from {message.sender} in round {ctx.round}")


def threshold_for(n: int, requested: int | None = None) -> int:
    """t for a round whose key list U1 has n clients; server and clients compute it alike.

    Default: a strict majority, and never below 2 (a sum of one input is that
    input). A majority is what makes the consistency check meaningful: two
    different survivor lists cannot both collect t signatures from honest
    clients, who sign once. Against clients that collude with the server,
    Bonawitz et al. require t > 2n/3: raise `requested` for that model.
    """
    from .errors import TooFewClients

    if n < 2:
        raise TooFewClients(f"secure aggregation needs at least 2 clients, {n} took part")
    t = max(2, n // 2 + 1) if requested is None else max(int(requested), n // 2 + 1, 2)
    if t > n:
        raise TooFewClients(f"threshold t={t} exceeds the {n} clients that took part")
    return t
