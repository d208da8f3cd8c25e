"""ferry.psi: private set intersection between a guest and its hosts, as a flow step.

Guest and hosts blind their hashed ids (services/executor/vertical/psi.py),
exchange them sorted, blind each other's again, and the guest matches the
double-blinded points. The guest tells each host which of the host's points
are shared by all parties (positions in the host's own sorted list); hosts
learn nothing else. Every party saves `psi-<step>`: its store rows of the
shared ids in the shared order. What each side learns: the intersection and
the size of the other side's set, as in any two-party PSI.

No checkpoint: the secret scalars are never written down, so a suspended or
retried PSI starts again with fresh ones and ends in the same aligned view
(the order depends only on the ids and the step).
"""

from __future__ import annotations

import asyncio

import numpy as np

from services.executor.vertical import psi
from services.executor.vertical.alignment import artifact_name
from services.executor.vertical.conversation import Conversation
from shared.algorithms import RoleResult
from shared.errors import DataError


def _parties(ctx, role: str) -> list[str]:
    return sorted(p.party for p in ctx.task.peers if p.role == role)


def _ids(ctx) -> list[bytes]:
    if ctx.data is None:
        raise DataError(f"party {ctx.task.party} has no dataset for PSI (data_ref {ctx.task.data_ref!r})")
    column = ctx.params["id_column"]
    if column not in ctx.data.schema.names:
        raise DataError(f"params.id_column is {column!r}, but dataset {ctx.task.data_ref!r} of party "
                        f"{ctx.task.party} has columns {list(ctx.data.schema.names)}")
    ids = psi.id_bytes(np.asarray(ctx.data.column(column)))
    psi.check_unique(ids, f"dataset {ctx.task.data_ref!r} of party {ctx.task.party}")
    return ids


def _save(ctx, ids: list[bytes], shared_rows: np.ndarray, context: bytes) -> np.ndarray:
    """Stores and returns this party's shared rows in the order every party uses."""
    order = psi.shared_order(context, [ids[r] for r in shared_rows])
    aligned = np.asarray(shared_rows, np.int64)[order]
    ctx.artifacts.save(artifact_name(ctx.task.step), {"rows": aligned},
                       {"dataset": ctx.task.data_ref, "id_column": ctx.params["id_column"],
                        "size": int(aligned.size), "rows_before": len(ids), "parties": sorted(p.party for p in ctx.task.peers)})
    return aligned


async def _blind(ctx, fn, *args):
    return await asyncio.to_thread(fn, *args, psi.workers_for(ctx.params.get("workers")))


class PsiGuest:
    async def run(self, ctx) -> RoleResult:
        ids, hosts = _ids(ctx), _parties(ctx, "host")
        context = psi.context_of(ctx.task.flow_id, ctx.task.task_id)
        started = ctx.clock.monotonic()
        conv = await Conversation.open(ctx, hosts, ctx.params["timeout_s"])
        try:
            await conv.handshake({"rows": float(len(ids))})
            blinder = psi.Blinder.fresh()
            mine = await _blind(ctx, blinder.hash_and_blind, context, ids)
            order = psi.sorted_order(mine)
            await conv.send(hosts, "blinded", 1, {"points": psi.to_array([mine[i] for i in order])})
            await ctx.report(stage="psi: blinded own ids", metrics={"rows": float(len(ids))})
            in_all = np.ones(len(ids), bool)
            found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for host in hosts:
                theirs = psi.from_array((await conv.expect(host, "blinded", 1))[0]["points"], host)
                theirs_double = await _blind(ctx, blinder.blind, theirs)
                mine_double = psi.from_array((await conv.expect(host, "reblinded", 1))[0]["points"], host)
                if len(mine_double) != len(ids):
                    raise DataError(f"{host} returned {len(mine_double)} re-blinded points for {len(ids)} sent")
                mine_pos, their_pos = psi.matches(mine_double, theirs_double)
                rows = order[mine_pos]
                in_host = np.zeros(len(ids), bool)
                in_host[rows] = True
                in_all &= in_host
                found[host] = (rows, their_pos)
            for host, (rows, their_pos) in found.items():
                await conv.send(host, "shared", 1, {"positions": np.sort(their_pos[in_all[rows]])})
            aligned = _save(ctx, ids, np.flatnonzero(in_all), context)
            for host in hosts:
                await conv.expect(host, "done", 1)
        finally:
            await conv.close()
        return RoleResult(metrics={"rows": float(len(ids)), "shared": float(aligned.size),
                                   "psi_s": ctx.clock.monotonic() - started},
                          outputs={"aligned": artifact_name(ctx.task.step)})


class PsiHost:
    async def run(self, ctx) -> RoleResult:
        ids = _ids(ctx)
        guest = _parties(ctx, "guest")[0]
        context = psi.context_of(ctx.task.flow_id, ctx.task.task_id)
        started = ctx.clock.monotonic()
        conv = await Conversation.open(ctx, [guest], ctx.params["timeout_s"])
        try:
            await conv.handshake({"rows": float(len(ids))})
            blinder = psi.Blinder.fresh()
            mine = await _blind(ctx, blinder.hash_and_blind, context, ids)
            order = psi.sorted_order(mine)
            await conv.send(guest, "blinded", 1, {"points": psi.to_array([mine[i] for i in order])})
            theirs = psi.from_array((await conv.expect(guest, "blinded", 1))[0]["points"], guest)
            await conv.send(guest, "reblinded", 1, {"points": psi.to_array(await _blind(ctx, blinder.blind, theirs))})
            positions = np.asarray((await conv.expect(guest, "shared", 1))[0]["positions"])
            if positions.dtype.kind not in "iu" or positions.ndim != 1 or (positions.size and (
                    positions.min() < 0 or positions.max() >= len(ids) or np.unique(positions).size != positions.size)):
                raise DataError(f"{guest} sent invalid shared positions ({positions.dtype}, shape {positions.shape}) "
                                f"for {len(ids)} points")
            aligned = _save(ctx, ids, order[positions.astype(np.int64)], context)
            await conv.send(guest, "done", 1)
        finally:
            await conv.close()
        return RoleResult(metrics={"rows": float(len(ids)), "shared": float(aligned.size),
                                   "psi_s": ctx.clock.monotonic() - started},
                          outputs={"aligned": artifact_name(ctx.task.step)})
