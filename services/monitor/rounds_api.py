"""GET /tasks/{task_id}/rounds: a task's per-round history, per party and role.

Progress events name tasks by hashed ids; this view joins each series with
its party and role, so a curve needs no second lookup.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Callable

from fastapi import APIRouter, HTTPException, Query

from services.monitor.core.query import task_rounds
from services.monitor.core.state import MonitorState


def rounds_json(state: MonitorState, task_id: str, since: int = 0, party: str | None = None) -> dict | None:
    view = task_rounds(state, task_id, since, party)
    if view is None:
        return None
    body = asdict(view)
    for series, source in zip(body["series"], view.series):
        series["status"] = source.status.name
        for point in series["rounds"]:
            point["metrics"] = finite(point["metrics"])
    return body


def finite(metrics: dict) -> dict:
    """JSON has no NaN or infinity: a mean over no clients becomes null."""
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def build_rounds_router(state: Callable[[], MonitorState]) -> APIRouter:
    router = APIRouter()

    @router.get("/tasks/{task_id}/rounds")
    async def rounds(task_id: str,
                     since: int = Query(0, ge=0, description="only rounds after this one (incremental reads)"),
                     party: str | None = Query(None, description="only this party's series")) -> dict:
        body = rounds_json(state(), task_id, since, party)
        if body is None:
            raise HTTPException(404, detail=f"unknown task {task_id!r}")
        if party is not None and not body["series"]:
            raise HTTPException(404, detail=f"task {task_id!r} has no party {party!r}")
        return body

    return router
