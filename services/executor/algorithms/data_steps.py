"""ferry.data.validate and ferry.standardise: steps that prepare party data.

Federated standardisation: each client sends only its training rows' count,
mean and M2 (sum of squared deviations); the aggregator merges them (Chan et
al.) into the pooled mean and standard deviation and sends those back. No
row, and no per-row value, leaves a party.
"""

from __future__ import annotations

import numpy as np

from services.executor.algorithms.step_peers import TrainingFailed
from services.executor.algorithms.step_peers import aggregator_of as _aggregator
from services.executor.algorithms.step_peers import clients_of as _clients
from services.executor.algorithms.party_data import STANDARDISATION, load_party_arrays
from services.executor.data.stats import Moments, merge_moments, moments_of
from services.executor.transport import RoundChannel, from_tensors
from shared.algorithms import RoleResult
from shared.errors import DataError
from shared.events import RoundKind

TIMEOUT_S = 300.0


class ValidateRole:
    async def run(self, ctx) -> RoleResult:
        data = ctx.data
        if data is None:
            raise DataError(f"party {ctx.task.party}: no dataset named {ctx.task.data_ref!r}")
        rows = len(data)
        if rows < int(ctx.params["min_rows"]):
            raise DataError(f"party {ctx.task.party}: dataset {ctx.task.data_ref!r} has {rows} rows; "
                            f"the flow asks for at least {ctx.params['min_rows']}")
        if data.schema.label is None:
            raise DataError(f"party {ctx.task.party}: dataset {ctx.task.data_ref!r} has no label column")
        stats = data.statistics()
        ctx.log.info("data.valid", rows=rows)
        return RoleResult(metrics={"rows": float(rows), "features": float(data.features().shape[1]),
                                   "classes": float(len(stats.labels.counts) if stats.labels else 0)})


class StandardiseClient:
    async def run(self, ctx) -> RoleResult:
        data = load_party_arrays(ctx, standardise_with=(np.float32(0), np.float32(1)))
        moments = moments_of(data.x_train)
        aggregator = _aggregator(ctx)
        channel = await RoundChannel.for_role(ctx).open()
        try:
            update = channel.message(RoundKind.UPDATE, 1, recipient=aggregator, num_examples=moments.count,
                                     arrays={"mean": moments.mean, "m2": moments.m2,
                                             "min": moments.minimum, "max": moments.maximum})
            await channel.send(update)
            deadline = ctx.clock.monotonic() + TIMEOUT_S
            while ctx.clock.monotonic() < deadline:
                message = await channel.receive(0.5)
                ctx.check_stop()
                if message is None or message.sender != aggregator:
                    continue
                if message.kind == RoundKind.FINAL:
                    arrays = from_tensors(message.tensors)
                    ctx.artifacts.save(STANDARDISATION, arrays, {"rows": int(message.num_examples)})
                    return RoleResult(metrics={"pooled_rows": float(message.num_examples)})
                if message.kind == RoundKind.JOIN:  # the aggregator (re)started
                    await channel.send(update)
            raise TrainingFailed(f"no standardisation from the aggregator within {TIMEOUT_S} s")
        finally:
            await channel.close()


class StandardiseAggregator:
    async def run(self, ctx) -> RoleResult:
        clients = _clients(ctx)
        channel = await RoundChannel.for_role(ctx).open()
        try:
            await channel.send(channel.message(RoundKind.JOIN, 0))  # clients that sent before we listened resend
            parts: dict[str, Moments] = {}
            deadline = ctx.clock.monotonic() + TIMEOUT_S
            while set(parts) != set(clients):
                if ctx.clock.monotonic() > deadline:
                    raise TrainingFailed(f"standardisation: only {sorted(parts)} of {clients} answered")
                message = await channel.receive(0.5)
                ctx.check_stop()
                if message is not None and message.kind == RoundKind.UPDATE and message.sender in clients:
                    a = from_tensors(message.tensors)
                    parts[message.sender] = Moments(int(message.num_examples), a["mean"], a["m2"], a["min"], a["max"])
            pooled = Moments.empty(parts[clients[0]].mean.shape)
            for name in clients:
                pooled = merge_moments(pooled, parts[name])
            std = np.sqrt(pooled.m2 / max(pooled.count, 1))
            std = np.where(std > 0, std, 1.0)  # constant features: leave them unscaled, never divide by 0
            final = {"mean": pooled.mean.astype(np.float32), "std": std.astype(np.float32)}
            await channel.send(channel.message(RoundKind.FINAL, 1, arrays=final, num_examples=pooled.count))
            # Kept on the aggregator's party too: a held-out set there is scaled like the clients' rows.
            ctx.artifacts.save(STANDARDISATION, final, {"rows": int(pooled.count)})
            return RoleResult(metrics={"pooled_rows": float(pooled.count), "clients": float(len(clients))})
        finally:
            await channel.close()
