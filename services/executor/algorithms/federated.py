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

import json
import uuid

import numpy as np

from services.executor.algorithms.party_data import load_party_arrays
from services.executor.federation.rounds import RoundOutcome, RoundPlan, round_outcome, sample_clients, weighted_mean
from services.executor.ml.models import ModelSpec, build_model, get_weights, set_weights
from services.executor.ml.privacy import central_average, effective_noise_multiplier, noised_average
from services.executor.ml.privacy_accounting import PrivacyLedger, round_config
from services.executor.ml.strategies import make_strategy, state_from_arrays, state_to_arrays
from services.executor.ml.training import TrainConfig, evaluate, train_local
from services.executor.secagg import KeyRing, TooFewClients
from services.executor.secagg.shell import ClientSession, server_round
from services.executor.transport import RoundChannel, from_tensors
from shared.algorithms import RoleResult
from shared.errors import ConfigurationError, FerryError
from shared.events import RoundKind
from shared.metrics import ROUND_SECONDS

REJOIN_AFTER_S = 5.0


class TrainingFailed(FerryError):
    """Too few clients, or clients that disagree on the data's shape."""

    exit_code = 4


def _clients(ctx) -> list[str]:
    return sorted(p.party for p in ctx.task.peers if p.role == "client")


def _aggregator(ctx) -> str:
    return next(p.party for p in ctx.task.peers if p.role == "aggregator")


def _prefixed(prefix: str, arrays) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": v for k, v in arrays.items()}


def _unprefixed(prefix: str, arrays) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _prepare_privacy(ctx) -> None:
    """Load the accountant and calibrate before this role says hello: the first use imports Opacus,
    which takes seconds, and a role silent that long mid-round makes its peers re-join."""
    if ctx.params.get("dp", "off") != "off":
        round_config(ctx.params, max(1, len(_clients(ctx))))


class TrainingAggregator:
    async def run(self, ctx) -> RoleResult:
        _prepare_privacy(ctx)
        channel = await RoundChannel(ctx.bus, ctx.task, ctx.publisher).open()
        try:
            return await _Aggregation(ctx, channel).run()
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
        self.keyring = KeyRing.from_params(self.p, ctx.task.party) if self.secure else None
        self.dp = self.p.get("dp", "off") != "off"
        if self.dp and not self.strategy.supports_secure_aggregation:
            raise ConfigurationError(f"strategy {self.p['strategy']!r} cannot run with dp: DP-FedAvg noises the "
                                     f"sum of clipped updates; use an averaging strategy")
        self.ledger = PrivacyLedger()

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
        for r in range(first, int(p["rounds"]) + 1):
            started = ctx.clock.monotonic()
            if self.secure:
                state, global_w, metrics = await self._secure_round(r, global_w, shape, state)
            elif self.dp:
                updates, _ = await self._round(r, global_w, shape)
                state, global_w = self._central_dp_step(state, global_w, updates)
                metrics = {"clients": float(len(updates))}  # no train loss: it is not noised
            else:
                updates, losses = await self._round(r, global_w, shape)
                state, global_w = self.strategy.aggregate(state, global_w, updates)
                metrics = {"train_loss": weighted_mean(losses), "clients": float(len(updates))}
            server_arrays, server_meta = state_to_arrays(state)
            ctx.checkpoints.save({**_prefixed("model/", global_w), **_prefixed("server/", server_arrays)},
                                 {"round": r, "server": server_meta, "dp_multipliers": list(self.ledger.multipliers)})
            metrics.update(self._privacy_metrics())
            ROUND_SECONDS.labels("aggregator").observe(ctx.clock.monotonic() - started)
            metrics = {**metrics, **self._server_evaluation(global_w, shape)}
            await ctx.report(round=r, total_rounds=int(p["rounds"]), stage="training", metrics=metrics)
            ctx.check_stop()
        return await self._finish(global_w, shape)

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

    async def _round(self, r: int, global_w, shape) -> tuple[list, list]:
        ctx, p = self.ctx, self.p
        sampled = sample_clients(list(self.joined), float(p["fraction_fit"]), int(p["min_clients"]), int(p["seed"]), r)
        announce = self.channel.message(RoundKind.ANNOUNCE, r, arrays=global_w, metrics=shape,
                                        body=json.dumps(sampled).encode())
        await self.channel.send(announce)
        plan = RoundPlan(r, sampled, ctx.clock.monotonic() + float(p["round_timeout_s"]))
        answers: dict[str, tuple] = {}
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
                answers.setdefault(message.sender, (from_tensors(message.tensors), message.num_examples,
                                                    float(message.metrics.get("loss", float("nan")))))
        if outcome is RoundOutcome.FAIL:
            raise TrainingFailed(f"round {r}: {len(answers)} of {len(sampled)} sampled clients answered within "
                                 f"round_timeout_s={p['round_timeout_s']}; min_clients={p['min_clients']}")
        ordered = [answers[c] for c in sorted(answers)]  # fixed order: aggregation is bit-reproducible
        return [(w, n) for w, n, _ in ordered], [(loss, n) for _, n, loss in ordered]

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
        average, metrics = decoded.average, {"train_loss": decoded.loss, "clients": float(decoded.clients),
                                             "secagg_clipped": decoded.clipped}
        cfg = round_config(p, len(sampled))
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
            elif message is not None and message.kind == RoundKind.JOIN:  # restarted after FINAL
                await self.channel.send(self.channel.message(RoundKind.FINAL, int(p["rounds"]), recipient=message.sender,
                                                             arrays=global_w, metrics=shape))
        pairs = [(m["accuracy"], int(m["n"])) for m in results.values()]
        losses = [(m["loss"], int(m["n"])) for m in results.values()]
        metrics = {"rounds": float(p["rounds"]), "clients": float(len(self.joined)),
                   "test_accuracy": weighted_mean(pairs), "test_loss": weighted_mean(losses),
                   "test_n": float(sum(n for _, n in pairs))}
        metrics.update(self._server_evaluation(global_w, shape))
        metrics.update(self._privacy_metrics())
        return RoleResult(metrics=metrics, outputs={"model": f"model-{ctx.task.step}"})


class TrainingClient:
    async def run(self, ctx) -> RoleResult:
        data = load_party_arrays(ctx)
        _prepare_privacy(ctx)
        channel = await RoundChannel(ctx.bus, ctx.task, ctx.publisher).open()
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
        secure = (ClientSession(ctx, channel, KeyRing.from_params(p, me), aggregator)
                  if p.get("secure_aggregation") else None)
        while True:
            message = await channel.receive(0.5)
            ctx.check_stop()
            if message is None:
                if ctx.clock.monotonic() - last_heard > REJOIN_AFTER_S:  # the aggregator may have restarted
                    await channel.send(join)
                    last_heard = ctx.clock.monotonic()
                continue
            if message.sender != aggregator:
                continue  # clients only take instructions from their step's aggregator
            last_heard = ctx.clock.monotonic()
            if message.kind == RoundKind.JOIN:  # the aggregator (re)started and says hello
                await channel.send(join)
            elif message.kind == RoundKind.ANNOUNCE and me in json.loads(message.body):
                started = ctx.clock.monotonic()
                model = build_model(ModelSpec.from_params(p, int(message.metrics["n_features"]),
                                                          int(message.metrics["n_classes"])), int(p["seed"]))
                global_w = from_tensors(message.tensors)
                set_weights(model, global_w)
                result = train_local(model, data.x_train, data.y_train, config,
                                     epoch_offset=(message.round - 1) * config.local_epochs, seed=seed,
                                     global_weights=global_w)
                if secure is not None:  # the update leaves this party only masked
                    await secure.start(message, result.weights, global_w, result.num_examples, result.loss)
                else:
                    await channel.send(channel.message(RoundKind.UPDATE, message.round, recipient=message.sender,
                                                       arrays=result.weights, num_examples=result.num_examples,
                                                       metrics={"loss": result.loss}))
                ROUND_SECONDS.labels("client").observe(ctx.clock.monotonic() - started)
                ctx.checkpoints.save(result.weights, {"round": message.round})
                progress = {"train_s": result.elapsed_s}
                if p.get("dp", "off") == "off":  # under DP only noised sums leave the party
                    progress["train_loss"] = result.loss
                await ctx.report(round=message.round, total_rounds=int(p["rounds"]), stage="training",
                                 metrics=progress)
            elif message.kind == RoundKind.SECAGG and secure is not None:
                await secure.handle(message)
            elif message.kind == RoundKind.FINAL:
                return await self._final(ctx, channel, data, message)
            elif message.kind == RoundKind.ABORT:
                raise TrainingFailed(f"the aggregator aborted the step: {message.body.decode(errors='replace')}")

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
        return RoleResult(metrics={"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
                                   "test_n": metrics["n"]})
