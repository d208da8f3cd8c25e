"""The embedded platform with the monitor's HTTP API and dashboard, on its own loop in a thread,
so a synchronous browser driver can use it from the test's thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import Future
from pathlib import Path

from services.embedded import EmbeddedPlatform
from shared.http import build_app, serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LivePlatform:
    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-platform", daemon=True)
        self._ready: Future = Future()
        self._stop: asyncio.Event | None = None
        self._main: Future | None = None
        self.platform: EmbeddedPlatform | None = None

    def __enter__(self) -> "LivePlatform":
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        self._ready.result(timeout=60)
        return self

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with EmbeddedPlatform(self.work_dir) as platform:
                self.platform = platform
                monitor = platform.monitor
                app = build_app("monitor", monitor.health, monitor.router)
                await serve(app, "127.0.0.1", self.port, self._stop,
                            on_started=lambda _port: self._ready.set_result(True))
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def call(self, coro, timeout_s: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def __exit__(self, exc_type, *exc) -> None:
        if self.platform is not None:  # end the open event streams, as the monitor does when it stops
            self._loop.call_soon_threadsafe(self.platform.monitor.hub.close)
        self._loop.call_soon_threadsafe(self._stop.set)
        try:
            self._main.result(timeout=300)
        except TimeoutError:
            if exc_type is None:  # else the test's own failure is the news, not the slow shutdown
                raise
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
