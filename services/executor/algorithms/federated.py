"""ferry.fedavg: federated training between clients and one aggregator, over round messages.

Aggregator: waits for clients to join, then for each round announces the
global model to a sample of clients, closes the round (all answered, or the
deadline with at least min_clients), aggregates with the chosen strategy and
checkpoints model + server state + round. After the last round it sends the
final model, collects each client's metrics on its held-out rows and reports
the weighted result. A resumed or retried aggregator continues after the
last checkpointed round; clients need no state between rounds (local
training is a deterministic function of global model, seed and round), so a
resumed flow ends with the same model as an uninterrupted one.

With params["secure_aggregation"], each round runs the stages of
services/executor/secagg instead of plain UPDATE messages: the aggregator
receives only masked, quantized, example-weighted deltas and learns their sum,
which it hands to the strategy's server_step. Only the averaging strategies
can do that; the robust ones need each client's model and are refused.

With params["dp"] (DP-FedAvg, services/executor/ml/privacy.py), updates are
clipped and noised before the strategy's server_step: by the aggregator
("central"), or by each client inside secure aggregation ("distributed").
Each round's privacy loss goes into a ledger checkpointed with the model and
is reported as dp_epsilon in the round's progress and the step's result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import numpy as np

from services.executor.algorithms.fedbuff import BufferedRounds
from services.executor.algorithms.party_data import load_party_arrays
from services.executor.algorithms.step_peers import TrainingFailed, aggregator_of, clients_of
from services.executor.federation.rounds import RoundOutcome, RoundPlan, round_outcome, sample_clients, weighted_mean
from services.executor.federation.transcript import (AnnounceGate, RoundSetup, SetupRejected, check_setup,
                                                     setup_for)
from services.executor.federation.updates import UpdateRejected, check_secure_sum, check_update, clip_update
from services.executor.memory import heap_kept_while_training, return_freed_memory
from services.executor.ml.aggregation import OrderedFold
from services.executor.ml.local_dp import local_epsilon
from services.executor.ml.compression import compress, decompress
from services.executor.ml.models import ModelSpec, build_model, get_weights, set_weights
from services.executor.ml.privacy import central_average, effective_noise_multiplier, noised_average
from services.executor.ml.privacy_accounting import PrivacyLedger, round_config
from services.executor.ml.strategies import make_strategy, state_from_arrays, state_to_arrays
from services.executor.ml.training import TrainConfig, evaluate, train_local, warm_up_torch
from services.executor.secagg import KeyRing, ProtocolViolation, TooFewClients
from services.executor.secagg.shell import ClientSession, secure_clip, server_round
from services.executor.transport import RoundChannel, from_tensors, payload_bytes
from shared.algorithms import RoleResult
from shared.errors import ConfigurationError, FerryError, MalformedMessage
from shared.events import RoundKind
from shared.metrics import ROUND_SECONDS

REJOIN_AFTER_S = 5.0


_clients, _aggregator = clients_of, aggregator_of


def _prefixed(prefix: str, arrays) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": v for k, v in arrays.items()}


def _unprefixed(prefix: str, arrays) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _prepare_privacy(ctx) -> None:
    """Load the accountant and calibrate before this role says hello: the first use imports Opacus,
    which takes seconds, and a role silent that long mid-round makes its peers re-join."""
    if ctx.params.get("dp", "off") != "off":
        round_config(ctx.params, max(1, len(_clients(ctx))))


async def pace_round(ctx, started: float, min_round_s: float) -> None:
    """Hold a round open until min_round_s has passed since it started. The wait is the
    context's own sleep, so a suspend or cancel ends it at once; the round is already
    checkpointed and reported by then, so a resumed aggregator goes on with the next one."""
    wait = min_round_s - (ctx.clock.monotonic() - started)
    if wait > 0:
        await ctx.sleep(wait)


class TrainingAggregator:
    async def run(self, ctx) -> RoleResult:
        _prepare_privacy(ctx)
        channel = await RoundChannel.for_role(ctx).open()
        aggregation = _Aggregation(ctx, channel)
        try:
            return await aggregation.run()
        finally:
            try:
                await aggregation.flush_checkpoint()  # suspended or failed mid-round: the last one is whole
            finally:
                await channel.close()


class _Aggregation:
    def __init__(self, ctx, channel: RoundChannel):
        self.ctx, self.channel, self.p = ctx, channel, ctx.params
        self.clients = _clients(ctx)
        self.joined: dict[str, dict] = {}
        self._held_out = None
        self.incarnations: dict[str, bytes] = {}
        self.strategy = make_strategy(self.p["strategy"], self.p)
        self.secure = bool(self.p.get("secure_aggregation", False))
        if self.secure and not self.strategy.supports_secure_aggregation:
            raise ConfigurationError(f"strategy {self.p['strategy']!r} cannot run with secure_aggregation: it needs "
                                     f"each client's model, which secure aggregation hides; use fedavg, fedprox, "
                                     f"fedavgm, fedadam, fedyogi or fedadagrad")
        self.keyring = KeyRing.from_trust(ctx.trust) if self.secure else None
        self.dp = self.p.get("dp", "off") != "off"
        if self.dp and not self.strategy.supports_secure_aggregation:
            raise ConfigurationError(f"strategy {self.p['strategy']!r} cannot run with dp: DP-FedAvg noises the "
                                     f"sum of clipped updates; use an averaging strategy")
        self.ledger = PrivacyLedger()
        self._saving: asyncio.Future | None = None

    async def flush_checkpoint(self) -> None:
        saving, self._saving = self._saving, None
        if saving is not None:
            await saving

    async def run(self) -> RoleResult:
        ctx, p = self.ctx, self.p
        await self._await_joins()
        shape = self._data_shape()
        checkpoint = ctx.checkpoints.load_latest()
        if checkpoint is not None:
            global_w = _unprefixed("model/", checkpoint.arrays)
            state = state_from_arrays(_unprefixed("server/", checkpoint.arrays), checkpoint.meta["server"])
            first = int(checkpoint.meta["round"]) + 1
            self.ledger = PrivacyLedger(tuple(checkpoint.meta.get("dp_multipliers", ())))
            ctx.log.info("aggregator.resumed", after_round=first - 1)
        else:
            spec = ModelSpec.from_params(p, shape["n_features"], shape["n_classes"])
            global_w = get_weights(build_model(spec, int(p["seed"])))
            state, first = self.strategy.init_state(global_w), 1
        if p.get("aggregation", "sync") == "async":
            global_w = await BufferedRounds(self, state, global_w, shape, first).run()
            return await self._finish(global_w, shape)
        for r in range(first, int(p["rounds"]) + 1):
            started = ctx.clock.monotonic()
            sent, received = self.channel.bytes_sent, self.channel.bytes_received
            if self.secure:
                state, global_w, metrics = await self._secure_round(r, global_w, shape, state)
            elif self.dp:
                updates, _, _ = await self._round(r, global_w, shape)
                state, global_w = self._central_dp_step(state, global_w, updates)
                metrics = {"clients": float(len(updates))}  # no train loss: it is not noised
                del updates  # N models: not held through the next round's collection
                return_freed_memory()
            else:
                # The averaging strategies fold each update into one sum as it arrives (in the fixed
                # client order); the robust ones need every client's model at once.
                stream = self.strategy.supports_secure_aggregation
                collected, losses, evaluations = await self._round(r, global_w, shape, stream=stream)
                if evaluations and r > 1:  # the clients scored the previous round's global model
                    await ctx.report(round=r - 1, total_rounds=int(p["rounds"]), stage="evaluated",
                                     metrics=_global_scores(evaluations))
                if isinstance(collected, OrderedFold):
                    state, global_w = self.strategy.server_step(state, global_w, collected.close())
                else:
                    state, global_w = self.strategy.aggregate(state, global_w, collected)
                metrics = {"clients": float(len(losses))}
                del collected  # N models (or their sum): not held through the next round's collection
                return_freed_memory()
                if not p.get("local_dp"):  # under local DP the clients keep their losses to themselves
                    metrics["train_loss"] = weighted_mean(losses)
            await self.complete_round(r, state, global_w, shape, metrics, started, (sent, received))
            if r < int(p["rounds"]):  # nothing follows the last round: no reason to hold it
                await pace_round(ctx, started, float(p.get("min_round_s", 0.0)))
        return await self._finish(global_w, shape)

    async def complete_round(self, r: int, state, global_w, shape, metrics: dict, started: float,
                             bytes_before: tuple[int, int]) -> None:
        """Checkpoint round r's model and server state, then report the round (the same for every mode)."""
        ctx, p = self.ctx, self.p
        metrics = {**metrics, "round_s": ctx.clock.monotonic() - started,
                   "bytes_sent": float(self.channel.bytes_sent - bytes_before[0]),
                   "bytes_received": float(self.channel.bytes_received - bytes_before[1])}
        server_arrays, server_meta = state_to_arrays(state)
        # Written (and fsynced) in a thread while the next round runs: tens of ms of a small model's
        # round on a busy disk. One at a time, and awaited before the role ends, suspended or not; a
        # crash before it is whole resumes from the round before, which replays to the same model.
        await self.flush_checkpoint()
        self._saving = asyncio.ensure_future(asyncio.to_thread(
            ctx.checkpoints.save, {**_prefixed("model/", global_w), **_prefixed("server/", server_arrays)},
            {"round": r, "server": server_meta, "dp_multipliers": list(self.ledger.multipliers)}))
        metrics.update(self._privacy_metrics())
        ROUND_SECONDS.labels("aggregator").observe(ctx.clock.monotonic() - started)
        metrics = {**metrics, **self._server_evaluation(global_w, shape)}
        await ctx.report(round=r, total_rounds=int(p["rounds"]), stage="training", metrics=metrics)
        ctx.check_stop()

    def _central_dp_step(self, state, global_w, updates):
        """Central DP-FedAvg on plain updates: the aggregator clips, sums and noises."""
        cfg = round_config(self.p, len(updates))
        self.ledger = self.ledger.record(effective_noise_multiplier(cfg, len(updates), len(updates)))
        return self.strategy.server_step(state, global_w, central_average(global_w, [w for w, _ in updates], cfg))

    def _privacy_metrics(self) -> dict[str, float]:
        if not self.dp:
            return {}
        delta = float(self.p["dp_delta"])
        return {"dp_epsilon": self.ledger.epsilon(delta), "dp_delta": delta,
                "dp_noise_multiplier": self.ledger.multipliers[-1] if self.ledger.multipliers else 0.0}

    def _server_evaluation(self, global_w, shape) -> dict[str, float]:
        """The global model on the aggregator's own held-out set, when the flow gives it one
        (a data_ref on the aggregator's party); every row of that set is held out."""
        if self.ctx.data is None:
            return {}
        if self._held_out is None:
            held = load_party_arrays(self.ctx)
            self._held_out = (np.concatenate([held.x_train, held.x_test]), np.concatenate([held.y_train, held.y_test]))
        model = build_model(ModelSpec.from_params(self.p, shape["n_features"], shape["n_classes"]), int(self.p["seed"]))
        set_weights(model, global_w)
        scores = evaluate(model, *self._held_out)
        return {"server_accuracy": float(scores["accuracy"]), "server_loss": float(scores["loss"])}

    async def _await_joins(self) -> None:
        # Clients that joined before this aggregator listened answer this hello by joining again.
        await self.channel.send(self.channel.message(RoundKind.JOIN, 0))
        deadline = self.ctx.clock.monotonic() + float(self.p["round_timeout_s"])
        while len(self.joined) < len(self.clients):
            if self.ctx.clock.monotonic() >= deadline and len(self.joined) >= int(self.p["min_clients"]):
                break
            if self.ctx.clock.monotonic() >= deadline:
                raise TrainingFailed(f"only {sorted(self.joined)} of clients {self.clients} joined within "
                                     f"round_timeout_s={self.p['round_timeout_s']}; min_clients={self.p['min_clients']}")
            message = await self.channel.receive(0.5)
            self.ctx.check_stop()
            if message is not None and message.kind == RoundKind.JOIN and message.sender in self.clients:
                self.joined[message.sender] = dict(message.metrics)
                self.incarnations[message.sender] = message.body

    def _data_shape(self) -> dict[str, int]:
        features = {int(m["n_features"]) for m in self.joined.values()}
        if len(features) != 1:
            raise TrainingFailed(f"clients disagree on the number of features: "
                                 f"{ {c: int(m['n_features']) for c, m in self.joined.items()} }")
        return {"n_features": features.pop(),
                "n_classes": max(int(m["n_classes"]) for m in self.joined.values())}

    async def _round(self, r: int, global_w, shape, *, stream: bool = False) -> tuple[list | OrderedFold, list, list]:
        """Runs round r's collection: (the updates in client order, or with `stream` the OrderedFold
        they went into as they arrived; (loss, n) per client; the clients' scores of the last model)."""
        ctx, p = self.ctx, self.p
        sampled = sample_clients(list(self.joined), float(p["fraction_fit"]), int(p["min_clients"]), int(p["seed"]), r)
        try:
            setup = setup_for(p, round=r, attempt=ctx.task.attempt, global_w=global_w, shape=shape, cohort=sampled)
        except SetupRejected as exc:
            raise TrainingFailed(str(exc)) from exc
        announce = self.channel.message(RoundKind.ANNOUNCE, r, arrays=global_w, metrics=shape, body=setup.to_body())
        await self.channel.send(announce)
        plan = RoundPlan(r, sampled, ctx.clock.monotonic() + float(p["round_timeout_s"]))
        answers: dict[str, tuple] = {}
        fold = OrderedFold(sorted(sampled)) if stream else None
        while (outcome := round_outcome(plan, answers, ctx.clock.monotonic(), int(p["min_clients"]))) is RoundOutcome.WAIT:
            message = await self.channel.receive(min(0.5, max(0.01, plan.deadline - ctx.clock.monotonic())))
            ctx.check_stop()
            if message is None:
                continue
            if message.kind == RoundKind.JOIN and message.sender in self.clients:
                # Only a new incarnation (a restarted client) lost the announce; a repeated
                # hello from the same process must not make us resend the whole model.
                restarted = self.incarnations.get(message.sender) != message.body
                self.incarnations[message.sender] = message.body
                self.joined[message.sender] = dict(message.metrics)
                if restarted and message.sender in sampled and message.sender not in answers:
                    await self.channel.send(self.channel.message(RoundKind.ANNOUNCE, r, recipient=message.sender,
                                                                 arrays=global_w, metrics=shape,
                                                                 body=announce.body))
            elif message.kind == RoundKind.UPDATE and message.round == r and message.sender in sampled:
                if message.sender in answers:
                    self.channel.reject(message, "second_update", f"{message.sender} already answered round {r}")
                    continue
                try:  # authenticated is not honest: a client's own numbers must be in the declared bounds
                    weights = check_update(message, global_w, self.joined.get(message.sender, {}), p,
                                           weights=self.weights_of(message, global_w))
                except UpdateRejected as exc:
                    self.channel.reject(message, exc.reason, str(exc))
                    await ctx.report(round=r, total_rounds=int(p["rounds"]), stage=f"rejected update: {exc}"[:300])
                    continue
                if fold is not None:  # folded now, or held only until the clients before it answered
                    fold.add(message.sender, weights, message.num_examples)
                    weights = None
                answers[message.sender] = (weights, message.num_examples,
                                           float(message.metrics.get("loss", float("nan"))), dict(message.metrics))
                message = None  # its buffer is the update's: the fold (or answers) decides how long it lives
            elif message.kind == RoundKind.UPDATE:
                self.channel.reject(message, "not_this_round" if message.round != r else "not_in_cohort",
                                    f"UPDATE for round {message.round} from {message.sender}; round {r} "
                                    f"samples {list(sampled)}")
        if outcome is RoundOutcome.FAIL:
            raise TrainingFailed(f"round {r}: {len(answers)} of {len(sampled)} sampled clients answered within "
                                 f"round_timeout_s={p['round_timeout_s']}; min_clients={p['min_clients']}")
        ordered = [answers[c] for c in sorted(answers)]  # fixed order: aggregation is bit-reproducible
        evaluations = [m for *_, m in ordered if m.get("eval_n")]
        losses = [(loss, n) for _, n, loss, _ in ordered]
        return (fold if fold is not None else [(w, n) for w, n, _, _ in ordered]), losses, evaluations

    def weights_of(self, update, global_w) -> dict[str, np.ndarray]:
        """A client's model: sent whole, or as a compressed delta from the round's global model.

        An update that does not decode is refused like any out-of-range one: that client counts
        as not having answered, as a dropout would."""
        try:
            arrays = from_tensors(update.tensors)
            if not update.body:
                return arrays
            method = json.loads(update.body)["compression"]
            delta = decompress(arrays, method, {k: v.shape for k, v in global_w.items()})
            return {k: (global_w[k] + delta[k]).astype(global_w[k].dtype, copy=False) for k in global_w}
        except (KeyError, ValueError, TypeError, MalformedMessage) as exc:
            raise UpdateRejected("undecodable", f"{update.sender} in round {update.round}: {exc}") from exc

    async def _secure_round(self, r: int, global_w, shape, state):
        p = self.p
        sampled = sample_clients(list(self.joined), float(p["fraction_fit"]), int(p["min_clients"]), int(p["seed"]), r)
        try:
            decoded = await server_round(self.ctx, self.channel, self.keyring, round=r, sampled=sampled,
                                         global_w=global_w, shape=shape, joined=self.joined, clients=self.clients,
                                         incarnations=self.incarnations)
        except TooFewClients as exc:
            raise TrainingFailed(f"round {r}: {exc} (round_timeout_s={p['round_timeout_s']}, "
                                 f"min_clients={p['min_clients']})") from exc
        except SetupRejected as exc:
            raise TrainingFailed(str(exc)) from exc
        except ProtocolViolation as exc:  # e.g. shares that do not rebuild a committed seed
            self.ctx.log.warning("secagg.round_refused", round=r, reason=str(exc))
            await self.ctx.report(round=r, total_rounds=int(p["rounds"]), stage=f"refused round: {exc}"[:300])
            return state, global_w, {"rejected_sum": 1.0}
        cfg = round_config(p, len(sampled))
        # Distributed DP noise is inside the decoded sum: its norm is no longer bounded by the clip.
        bounds = {**p, "update_clip_norm": None} if cfg is not None and cfg.distributed else p
        try:
            check_secure_sum(decoded.average, global_w, decoded.total_weight, decoded.clients, bounds)
        except UpdateRejected as exc:
            # Out-of-range input is refused, not absorbed: the round leaves the model as it was.
            self.ctx.log.warning("secagg.sum_rejected", round=r, reason=exc.reason, detail=str(exc))
            await self.ctx.report(round=r, total_rounds=int(p["rounds"]), stage=f"rejected round sum: {exc}"[:300])
            return state, global_w, {"clients": float(decoded.clients), "rejected_sum": 1.0}
        average, metrics = decoded.average, {"train_loss": decoded.loss, "clients": float(decoded.clients),
                                             "secagg_clipped": decoded.clipped}
        if p.get("local_dp"):
            del metrics["train_loss"]  # the clients summed zeros: their losses are not noised
        if cfg is not None:
            if not cfg.distributed:  # the clients clipped; the aggregator adds the noise to their sum
                average = noised_average(average, global_w, decoded.clients, cfg)
            self.ledger = self.ledger.record(effective_noise_multiplier(cfg, len(sampled), decoded.clients))
            for un_noised in ("train_loss", "secagg_clipped"):  # sums that carry no DP noise of their own
                del metrics[un_noised]
        state, global_w = self.strategy.server_step(state, global_w, average)
        return state, global_w, metrics

    async def _finish(self, global_w, shape) -> RoleResult:
        ctx, p = self.ctx, self.p
        ctx.artifacts.save(f"model-{ctx.task.step}", global_w, {**shape, **{k: p[k] for k in ("model", "hidden")}})
        await self.channel.send(self.channel.message(RoundKind.FINAL, int(p["rounds"]), arrays=global_w, metrics=shape))
        results: dict[str, dict] = {}
        deadline = ctx.clock.monotonic() + float(p["round_timeout_s"])
        while set(results) < set(self.joined) and ctx.clock.monotonic() < deadline:
            message = await self.channel.receive(0.5)
            ctx.check_stop()  # a resumed aggregator comes back here from its last checkpoint
            if message is not None and message.kind == RoundKind.EVALUATION:
                results[message.sender] = dict(message.metrics)
            elif message is not None and message.kind == RoundKind.JOIN:
                # Only a restarted client (a new incarnation) lost the FINAL; a client that merely
                # heard nothing for REJOIN_AFTER_S says hello again, and must not cost a model.
                restarted = self.incarnations.get(message.sender) != message.body
                self.incarnations[message.sender] = message.body
                if restarted:
                    await self.channel.send(self.channel.message(RoundKind.FINAL, int(p["rounds"]),
                                                                 recipient=message.sender, arrays=global_w,
                                                                 metrics=shape))
        pairs = [(m["accuracy"], int(m["n"])) for m in results.values()]
        losses = [(m["loss"], int(m["n"])) for m in results.values()]
        metrics = {"rounds": float(p["rounds"]), "clients": float(len(self.joined)),
                   "test_accuracy": weighted_mean(pairs), "test_loss": weighted_mean(losses),
                   "test_n": float(sum(n for _, n in pairs))}
        metrics.update(self._server_evaluation(global_w, shape))
        if pairs:  # the final global model, scored by every client: the last point of the curve
            await ctx.report(round=int(p["rounds"]), total_rounds=int(p["rounds"]), stage="evaluated",
                             metrics={"accuracy": metrics["test_accuracy"], "loss": metrics["test_loss"]})
        metrics.update(self._privacy_metrics())
        return RoleResult(metrics=metrics, outputs={"model": f"model-{ctx.task.step}"})


class TrainingClient:
    async def run(self, ctx) -> RoleResult:
        data = load_party_arrays(ctx)
        _prepare_privacy(ctx)
        warm_up_torch()  # before it joins: its first round then measures training, not imports
        channel = await RoundChannel.for_role(ctx).open()
        try:
            return await self._serve(ctx, channel, data)
        finally:
            await channel.close()

    async def _serve(self, ctx, channel: RoundChannel, data) -> RoleResult:
        p, me, aggregator = ctx.params, ctx.task.party, _aggregator(ctx)
        join = channel.message(RoundKind.JOIN, 0, recipient=aggregator, body=uuid.uuid4().hex.encode(), metrics={"n_features": data.n_features, "n_classes": data.n_classes,
                                                            "num_examples": len(data.y_train)})
        await channel.send(join)
        seed = int(p["seed"]) * 1009 + _clients(ctx).index(me)
        config = TrainConfig.from_params(p)
        last_heard = ctx.clock.monotonic()
        secure = (ClientSession(ctx, channel, KeyRing.from_trust(ctx.trust), aggregator)
                  if p.get("secure_aggregation") else None)
        gate = AnnounceGate()
        latest = ctx.checkpoints.load_latest() if config.local_dp is not None else None
        # DP-SGD steps spent before a restart still count towards this client's epsilon.
        self._dp_steps = int(latest.meta.get("local_dp_steps", 0)) if latest is not None else 0
        while True:
            message = await channel.receive(0.5)
            ctx.check_stop()
            if message is None:
                if ctx.clock.monotonic() - last_heard > REJOIN_AFTER_S:  # the aggregator may have restarted
                    await channel.send(join)
                    last_heard = ctx.clock.monotonic()
                continue
            if message.sender != aggregator:
                channel.reject(message, "not_from_aggregator", "clients take instructions from their step's "
                                                               f"aggregator {aggregator} only")
                continue
            last_heard = ctx.clock.monotonic()
            if message.kind == RoundKind.JOIN:  # the aggregator (re)started and says hello
                await channel.send(join)
            elif message.kind == RoundKind.ANNOUNCE:
                setup = await self._admit(ctx, channel, message, gate)
                if setup is None:
                    continue
                started = ctx.clock.monotonic()
                model = self._model(p, setup.n_features, setup.n_classes)
                global_w = from_tensors(message.tensors)
                set_weights(model, global_w)
                scores = _score_previous(model, data, message.round)
                if scores:
                    await ctx.report(round=message.round - 1, total_rounds=int(p["rounds"]), stage="evaluated",
                                     metrics={"accuracy": scores["eval_accuracy"], "loss": scores["eval_loss"]})
                sent, received = channel.bytes_sent, channel.bytes_received
                announced = payload_bytes(message)
                if not _uses_global_after_training(p, setup, config, secure is not None):
                    # The model holds the global weights now and nothing after training reads them:
                    # the received buffer goes before training, one model's worth less at the peak.
                    message, global_w = dataclasses.replace(message, tensors=()), None
                    return_freed_memory()  # its pages leave before training keeps the heap (memory.py)
                with heap_kept_while_training():  # no page faults at every SGD step (memory.py)
                    result = train_local(model, data.x_train, data.y_train, config,
                                         epoch_offset=(message.round - 1) * config.local_epochs, seed=seed,
                                         global_weights=global_w, share_weights=secure is None)
                model.zero_grad(set_to_none=True)  # the last step's gradients: a model's worth, unused now
                weights = clip_update(result.weights, global_w, setup.clip_norm)
                self._dp_steps += result.dp_steps
                # Under local DP only the DP-SGD model leaves the party: not its (un-noised) loss.
                loss = result.loss if config.local_dp is None else None
                if secure is not None:  # the update leaves this party only masked
                    await secure.start(message, setup, weights, global_w, result.num_examples, loss or 0.0)
                else:
                    arrays, body = self._encoded(p, weights, global_w, seed, message.round)
                    # The update (views of the model, sent before the next round loads it) is encoded:
                    # the received model goes before the wire copy of the update is made.
                    message, global_w = dataclasses.replace(message, tensors=()), None
                    await channel.send(channel.message(RoundKind.UPDATE, message.round, recipient=message.sender,
                                                       arrays=arrays, num_examples=result.num_examples,
                                                       metrics={**({"loss": loss} if loss is not None else {}),
                                                                **scores}, body=body))
                ROUND_SECONDS.labels("client").observe(ctx.clock.monotonic() - started)
                if config.local_dp is not None:  # its only state between rounds: the DP-SGD steps spent
                    ctx.checkpoints.save({}, {"round": message.round, "local_dp_steps": self._dp_steps})
                progress = {"train_s": result.elapsed_s, **self._local_privacy(p, config, len(data.y_train))}
                if p.get("dp", "off") == "off" and loss is not None:  # under DP only noised sums leave the party
                    progress["train_loss"] = loss
                await ctx.report(round=message.round, total_rounds=int(p["rounds"]), stage="training",
                                 metrics={**progress, "bytes_sent": float(channel.bytes_sent - sent),
                                          "bytes_received": float(channel.bytes_received - received + announced)})
                # The round's models (received, trained, sent) are not kept while waiting for the next.
                message = global_w = result = weights = arrays = None
                return_freed_memory()
            elif message.kind == RoundKind.SECAGG and secure is not None:
                await secure.handle(message)
            elif message.kind == RoundKind.FINAL:
                return await self._final(ctx, channel, data, message)
            elif message.kind == RoundKind.ABORT:
                raise TrainingFailed(f"the aggregator aborted the step: {message.body.decode(errors='replace')}")

    def _model(self, p, n_features: int, n_classes: int):
        """The round's model, built once per shape: set_weights then overwrites every tensor it
        has (these models hold parameters only), so a round starts from the global model alone."""
        key = (n_features, n_classes)
        if getattr(self, "_built", (None, None))[0] != key:
            self._built = (key, build_model(ModelSpec.from_params(p, n_features, n_classes), int(p["seed"])))
        return self._built[1]

    @staticmethod
    async def _admit(ctx, channel: RoundChannel, message, gate: AnnounceGate) -> RoundSetup | None:
        """The round's signed setup if this client trains for it; None (logged, counted and
        reported when refused) otherwise."""
        me, p = ctx.task.party, ctx.params
        try:
            setup = RoundSetup.from_body(message.body)
            if me not in setup.cohort:
                return None  # not sampled this round
            if (setup.round, setup.attempt) != (message.round, message.attempt):
                raise SetupRejected("bad_setup", f"setup of round {setup.round} attempt {setup.attempt} in the "
                                                 f"ANNOUNCE of round {message.round} attempt {message.attempt}")
            check_setup(setup, me, from_tensors(message.tensors), p, clip=secure_clip(p, len(setup.cohort)))
            gate.admit(setup)
        except (SetupRejected, MalformedMessage) as exc:
            reason = getattr(exc, "reason", "malformed")
            channel.reject(message, reason, str(exc))
            await ctx.report(round=message.round, total_rounds=int(p["rounds"]),
                             stage=f"refused ANNOUNCE from {message.sender}: {exc}"[:300])
            return None
        return setup
    def _local_privacy(self, p, config: TrainConfig, n_train: int) -> dict[str, float]:
        """This client's example-level (epsilon, delta) so far, when it trains with local DP."""
        if config.local_dp is None:
            return {}
        delta = float(p.get("dp_delta", 1e-5))
        return {"local_dp_epsilon": local_epsilon(config.local_dp, config.batch_size / n_train, self._dp_steps, delta),
                "local_dp_delta": delta}

    def _encoded(self, p, weights, global_w, seed: int, round: int) -> tuple[dict[str, np.ndarray], bytes]:
        """The update as sent: the model itself, or its delta compressed (with error feedback for topk,
        kept in memory: a restarted client starts a fresh residual)."""
        method = str(p.get("compression") or "none")
        if method == "none":
            return weights, b""
        delta = {k: np.asarray(weights[k], np.float32) - np.asarray(global_w[k], np.float32) for k in global_w}
        arrays, self._residual = compress(delta, method, rng=np.random.default_rng([seed, round]),
                                          residual=getattr(self, "_residual", None),
                                          fraction=float(p.get("topk_fraction") or 0.01))
        return arrays, json.dumps({"compression": method}).encode()

    async def _final(self, ctx, channel: RoundChannel, data, message) -> RoleResult:
        p = ctx.params
        shape = {k: int(message.metrics[k]) for k in ("n_features", "n_classes")}
        model = build_model(ModelSpec.from_params(p, shape["n_features"], shape["n_classes"]), int(p["seed"]))
        final_w = from_tensors(message.tensors)
        set_weights(model, final_w)
        ctx.artifacts.save(f"model-{ctx.task.step}", final_w, {**shape, "model": p["model"], "hidden": p["hidden"]})
        scores = evaluate(model, data.x_test, data.y_test)
        metrics = {"accuracy": float(scores["accuracy"]), "loss": float(scores["loss"]), "n": float(scores["n"])}
        await channel.send(channel.message(RoundKind.EVALUATION, message.round, recipient=message.sender,
                                           metrics=metrics))
        await ctx.report(round=message.round, total_rounds=int(p["rounds"]), stage="evaluated",
                         metrics={"accuracy": metrics["accuracy"], "loss": metrics["loss"]})
        return RoleResult(metrics={"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
                                   "test_n": metrics["n"],
                                   **self._local_privacy(p, TrainConfig.from_params(p), len(data.y_train))})


def _uses_global_after_training(p, setup: RoundSetup, config: TrainConfig, secure: bool) -> bool:
    """Whether a client reads the round's global model once local training starts: as the FedProx
    anchor, to clip its delta, to compress it, or to mask it under secure aggregation."""
    return (secure or config.mu > 0 or setup.clip_norm > 0
            or str(p.get("compression") or "none") != "none")


def _score_previous(model, data, round: int) -> dict[str, float]:
    """The global model a client just received (the previous round's) on its own test split: the
    party's point on the accuracy curve, sent to the aggregator with the update for the global one."""
    if round <= 1 or len(data.y_test) == 0:
        return {}
    scores = evaluate(model, data.x_test, data.y_test)
    return {"eval_accuracy": float(scores["accuracy"]), "eval_loss": float(scores["loss"]),
            "eval_n": float(scores["n"])}


def _global_scores(evaluations: list[dict]) -> dict[str, float]:
    pairs = [(m["eval_accuracy"], int(m["eval_n"])) for m in evaluations]
    losses = [(m["eval_loss"], int(m["eval_n"])) for m in evaluations]
    return {"accuracy": weighted_mean(pairs), "loss": weighted_mean(losses)}
