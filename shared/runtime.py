"""Entry-point plumbing shared by the services: settings -> bus -> service -> HTTP.

A service is any object with `name`, `default_port`, `async run(stop)`,
`health() -> dict`, an optional `router` and an optional `readiness`
(shared.readiness.Readiness, probed here and served at /readyz). SIGTERM and SIGINT set the stop
event; the service finishes its current message, commits and returns.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Callable, Protocol

import structlog
from fastapi import APIRouter

from shared.bus.port import Bus
from shared.clock import Clock, SystemClock
from shared.errors import ConfigurationError
from shared.http import build_app, serve
from shared.logging import configure_logging
from shared.settings import FerrySettings


class Service(Protocol):
    name: str
    default_port: int
    router: APIRouter | None

    async def run(self, stop: asyncio.Event) -> None: ...
    def health(self) -> dict: ...


def make_bus(settings: FerrySettings, client_id: str, role: str | None = None) -> Bus:
    """``role``: whose certificate the bus presents when FERRY_KAFKA__TLS_CERT_DIR is used."""
    if settings.bus.kind == "memory":
        raise SystemExit("FERRY_BUS__KIND=memory only works inside `ferry demo`/`ferry embedded`, "
                         "where all services share one process")
    from shared.bus.kafka import KafkaBus

    return KafkaBus(settings.kafka.adapter_settings(client_id, role))


async def run_with_http(service: Service, settings: FerrySettings, stop: asyncio.Event) -> None:
    log = structlog.get_logger(service=service.name)
    tasks = [asyncio.create_task(service.run(stop), name=f"{service.name}.run")]
    readiness = getattr(service, "readiness", None)
    if readiness is not None:
        tasks.append(asyncio.create_task(readiness.run(stop), name=f"{service.name}.readiness"))
    port = settings.http.port or service.default_port
    if settings.http.port >= 0:
        app = build_app(service.name, service.health, service.router,
                        readiness.report if readiness is not None else None)
        tasks.append(asyncio.create_task(
            serve(app, settings.http.host, port, stop,
                  on_started=lambda p: log.info("http.started", port=p)), name=f"{service.name}.http"))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=False)


def run_service(build: Callable[[FerrySettings, Bus, Clock], Service], name: str) -> int:
    settings = FerrySettings()
    configure_logging(settings.log.level, settings.log.json_output)
    log = structlog.get_logger(service=name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        bus = make_bus(settings, f"{name}-{settings.instance}", role=name)
        try:
            await bus.start()
        except ConfigurationError as exc:  # e.g. no TLS settings: say which, exit without a traceback
            log.error("service.misconfigured", error=str(exc))
            raise SystemExit(exc.exit_code) from None
        try:
            service = build(settings, bus, SystemClock())
            log.info("service.started", bootstrap=settings.kafka.bootstrap)
            await run_with_http(service, settings, stop)
        finally:
            await bus.stop()
            log.info("service.stopped")

    asyncio.run(main())
    return 0
