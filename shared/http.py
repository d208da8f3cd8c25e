"""FastAPI shell every service exposes: /healthz, /metrics, plus its own routes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.errors import FerryError


def build_app(service: str, health: Callable[[], dict], router: APIRouter | None = None,
              ready: Callable[[], dict] | None = None) -> FastAPI:
    app = FastAPI(title=f"Ferry {service}", version="1")

    @app.get("/healthz", summary="Liveness: the process serves (200), else 503",
             responses={503: {"description": "the service is broken and should be restarted"}})
    async def healthz() -> JSONResponse:
        status = health()
        return JSONResponse(status, status_code=200 if status.get("ok") else 503)

    @app.get("/readyz", summary="Readiness: broker reachable, consumer assigned, state restored (200), else 503",
             responses={503: {"description": "not ready; `checks` names what fails"}})
    async def readyz() -> JSONResponse:
        status = ready() if ready is not None else health()
        return JSONResponse(status, status_code=200 if status.get("ok") else 503)

    @app.exception_handler(FerryError)
    async def ferry_error(_request, exc: FerryError) -> JSONResponse:
        body = {"error": type(exc).__name__, "detail": str(exc)}
        errors = getattr(exc, "errors", None)
        if errors:
            body["fields"] = [{"path": e.path, "reason": e.reason} for e in errors]
        return JSONResponse(body, status_code=exc.http_status)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if router is not None:
        app.include_router(router)
    return app


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the service's runtime owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def serve(app: FastAPI, host: str, port: int, stop: asyncio.Event,
                on_started: Callable[[int], None] | None = None) -> None:
    server = _QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                         lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if on_started is not None and server.started:
        on_started(server.servers[0].sockets[0].getsockname()[1])
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task
