"""The aggregator's loop for `aggregation: async` (FedBuff; the math is federation/buffered.py).

Every joined client is always either training on a version it was sent (busy)
or being sent the newest one. Updates enter the buffer as they arrive; a full
buffer becomes the next version, which goes at once to every idle client.
Clients run exactly as in synchronous FedAvg: an ANNOUNCE of round r is "train
on version r - 1", signed with its round setup, answered once.

Checkpoints, progress and resume are the synchronous loop's (one version = one
round). What differs for users: the result depends on arrival order, so an
async run is not bit-reproducible; a resumed aggregator re-sends the newest
version to every client, and updates that were in its buffer are lost (their
clients train again).
"""

from __future__ import annotations

from services.executor.algorithms.step_peers import TrainingFailed
from services.executor.federation.buffered import (Buffer, BufferedUpdate, BufferPolicy, add, applied, averaged_model,
                                                   is_full, mean_staleness, too_stale)
from services.executor.federation.rounds import weighted_mean
from services.executor.federation.transcript import SetupRejected, setup_for
from services.executor.federation.updates import UpdateRejected, check_update
from shared.events import RoundKind


class BufferedRounds:
    def __init__(self, aggregation, state, global_w, shape, first_round: int):
        self.agg, self.ctx, self.channel, self.p = aggregation, aggregation.ctx, aggregation.channel, aggregation.p
        self.state, self.shape = state, shape
        self.policy = BufferPolicy(min(int(self.p["async_buffer_size"]), len(aggregation.joined)),
                                   int(self.p["async_max_staleness"]))
        self.buffer = Buffer(version=first_round - 1)
        self.models = {first_round - 1: global_w}  # the versions a client may still be training on
        self.losses: list[tuple[float, int]] = []
        self.busy: dict[str, int] = {}  # client -> the round it was announced and has not answered yet
        self.answered: dict[str, int] = {}  # client -> the last round it answered (it waits for a newer one)
        self._setups: dict[int, bytes] = {}

    async def run(self):
        ctx, p = self.ctx, self.p
        rounds, timeout = int(p["rounds"]), float(p["round_timeout_s"])
        started, before = ctx.clock.monotonic(), (self.channel.bytes_sent, self.channel.bytes_received)
        for client in sorted(self.agg.joined):
            await self._announce(client)
        deadline = ctx.clock.monotonic() + timeout
        while self.buffer.version < rounds:
            message = await self.channel.receive(min(0.5, max(0.01, deadline - ctx.clock.monotonic())))
            ctx.check_stop()
            if message is None:
                if ctx.clock.monotonic() >= deadline:
                    raise TrainingFailed(f"version {self.buffer.version + 1}: no update arrived within "
                                         f"round_timeout_s={timeout} (busy: {sorted(self.busy)})")
                continue
            if message.kind == RoundKind.JOIN and message.sender in self.agg.clients:
                await self._rejoined(message)
            elif message.kind == RoundKind.UPDATE and message.sender in self.agg.joined:
                deadline = ctx.clock.monotonic() + timeout
                await self._take(message)
                if is_full(self.buffer, self.policy):
                    await self._apply(started, before)
                    started, before = ctx.clock.monotonic(), (self.channel.bytes_sent, self.channel.bytes_received)
                for client in self._idle():
                    await self._announce(client)
            elif message.kind == RoundKind.UPDATE:
                self.channel.reject(message, "not_in_cohort", f"UPDATE from {message.sender}, which has not joined")
        return self.models[self.buffer.version]

    def _idle(self) -> list[str]:
        """Joined clients neither training nor done with the newest version (training on the same
        version twice would repeat a deterministic update, and clients answer a round once)."""
        newest = self.buffer.version + 1
        return [c for c in sorted(self.agg.joined) if c not in self.busy and self.answered.get(c, 0) < newest]

    async def _announce(self, client: str) -> None:
        version = self.buffer.version
        r = version + 1
        if r > int(self.p["rounds"]):
            return
        if r not in self._setups:
            try:
                setup = setup_for(self.p, round=r, attempt=self.ctx.task.attempt, global_w=self.models[version],
                                  shape=self.shape, cohort=sorted(self.agg.joined))
            except SetupRejected as exc:
                raise TrainingFailed(str(exc)) from exc
            self._setups = {r: setup.to_body()}  # older rounds are never announced again
        await self.channel.send(self.channel.message(RoundKind.ANNOUNCE, r, recipient=client,
                                                     arrays=self.models[version], metrics=self.shape,
                                                     body=self._setups[r]))
        self.busy[client] = r

    async def _rejoined(self, message) -> None:
        restarted = self.agg.incarnations.get(message.sender) != message.body
        self.agg.incarnations[message.sender] = message.body
        self.agg.joined[message.sender] = dict(message.metrics)
        if restarted:  # a new process lost whatever it was training on
            self.busy.pop(message.sender, None)
            await self._announce(message.sender)

    async def _take(self, message) -> None:
        p, sender, base = self.p, message.sender, message.round - 1
        if self.busy.get(sender) == message.round:
            del self.busy[sender]
        self.answered[sender] = max(self.answered.get(sender, 0), message.round)
        reason = too_stale(self.buffer.version, base, self.policy)
        if reason is None and any(u.sender == sender and u.base_version == base for u in self.buffer.updates):
            self.channel.reject(message, "second_update", f"{sender} already answered round {message.round}")
            return
        if reason is None and base not in self.models:
            reason = f"trained on version {base}, which this aggregator no longer holds"
        if reason is not None:
            self.channel.reject(message, "too_stale", f"{sender}: {reason}")
            return
        model = self.models[base]
        try:
            weights = check_update(message, model, self.agg.joined.get(sender, {}), p,
                                   weights=self.agg.weights_of(message, model))
        except UpdateRejected as exc:
            self.channel.reject(message, exc.reason, str(exc))
            await self.ctx.report(round=self.buffer.version + 1, total_rounds=int(p["rounds"]),
                                  stage=f"rejected update: {exc}"[:300])
            return
        delta = {k: weights[k] - model[k] for k in model}
        self.buffer = add(self.buffer, BufferedUpdate(sender, base, delta, message.num_examples))
        if "loss" in message.metrics:
            self.losses.append((float(message.metrics["loss"]), message.num_examples))

    async def _apply(self, started: float, before: tuple[int, int]) -> None:
        version = self.buffer.version
        global_w = self.models[version]
        self.state, new_w = self.agg.strategy.server_step(self.state, global_w, averaged_model(global_w, self.buffer))
        metrics = {"clients": float(len(self.buffer.updates)), "staleness_mean": mean_staleness(self.buffer)}
        if self.losses and not self.p.get("local_dp"):
            metrics["train_loss"] = weighted_mean(self.losses)
        self.buffer, self.losses = applied(self.buffer), []
        self.models[version + 1] = new_w
        for old in [v for v in self.models if v < version + 1 - self.policy.max_staleness]:
            del self.models[old]
        await self.agg.complete_round(version + 1, self.state, new_w, self.shape, metrics, started, before)
