"""The roles of ``example.federated_histogram``: what an executor runs for one party.

Every client counts its own rows of one feature into the same equal-width
bins (fixed by the flow's ``bins``, ``low`` and ``high``, so nobody needs to
see anybody's data to agree on them) and sends only the counts. The
aggregator adds the counts up and sends the pooled histogram back; every
party keeps it as its ``histogram`` artifact. No row and no value leaves a
party; out-of-range values (and NaN) are counted nowhere, as in
``np.histogram``.

The conversation, over the step's round channel (one per step, ordered)::

    aggregator                              client (each)
      JOIN  (to all) ------------------->   answers with its UPDATE again
            <---------------------------    UPDATE (to the aggregator): counts
      FINAL (to all): pooled counts ---->   saves them; done

The JOIN exists because a party only hears what is sent after it started
listening: a client whose UPDATE went out before the aggregator was up
resends it when the aggregator announces itself. A client waits for FINAL
before it exits so that its UPDATE is never lost that way.

Exit semantics (see docs/writing-algorithms.md): bad parameters raise
ConfigurationError, unusable data DataError (neither is retried); a peer that
never answers raises TransientError (the scheduler retries the task). A
stop request raises Suspended from ctx.check_stop() after the work so far is
checkpointed: a resumed attempt continues from the checkpoint.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping

import numpy as np

from services.executor.transport import RoundChannel, from_tensors
from shared.algorithms import RoleResult
from shared.errors import ConfigurationError, DataError, TransientError
from shared.events import RoundKind, RoundMessage

from .spec import ARTIFACT

BATCH_ROWS = 4096     # rows read per batch: memory stays flat however large the party's data is
POLL_S = 0.5          # how often a waiting party checks for a stop request


# -- parameters and peers -------------------------------------------------------------------------

def _bins(params: Mapping[str, Any]) -> tuple[float, float, int]:
    """(low, high, bins). The spec's check already rejects high <= low in the splitter; a role
    does not rely on that (a task can come from a splitter with an older spec installed)."""
    low, high, bins = float(params["low"]), float(params["high"]), int(params["bins"])
    if not high > low:
        raise ConfigurationError(f"example.federated_histogram: params.high must be greater than "
                                 f"params.low, got low={low}, high={high}")
    return low, high, bins


def _edges(low: float, high: float, bins: int) -> np.ndarray:
    return np.linspace(low, high, bins + 1)   # what np.histogram(range=(low, high)) uses


def _parties(ctx, role: str) -> list[str]:
    """The step's parties in `role`, sorted: every party computes the same list."""
    return sorted(p.party for p in ctx.task.peers if p.role == role)


def _identity(params: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint was computed for; a checkpoint of other parameters is not reused."""
    return {k: params[k] for k in ("feature_index", "bins", "low", "high")}


def _counts_of(message: RoundMessage, bins: int) -> np.ndarray:
    """The counts a peer sent, checked: a peer is never trusted to send the right shape."""
    counts = from_tensors(message.tensors).get("counts")
    if (counts is None or counts.shape != (bins,) or counts.dtype.kind not in "iu"
            or (counts.size and counts.min() < 0)):
        got = "nothing" if counts is None else f"{counts.dtype} {counts.shape}"
        raise DataError(f"{message.sender} sent {got} as histogram counts; expected {bins} "
                        f"non-negative integers (is the same plug-in version installed everywhere?)")
    return counts.astype(np.int64)


@asynccontextmanager
async def _conversation(ctx) -> AsyncIterator[RoundChannel]:
    """The step's round channel, as the built-in algorithms open it.

    ctx.bus and ctx.publisher are the executor's own adapters; this is the one
    place the plug-in touches them (see "Talking to peers" in the guide).
    """
    channel = await RoundChannel.for_role(ctx).open()
    try:
        yield channel
    finally:
        await channel.close()


async def _receive(ctx, channel: RoundChannel, deadline: float, waiting_for: str) -> RoundMessage | None:
    """The next message, or None after POLL_S; Suspended on a stop request, TransientError past the deadline."""
    remaining = deadline - ctx.clock.monotonic()
    if remaining <= 0:
        raise TransientError(f"{ctx.task.party}: no answer from {waiting_for} within "
                             f"{ctx.params['timeout_s']} s (params.timeout_s)")
    message = await channel.receive(min(POLL_S, remaining))
    ctx.check_stop()
    return message


# -- the roles ------------------------------------------------------------------------------------

class HistogramClient:
    async def run(self, ctx) -> RoleResult:
        low, high, bins = _bins(ctx.params)
        counts, rows = await self._local_counts(ctx, low, high, bins)
        ctx.check_stop()   # a safe point: the counts are checkpointed
        counted = int(counts.sum())
        aggregator = _parties(ctx, "aggregator")[0]
        await ctx.report(stage="waiting for the aggregator", metrics={"rows": float(rows)})
        async with _conversation(ctx) as channel:
            update = channel.message(RoundKind.UPDATE, 1, recipient=aggregator, arrays={"counts": counts},
                                     num_examples=counted)
            await channel.send(update)
            deadline = ctx.clock.monotonic() + float(ctx.params["timeout_s"])
            while True:
                message = await _receive(ctx, channel, deadline, f"the aggregator {aggregator}")
                if message is None or message.sender != aggregator:
                    continue
                if message.kind == RoundKind.JOIN:       # the aggregator (re)started after we sent
                    await channel.send(update)
                elif message.kind == RoundKind.FINAL:
                    pooled = _counts_of(message, bins)
                    ctx.artifacts.save(ARTIFACT, {"counts": pooled, "edges": _edges(low, high, bins)},
                                       {**_identity(ctx.params), "total": int(pooled.sum()), "own": counted})
                    ctx.log.info("histogram.pooled", total=int(pooled.sum()), own=counted)
                    return RoleResult(metrics={"rows": float(rows), "counted": float(counted),
                                               "outside": float(rows - counted),
                                               "total": float(pooled.sum())},
                                      outputs={"histogram": ARTIFACT})

    async def _local_counts(self, ctx, low: float, high: float, bins: int) -> tuple[np.ndarray, int]:
        """This party's counts, from the checkpoint of an earlier attempt when there is one."""
        saved = ctx.checkpoints.load_latest()
        if saved is not None and saved.meta.get("params") == _identity(ctx.params):
            ctx.log.info("histogram.resumed", checkpoint=saved.sequence)
            return saved.arrays["counts"].astype(np.int64), int(saved.meta["rows"])
        data = ctx.data
        if data is None:
            raise DataError(f"{ctx.task.party}: the client role needs data, but no dataset "
                            f"{ctx.task.data_ref!r} was opened")
        feature = int(ctx.params["feature_index"])
        counts, rows = np.zeros(bins, np.int64), 0
        await ctx.report(stage="counting", metrics={"rows": float(len(data))})
        for x, _ in data.batches(BATCH_ROWS, shuffle=False):
            if feature >= x.shape[1]:
                raise ConfigurationError(f"params.feature_index is {feature}, but dataset {ctx.task.data_ref!r} "
                                         f"of {ctx.task.party} has {x.shape[1]} features "
                                         f"(feature_index counts from 0)")
            counts += np.histogram(x[:, feature], bins=bins, range=(low, high))[0]
            rows += len(x)
        ctx.checkpoints.save({"counts": counts}, {"params": _identity(ctx.params), "rows": rows})
        return counts, rows


class HistogramAggregator:
    async def run(self, ctx) -> RoleResult:
        low, high, bins = _bins(ctx.params)
        clients = _parties(ctx, "client")
        parts = self._restore(ctx, clients)
        async with _conversation(ctx) as channel:
            if len(parts) < len(clients):
                await channel.send(channel.message(RoundKind.JOIN, 0))  # who sent before we listened: again
            deadline = ctx.clock.monotonic() + float(ctx.params["timeout_s"])
            while len(parts) < len(clients):
                missing = ", ".join(c for c in clients if c not in parts)
                message = await _receive(ctx, channel, deadline, f"clients {missing}")
                if (message is None or message.kind != RoundKind.UPDATE or message.sender not in clients
                        or message.sender in parts):
                    continue
                parts[message.sender] = _counts_of(message, bins)
                received = sorted(parts)
                ctx.checkpoints.save({"counts": np.stack([parts[c] for c in received])},
                                     {"params": _identity(ctx.params), "received": received})
                await ctx.report(stage="collecting", metrics={"clients_received": float(len(parts))})
            pooled = np.sum([parts[c] for c in clients], axis=0, dtype=np.int64)
            total = int(pooled.sum())
            ctx.artifacts.save(ARTIFACT, {"counts": pooled, "edges": _edges(low, high, bins)},
                               {**_identity(ctx.params), "total": total, "clients": clients})
            await channel.send(channel.message(RoundKind.FINAL, 1, arrays={"counts": pooled}, num_examples=total))
        ctx.log.info("histogram.done", total=total, clients=len(clients))
        return RoleResult(metrics={"total": float(total), "clients": float(len(clients)),
                                   "nonempty_bins": float(np.count_nonzero(pooled))},
                          outputs={"histogram": ARTIFACT})

    def _restore(self, ctx, clients: list[str]) -> dict[str, np.ndarray]:
        """Counts received by an earlier attempt (a retry or a resume); clients still waiting resend anyway."""
        saved = ctx.checkpoints.load_latest()
        if saved is None or saved.meta.get("params") != _identity(ctx.params):
            return {}
        parts = dict(zip(saved.meta["received"], saved.arrays["counts"].astype(np.int64)))
        ctx.log.info("histogram.resumed", checkpoint=saved.sequence, received=sorted(parts))
        return {c: v for c, v in parts.items() if c in clients}
