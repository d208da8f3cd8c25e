"""The I/O shell: moves signed stage messages between the pure core and a RoundChannel.

Every stage message travels as one RoundMessage of kind SECAGG: body = canonical
JSON {"stage", "header", "signature"} (the stage signature, over the RoundContext
and the transcript), one uint8 tensor per blob. The RoundMessage's own
`signature` field is the transport's (federation/signing.py), over the whole. Large blobs (masked vectors of big models) are
chunked by the transport like any other payload.

A message that fails verification is logged and dropped, never fatal: whoever
can write to the topic must not be able to abort a round. A client whose
messages stop is a dropout, which the protocol is built to survive.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import numpy as np

from services.executor.ml.privacy import privatize_update, secagg_range
from services.executor.ml.privacy_accounting import round_config
from shared.errors import MalformedMessage
from shared.events import RoundKind, RoundMessage, Tensor

from services.executor.federation.transcript import RoundSetup, cohort_threshold, setup_for

from .client import ClientState, client_start, client_step
from .crypto import RoundContext, canonical_json
from .encoding import DEFAULT_CLIP, Decoded, client_weight, decode_sum, encode_update, quant_config, vector_length
from .errors import LateMessage, SecAggError
from .keys import KeyRing
from .messages import Signed, Stage
from .server import server_advance, server_receive, server_result, server_start


def to_round_message(channel, round: int, message: Signed) -> RoundMessage:
    body = canonical_json({"stage": message.stage.value, "header": message.header,
                           "signature": message.signature.hex()})
    tensors = tuple(Tensor(name, "|u1", (len(blob),), bytes(blob)) for name, blob in message.blobs.items())
    base = channel.message(RoundKind.SECAGG, round, recipient=message.recipient, body=body)
    return dataclasses.replace(base, tensors=tensors)


def from_round_message(message: RoundMessage) -> Signed:
    try:
        decoded = json.loads(message.body)
        stage, header, signature = Stage(decoded["stage"]), decoded["header"], bytes.fromhex(decoded["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedMessage(f"secagg message from {message.sender}: unreadable body ({exc})") from exc
    if not isinstance(header, dict) or any(t.dtype != "|u1" or t.shape != (len(t.data),) for t in message.tensors):
        raise MalformedMessage(f"secagg message from {message.sender}: blobs must be flat uint8 tensors")
    return Signed(stage, message.sender, message.recipient, header,
                  {t.name: bytes(t.data) for t in message.tensors}, signature)


def round_context(task, round: int, attempt: int, transcript: str = "") -> RoundContext:
    return RoundContext(task.flow_id, task.task_id, task.step, int(round), int(attempt), transcript)


def clip_of(params: Mapping[str, Any]) -> float:
    return float(params.get("secagg_clip") or DEFAULT_CLIP)


def secure_clip(params: Mapping[str, Any], cohort: int) -> float:
    """The quantization range of a secure round: the flow's clip, widened for a DP noise share.
    Aggregator and clients both derive it from the flow's params, so a client can check the setup."""
    return secagg_range(clip_of(params), round_config(params, cohort), cohort)


def requested_threshold(params: Mapping[str, Any], cohort: int) -> int:
    """t is fixed by the cohort the aggregator committed to (the signed setup), not by who answered:
    above cohort/2 (up to 2/3 on request), at least min_clients and secagg_threshold. Clients get the
    same step params as the aggregator, so both sides compute the same t."""
    return cohort_threshold(params, cohort)


async def server_round(ctx, channel, keyring: KeyRing, *, round: int, sampled, global_w, shape,
                       joined: dict, clients, incarnations: dict | None = None) -> Decoded:
    """One secure round from ANNOUNCE to the decoded weighted average; raises TooFewClients.

    `incarnations` (client -> the id its JOIN carries) tells a restarted client from one that
    only said hello again after a quiet spell: only the first needs the ANNOUNCE resent; a
    second ANNOUNCE to the other would start a second session and void its first one."""
    p = {**ctx.params, "secure_aggregation": True}
    clip, timeout = secure_clip(p, len(sampled)), float(p["round_timeout_s"])
    scale = max([float(joined.get(c, {}).get("num_examples", 0.0)) for c in sampled] + [1.0])
    setup = setup_for(p, round=round, attempt=ctx.task.attempt, global_w=global_w, shape=shape, cohort=sampled,
                      clip=clip, weight_scale=scale)
    announce = channel.message(RoundKind.ANNOUNCE, round, arrays=global_w, body=setup.to_body(), metrics=shape)
    await channel.send(announce)
    state = server_start(round_context(ctx.task, round, ctx.task.attempt, setup.digest()), keyring, sampled,
                         vector_length(global_w), setup.threshold, graph=setup.graph)
    while state.collecting is not Stage.DONE:
        deadline = ctx.clock.monotonic() + timeout   # each stage gets the round timeout
        while not state.complete() and ctx.clock.monotonic() < deadline:
            message = await channel.receive(min(0.5, max(0.01, deadline - ctx.clock.monotonic())))
            ctx.check_stop()
            if message is None:
                continue
            if message.kind == RoundKind.JOIN and message.sender in clients:
                joined[message.sender] = dict(message.metrics)
                if incarnations is not None:
                    restarted = incarnations.get(message.sender) != message.body
                    incarnations[message.sender] = message.body
                    if not restarted:
                        continue
                # Restarted before advertising: ask again (as the plain path does). One that had
                # advertised lost its secrets with the restart; it is a dropout of this round.
                if (state.collecting is Stage.ADVERTISE and message.sender in sampled
                        and message.sender not in state.inbox):
                    await channel.send(dataclasses.replace(announce, recipient=message.sender))
            elif message.kind == RoundKind.SECAGG and message.round == round:
                try:
                    state = server_receive(state, from_round_message(message))
                except LateMessage as exc:
                    ctx.log.info("secagg.late_message", round=round, reason=str(exc))
                except (SecAggError, MalformedMessage) as exc:
                    ctx.log.warning("secagg.message_rejected", round=round, sender=message.sender, reason=str(exc))
        state, outgoing = server_advance(state)
        for out in outgoing:
            await channel.send(to_round_message(channel, round, out))
    total, survivors = server_result(state)
    return decode_sum(total, len(survivors), global_w, quant_config(clip, len(sampled)))


class ClientSession:
    """A client's secure round: started after local training, fed the aggregator's SECAGG messages."""

    def __init__(self, ctx, channel, keyring: KeyRing, aggregator: str):
        self.ctx, self.channel, self.keyring, self.aggregator = ctx, channel, keyring, aggregator
        self.state: ClientState | None = None

    async def start(self, announce: RoundMessage, setup: RoundSetup, weights, global_w, num_examples: int,
                    loss: float) -> None:
        """After check_setup: the setup's hash is bound into every key and signature of the round."""
        cohort = len(setup.cohort)
        cfg = quant_config(setup.clip, cohort)
        weight = client_weight(num_examples, setup.weight_scale)
        dp = round_config(self.ctx.params, cohort)  # from the flow's params, never from the aggregator
        if dp is not None:  # DP-FedAvg: unit weight, L2-clipped delta, plus a noise share if distributed
            weights, weight, loss = privatize_update(weights, global_w, dp, cohort), 1.0, 0.0
        codes = encode_update(weights, global_w, weight, loss, cfg)
        rctx = round_context(self.ctx.task, announce.round, announce.attempt, setup.digest())
        self.state, outgoing = client_start(rctx, self.keyring.party, self.aggregator, self.keyring, codes,
                                            threshold=setup.threshold, cohort=setup.cohort, graph=setup.graph)
        await self._send(outgoing)

    async def handle(self, message: RoundMessage) -> None:
        s = self.state
        if s is None or (message.round, message.attempt) != (s.ctx.round, s.ctx.attempt):
            return  # another round's (or a finished round's) message: nothing of ours to answer
        try:
            self.state, outgoing = client_step(s, from_round_message(message))
        except (SecAggError, MalformedMessage) as exc:
            self.ctx.log.warning("secagg.message_rejected", round=message.round, reason=str(exc))
            return
        await self._send(outgoing)
        if self.state.expecting is Stage.DONE:
            self.state = None  # forget this round's secrets as soon as they are spent

    async def _send(self, outgoing) -> None:
        for out in outgoing:
            await self.channel.send(to_round_message(self.channel, self.state.ctx.round, out))


def masked_vectors(messages) -> list[np.ndarray]:
    """The masked inputs among RoundMessages (for audits and tests): what the aggregator sees."""
    out = []
    for m in messages:
        if m.kind == RoundKind.SECAGG and json.loads(m.body).get("stage") == Stage.MASKED.value:
            out.append(np.frombuffer(next(t.data for t in m.tensors if t.name == "y"), dtype="<u4"))
    return out
