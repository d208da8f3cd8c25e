"""Errors of the secure-aggregation protocol.

Each names what failed and who sent it, because the shell logs and drops a
bad message (an attacker on the bus must not be able to abort a round by
injecting garbage), while the server's own failures (too few clients) end
the round like a plain round that timed out.
"""

from __future__ import annotations

from shared.errors import FerryError


class SecAggError(FerryError):
    """Base of every secure-aggregation failure."""


class BadSignature(SecAggError):
    """A stage message whose Ed25519 signature does not verify under its sender's identity key."""


class UntrustedKey(SecAggError):
    """An identity key that differs from the one pinned for that party (the federation key registry)."""


class BadCiphertext(SecAggError):
    """An encrypted share that fails AES-GCM authentication: tampered, misdirected, or another round's."""


class ProtocolViolation(SecAggError):
    """A well-signed message that breaks the protocol: wrong stage, wrong set of parties, a second unmask."""


class LateMessage(ProtocolViolation):
    """A message for a stage that has already closed (a slow client); dropped, not alarming."""


class NotEnoughShares(SecAggError):
    """Fewer than t Shamir shares: the secret is information-theoretically hidden."""


class TooFewClients(SecAggError):
    """A stage closed with fewer than t clients (or fewer than 2): the round cannot finish securely."""

    exit_code = 4
