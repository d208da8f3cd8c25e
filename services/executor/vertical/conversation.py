"""The message layer of the vertical roles: a handshake, tagged sends, and waits for one
expected message, over the step's RoundChannel (its public API only).

Vertical protocols are sequences of specific messages (host's [[u]] for batch 7,
the arbiter's answer for batch 7, ...), not rounds of alike updates, so a role
asks for exactly the message it needs next; whatever else arrives meanwhile is
kept until asked for. A message is (sender, tag, seq): tag names its content
(in the body), seq its place (the round field: batch or stage number).

Start-up: a party hears only what is sent after it opened its channel, and
parties start in any order. Each sends `hello` once open; whoever hears a hello
answers `ack`; a party is ready once it heard either from every peer, and only
then sends protocol messages, so nothing is sent into the void.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from services.executor.transport import RoundChannel, from_tensors
from shared.errors import DataError, FerryError, TransientError
from shared.events import RoundKind

POLL_S = 0.5


class PeerAborted(FerryError):
    """Another party of the step gave up; its reason is in the message."""

    exit_code = 4


class Conversation:
    def __init__(self, ctx, channel: RoundChannel, peers: list[str], timeout_s: float):
        self.ctx, self.channel, self.peers, self.timeout_s = ctx, channel, sorted(peers), float(timeout_s)
        self.hello: dict[str, dict[str, float]] = {}
        self.sent_bytes = 0  # payload bytes this party sent (arrays), for the bench and the metrics
        self._kept: dict[tuple[str, str, int], tuple[dict[str, np.ndarray], dict[str, float]]] = {}

    @classmethod
    async def open(cls, ctx, peers: list[str], timeout_s: float) -> "Conversation":
        channel = await RoundChannel.for_role(ctx).open()
        return cls(ctx, channel, peers, timeout_s)

    async def close(self) -> None:
        await self.channel.close()

    async def handshake(self, info: Mapping[str, float] | None = None) -> dict[str, dict[str, float]]:
        """Wait until every peer is listening; returns what each said about itself in its hello."""
        info = dict(info or {})
        await self.channel.send(self.channel.message(RoundKind.JOIN, 0, metrics=info, body=b"hello"))
        deadline = self.ctx.clock.monotonic() + self.timeout_s
        while set(self.hello) < set(self.peers):
            message = await self._next(deadline, f"hello from {sorted(set(self.peers) - set(self.hello))}")
            if message is None or message.kind != RoundKind.JOIN:
                continue
            self.hello[message.sender] = dict(message.metrics)
            if message.body == b"hello":
                await self.channel.send(self.channel.message(RoundKind.JOIN, 0, recipient=message.sender,
                                                             metrics=info, body=b"ack"))
        return self.hello

    async def send(self, to: str | list[str], tag: str, seq: int, arrays: Mapping[str, np.ndarray] | None = None,
                   metrics: Mapping[str, float] | None = None) -> None:
        payload = sum(np.asarray(a).nbytes for a in (arrays or {}).values())
        for recipient in [to] if isinstance(to, str) else to:
            self.sent_bytes += payload
            await self.channel.send(self.channel.message(RoundKind.UPDATE, seq, recipient=recipient,
                                                         arrays=arrays, metrics=metrics, body=tag.encode()))

    async def expect(self, sender: str, tag: str, seq: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The (arrays, metrics) of `sender`'s message `tag` number `seq`; TransientError after timeout_s."""
        key = (sender, tag, seq)
        deadline = self.ctx.clock.monotonic() + self.timeout_s
        while key not in self._kept:
            await self._next(deadline, f"{tag} #{seq} from {sender}")
        return self._kept.pop(key)

    async def abort(self, reason: str) -> None:
        await self.channel.send(self.channel.message(RoundKind.ABORT, 0, body=reason.encode()[:2000]))

    async def _next(self, deadline: float, waiting_for: str):
        remaining = deadline - self.ctx.clock.monotonic()
        if remaining <= 0:
            raise TransientError(f"party {self.ctx.task.party} ({self.ctx.task.role}) waited "
                                 f"{self.timeout_s:g} s for {waiting_for}; no answer")
        message = await self.channel.receive(min(POLL_S, remaining))
        self.ctx.check_stop()
        if message is None or message.sender not in self.peers:
            return None
        if message.kind == RoundKind.ABORT:
            raise PeerAborted(f"{message.sender} aborted the step: {message.body.decode(errors='replace')}")
        if message.kind == RoundKind.JOIN:
            if message.body == b"hello" and message.sender in self.hello:  # a restarted peer
                raise TransientError(f"{message.sender} restarted mid-protocol; starting again from checkpoints")
            return message
        if message.kind == RoundKind.UPDATE:
            try:
                arrays = from_tensors(message.tensors)
            except FerryError as exc:
                raise DataError(f"{message.sender} sent a malformed {message.body!r}: {exc}") from exc
            self._kept.setdefault((message.sender, message.body.decode(errors="replace"), message.round),
                                  (arrays, dict(message.metrics)))
        return message
