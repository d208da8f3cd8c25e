"""HTTP for the dashboard: the page, its static files, and a server-sent-event stream.

GET /dashboard                 the single-page dashboard (flows, DAG, curves, history, controls)
GET /dashboard/static/{file}   its script, style and the vendored, pinned libraries
GET /dashboard/events?flow=ID  text/event-stream: "flows" (summaries), "flow" (one flow's detail),
                               "rounds" (new round points), "missing" (no such flow, yet)

The stream is pushed by the monitor's fold (ChangeHub), not by polling: each
batch that touches a flow sends that flow's summary, and its detail and new
rounds to the streams watching it. The page's buttons call the API's own
POST /flows/{id}/{suspend,resume,cancel}, so they get the API's answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse

from services.monitor.core.state import MonitorState
from services.monitor.dashboard.hub import ChangeHub
from services.monitor.dashboard.views import flow_detail, flow_summaries, new_rounds
from shared.devtools.vendor_js import script_names
from shared.metrics import DASHBOARD_STREAMS

STATIC = Path(__file__).resolve().parent / "static"
KEEPALIVE_S = 15.0
_TYPES = {".js": "text/javascript", ".css": "text/css", ".json": "application/json", ".LICENSE": "text/plain",
          ".html": "text/html"}


def _files() -> dict[str, Path]:
    files = {p.name: p for p in STATIC.glob("*") if p.is_file()}
    files.update({f"vendor/{p.name}": p for p in (STATIC / "vendor").glob("*") if p.is_file()})
    return files


def _page() -> str:
    scripts = "\n".join(f'<script src="/dashboard/static/vendor/{name}"></script>' for name in script_names())
    return (STATIC / "index.html").read_text().replace("<!-- vendor scripts -->", scripts)


def _event(kind: str, data) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def build_dashboard_router(state: Callable[[], MonitorState], hub: ChangeHub) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = _files()

    @router.get("/dashboard")
    async def page() -> HTMLResponse:
        return HTMLResponse(_page())

    @router.get("/dashboard/static/{name:path}")
    async def static(name: str) -> FileResponse:
        path = files.get(name)  # only the files shipped with the dashboard: no path from the URL
        if path is None:
            raise HTTPException(404, detail=f"no dashboard file {name!r}")
        return FileResponse(path, media_type=_TYPES.get(path.suffix, "application/octet-stream"))

    @router.get("/dashboard/events")
    async def events(request: Request, flow: str | None = None) -> StreamingResponse:
        subscription = hub.subscribe()  # before the first read: no change slips between the two

        async def stream():
            sent: dict[str, dict] = {}
            DASHBOARD_STREAMS.inc()
            try:
                async for chunk in _run(sent):
                    yield chunk
            finally:
                DASHBOARD_STREAMS.dec()

        async def _run(sent: dict):
            with subscription:
                current = state()
                yield _event("flows", flow_summaries(current))
                if flow:
                    yield _flow_events(current, flow, None, sent)
                while not subscription.closed:
                    changed = await subscription.next(KEEPALIVE_S)
                    if changed is None:
                        if subscription.closed or await request.is_disconnected():
                            return
                        yield ": keep-alive\n\n"
                        continue
                    flow_ids, task_ids = changed
                    current = state()
                    flow_ids |= {t.flow_id for t in (current.tasks.get(i) for i in task_ids) if t is not None}
                    yield _event("flows", flow_summaries(current, sorted(flow_ids)))
                    if flow and flow in flow_ids:
                        yield _flow_events(current, flow, task_ids, sent)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return router


def _flow_events(current: MonitorState, flow_id: str, task_ids, sent: dict) -> str:
    detail = flow_detail(current, flow_id)
    if detail is None:
        return _event("missing", {"flow_id": flow_id})
    tasks = [t["task_id"] for t in detail["tasks"]] if task_ids is None else [
        t["task_id"] for t in detail["tasks"] if t["task_id"] in task_ids]
    out = _event("flow", detail)
    rounds = new_rounds(current, tasks, sent)
    if rounds:
        out += _event("rounds", rounds)
    return out
