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


MAX_BODY_BYTES = 64 * 1024  # every body a service accepts (commands) is a few hundred bytes


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413 before anything reads or parses it:
    by its Content-Length when it has one, else by counting while it arrives."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message
        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = b'{"error":"PayloadTooLarge","detail":"request body over %d bytes"}' % self.limit
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


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
    app.add_middleware(BodyLimit)
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
