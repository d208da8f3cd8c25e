"""ferry.psi: private set intersection between a guest and its hosts, as a flow step.

Guest and hosts blind their hashed ids (services/executor/vertical/psi.py),
exchange them sorted, in messages of POINTS_PER_MESSAGE points (the transport
cuts each into records under the bus's size limit), blind each other's again
batch by batch as they arrive, and the guest matches the double-blinded points. The guest tells each host which of the host's points
are shared by all parties (positions in the host's own sorted list); hosts
learn nothing else. Every party saves `psi-<step>`: its store rows of the
shared ids in the shared order. What each side learns: the intersection and
the size of the other side's set, as in any two-party PSI; with several hosts
the guest also learns which ids it shares with each host.

No checkpoint: the secret scalars are never written down, so a suspended or
retried PSI starts again with fresh ones and ends in the same aligned view
(the order depends only on the ids and the step).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from services.executor.vertical import psi
from services.executor.vertical.alignment import artifact_name
from services.executor.vertical.conversation import Conversation
from shared.algorithms import RoleResult
from shared.errors import DataError

# Own ids hashed and blinded per slice, so a stop request is seen within one slice (seconds).
SLICE = 65_536
# Points per wire message (1 MiB): each is a few records, and the receiver starts on it at once.
POINTS_PER_MESSAGE = 32_768


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


async def _in_pool(ctx, pool, fn, *args):
    """Runs a batch of PSI work on the pool without blocking the event loop, then honours a stop."""
    result = await asyncio.to_thread(fn, *args, pool)
    ctx.check_stop()
    return result


async def _blind_own(ctx, pool, blinder: psi.Blinder, context: bytes, ids: list[bytes]) -> bytes:
    """a·H(id) for every own id, a slice at a time so a stop request is seen within one slice."""
    parts = []
    for start in range(0, len(ids), SLICE):
        parts.append(await _in_pool(ctx, pool, blinder.hash_and_blind, context, ids[start:start + SLICE]))
    return b"".join(parts)


async def _send_points(conv, to, tag: str, blob: bytes) -> None:
    for seq, part in enumerate(psi.batches(blob, POINTS_PER_MESSAGE)):
        await conv.send(to, tag, seq, {"points": psi.to_array(part)})


async def _receive_points(conv, sender: str, tag: str, points: int, each=None) -> bytes:
    """A peer's `points` points sent as `tag` messages; `each(seq, part)` (async) maps every
    message as it arrives, so work on the first batches overlaps the peer's sending of the rest."""
    parts = []
    for seq in range(psi.batch_count(points, POINTS_PER_MESSAGE)):
        part = psi.from_array((await conv.expect(sender, tag, seq))[0]["points"], sender)
        parts.append(await each(seq, part) if each else part)
    received = sum(len(p) for p in parts) // psi.POINT_BYTES
    if received != points:
        raise DataError(f"{sender} sent {received} {tag} PSI points, announced {points}")
    return b"".join(parts)


def _context(ctx) -> bytes:
    return psi.context_of(ctx.task.flow_id, ctx.task.task_id, [ctx.task.party, *(p.party for p in ctx.task.peers)])


def _announced(conv, peer: str) -> int:
    rows = conv.hello[peer].get("rows", -1.0)
    if not (rows >= 0 and float(rows).is_integer()):
        raise DataError(f"{peer} announced {rows!r} PSI ids; expected a count")
    return int(rows)


def _done(ctx, ids, aligned, started) -> RoleResult:
    return RoleResult(metrics={"rows": float(len(ids)), "shared": float(aligned.size),
                               "psi_s": ctx.clock.monotonic() - started},
                      outputs={"aligned": artifact_name(ctx.task.step)})


class PsiGuest:
    async def run(self, ctx) -> RoleResult:
        ids, hosts, context = _ids(ctx), _parties(ctx, "host"), _context(ctx)
        started = ctx.clock.monotonic()
        conv = await Conversation.open(ctx, hosts, ctx.params["timeout_s"])
        try:
            await conv.handshake({"rows": float(len(ids))})
            blinder = psi.Blinder.fresh()
            with ThreadPoolExecutor(psi.workers_for(ctx.params.get("workers")), thread_name_prefix="psi") as pool:
                mine = await _blind_own(ctx, pool, blinder, context, ids)
                order = psi.sorted_order(mine)
                await _send_points(conv, hosts, "blinded", psi.take(mine, order))
                await ctx.report(stage="psi: blinded own ids", metrics={"rows": float(len(ids))})
                in_all = np.ones(len(ids), bool)
                found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
                for host in hosts:
                    async def reblind(seq: int, part: bytes, host=host) -> bytes:
                        return await _in_pool(ctx, pool, blinder.blind, part, host)

                    theirs_double = await _receive_points(conv, host, "blinded", _announced(conv, host), reblind)
                    mine_double = await _receive_points(conv, host, "reblinded", len(ids))
                    mine_pos, their_pos = psi.matches(mine_double, theirs_double)
                    rows = order[mine_pos]
                    in_host = np.zeros(len(ids), bool)
                    in_host[rows] = True
                    in_all &= in_host
                    found[host] = (rows, their_pos)
                    await ctx.report(stage=f"psi: matched with {host}", metrics={"rows": float(len(ids))})
            for host, (rows, their_pos) in found.items():
                await conv.send(host, "shared", 0, {"positions": np.sort(their_pos[in_all[rows]])})
            aligned = _save(ctx, ids, np.flatnonzero(in_all), context)
            for host in hosts:
                await conv.expect(host, "done", 0)
        finally:
            await conv.close()
        return _done(ctx, ids, aligned, started)


class PsiHost:
    async def run(self, ctx) -> RoleResult:
        ids, guest, context = _ids(ctx), _parties(ctx, "guest")[0], _context(ctx)
        started = ctx.clock.monotonic()
        conv = await Conversation.open(ctx, [guest], ctx.params["timeout_s"])
        try:
            await conv.handshake({"rows": float(len(ids))})
            blinder = psi.Blinder.fresh()
            with ThreadPoolExecutor(psi.workers_for(ctx.params.get("workers")), thread_name_prefix="psi") as pool:
                mine = await _blind_own(ctx, pool, blinder, context, ids)
                order = psi.sorted_order(mine)
                await _send_points(conv, guest, "blinded", psi.take(mine, order))

                announced = _announced(conv, guest)

                async def reblind_and_return(seq: int, part: bytes) -> bytes:
                    # The guest's points go back re-blinded, in the order and batches they came in.
                    double = await _in_pool(ctx, pool, blinder.blind, part, guest)
                    await conv.send(guest, "reblinded", seq, {"points": psi.to_array(double)})
                    return part

                await _receive_points(conv, guest, "blinded", announced, reblind_and_return)
            positions = np.asarray((await conv.expect(guest, "shared", 0))[0]["positions"])
            if positions.dtype.kind not in "iu" or positions.ndim != 1 or (positions.size and (
                    positions.min() < 0 or positions.max() >= len(ids) or np.unique(positions).size != positions.size)):
                raise DataError(f"{guest} sent invalid shared positions ({positions.dtype}, shape {positions.shape}) "
                                f"for {len(ids)} points")
            aligned = _save(ctx, ids, order[positions.astype(np.int64)], context)
            await conv.send(guest, "done", 0)
        finally:
            await conv.close()
        return _done(ctx, ids, aligned, started)
