"""ferry.hetero_lr_predict: score aligned rows with the parts of a ferry.hetero_lr model.

Each party loads its own part (artifact hetero-lr-<model_from>) and standardises
its features as in training; each host sends the guest its partial scores
x_h·w_h (what FATE's prediction sends too), the guest adds its own and keeps
the probabilities and labels as artifact predictions-<step>. With labels in the
guest's data, it reports accuracy, AUC and log-loss over the scored rows.
"""

from __future__ import annotations

import numpy as np

from services.executor.vertical import lr
from services.executor.vertical.alignment import aligned_rows, read_rows
from services.executor.vertical.conversation import Conversation
from shared.algorithms import RoleResult
from shared.errors import ConfigurationError, DataError


def _peer(ctx, role: str) -> str:
    return next(p.party for p in ctx.task.peers if p.role == role)


def _scores_of_own_part(ctx) -> np.ndarray:
    p, data = ctx.params, ctx.data
    name = f"hetero-lr-{p['model_from']}"
    if not ctx.artifacts.exists(name):
        raise ConfigurationError(f"params.model_from is {p['model_from']!r}, but party {ctx.task.party} has no "
                                 f"model part {name!r} in this flow")
    if data is None:
        raise DataError(f"party {ctx.task.party} has no dataset to score (data_ref {ctx.task.data_ref!r})")
    model, meta = ctx.artifacts.load(name)
    rows = aligned_rows(ctx, p["align_with"])[0] if p.get("align_with") else np.arange(len(data))
    x, _, names = read_rows(data, rows, meta.get("id_column", p["id_column"]), label=False)
    if names != meta["features"]:
        raise ConfigurationError(f"model part {name!r} of party {ctx.task.party} was trained on features "
                                 f"{meta['features']}, dataset {ctx.task.data_ref!r} has {names}")
    x = (x - model["mean"]) / model["std"]
    if meta.get("intercept"):
        x = lr.with_intercept(x)
    if x.shape[1] != model["w"].shape[0]:
        raise DataError(f"model part {name!r} has {model['w'].shape[0]} weights for {x.shape[1]} inputs")
    return x @ model["w"], rows


class PredictHost:
    async def run(self, ctx) -> RoleResult:
        u, rows = _scores_of_own_part(ctx)
        guest = _peer(ctx, "guest")
        conv = await Conversation.open(ctx, [guest], ctx.params["timeout_s"])
        try:
            await conv.handshake({"rows": float(len(rows))})
            await conv.send(guest, "u_pred", 0, {"u": u})
            await conv.expect(guest, "done", 0)
        finally:
            await conv.close()
        return RoleResult(metrics={"rows": float(len(rows))})


class PredictGuest:
    async def run(self, ctx) -> RoleResult:
        u, rows = _scores_of_own_part(ctx)
        hosts = sorted(p.party for p in ctx.task.peers if p.role == "host")
        conv = await Conversation.open(ctx, hosts, ctx.params["timeout_s"])
        try:
            await conv.handshake({"rows": float(len(rows))})
            for host in hosts:
                u_h = np.asarray((await conv.expect(host, "u_pred", 0))[0].get("u", np.empty(0)), np.float64)
                if u_h.shape != u.shape:
                    raise DataError(f"{host} sent {u_h.shape} scores for {u.shape[0]} rows: are all parties "
                                    f"scoring rows aligned by the same ferry.psi step?")
                u = u + u_h
            proba = lr.sigmoid(u)
            label = (proba >= float(ctx.params["threshold"])).astype(np.int64)
            ctx.artifacts.save(f"predictions-{ctx.task.step}", {"proba": proba, "label": label, "rows": rows},
                               {"model_from": ctx.params["model_from"], "dataset": ctx.task.data_ref})
            metrics = {"rows": float(len(rows)), "positive_rate": float(label.mean()) if len(label) else 0.0}
            if ctx.data.schema.label is not None:
                y = np.asarray(ctx.data.reader.take(ctx.data.schema.label, rows))
                metrics.update(lr.scores(proba, y, float(ctx.params["threshold"])))
            await conv.send(hosts, "done", 0, metrics=metrics)
        finally:
            await conv.close()
        return RoleResult(metrics=metrics, outputs={"predictions": f"predictions-{ctx.task.step}"})
