"""A fork server for the local runner: executors start from one pre-imported interpreter.

Importing torch costs each executor process about a second of CPU and several
hundred MB of private memory. The zygote imports it (and the executor's
modules) once; each executor is a fork of it, so those pages are shared
copy-on-write between all executors of the node and start-up is a fork.

Protocol (one Unix-socket connection per executor, JSON lines):
    runner -> zygote  {"env": {...}, "log": "/path/x.log"}
    zygote -> runner  {"pid": 1234}
    zygote -> runner  {"exit": 0}          when the executor ends
The executor runs in its own session (pid == process group id), so the
runner stops it with killpg as it would a child it had spawned itself.

The zygote never runs torch code before forking (no OpenMP pool to inherit),
never starts an event loop, and exits when the runner closes its stdin, so it
cannot outlive the scheduler that started it. Executors it already forked run
on and keep their own session.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
from pathlib import Path

# torch._dynamo: torch.optim imports it on a first step (seconds); forks then inherit it too.
# shared.runtime (settings, logging, the bus factory, and fastapi under them) and
# services.executor.data are what services.executor.main imports when it runs: each executor
# spent 0.5 s of CPU on them after the fork (measured on this loaded 2-core machine; 11 per
# 10-party flow) and held its own copy.
DEFAULT_PRELOAD = ("torch", "torch._dynamo", "services.executor.main", "services.executor.algorithms.federated",
                   "shared.bus.kafka", "shared.runtime", "services.executor.data")


class ZygoteProcess:
    """The executor as the runner sees it: the subset of asyncio.subprocess.Process that it uses."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.pid = pid
        self.returncode: int | None = None
        self._reader, self._writer = reader, writer

    async def wait(self) -> int:
        if self.returncode is None:
            line = await self._reader.readline()
            self._writer.close()
            # A zygote that died takes the exit code with it: report what a lost pod reports.
            self.returncode = int(json.loads(line)["exit"]) if line else -9
        return self.returncode


class Zygote:
    """The runner's side: starts the fork server on first use, asks it for executors."""

    def __init__(self, env: dict[str, str] | None = None, preload: tuple[str, ...] = DEFAULT_PRELOAD,
                 start_timeout_s: float = 120.0):
        self._socket_path: Path | None = None
        self._env = {**os.environ, **(env or {})}  # thread settings must hold when torch is imported
        self._preload = preload
        self._start_timeout_s = start_timeout_s
        self._server: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _ensure_started(self) -> None:
        async with self._lock:
            if self._server is not None and self._server.returncode is None:
                return
            # A private folder (mode 0700): only this user can ask the zygote for an executor.
            # Short, because Unix socket paths are limited to ~100 bytes.
            self._socket_path = Path(tempfile.mkdtemp(prefix="ferry-zygote-")) / "s"
            self._server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.scheduler.adapters.zygote", str(self._socket_path),
                ",".join(self._preload), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=self._env)
            ready = await asyncio.wait_for(self._server.stdout.readline(), self._start_timeout_s)
            if ready.strip() != b"ready":
                raise RuntimeError(f"executor zygote failed to start: {ready!r}")

    async def spawn(self, env: dict[str, str], log_path: Path) -> ZygoteProcess:
        await self._ensure_started()
        reader, writer = await asyncio.open_unix_connection(str(self._socket_path))
        writer.write(json.dumps({"env": env, "log": str(log_path)}).encode() + b"\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 30.0)
        if not reply:
            raise RuntimeError("executor zygote closed the connection before forking")
        return ZygoteProcess(int(json.loads(reply)["pid"]), reader, writer)

    async def close(self) -> None:
        if self._server is not None and self._server.returncode is None:
            self._server.stdin.close()  # the zygote exits on EOF
            try:
                await asyncio.wait_for(self._server.wait(), 10.0)
            except TimeoutError:
                self._server.kill()
                await self._server.wait()
        if self._socket_path is not None:
            self._socket_path.unlink(missing_ok=True)
            self._socket_path.parent.rmdir()


# ------------------------------------------------------------------------------ the fork server


def _run_executor(request: dict, inherited: list[socket.socket]) -> None:
    """In the forked child: become the executor the request describes; never returns."""
    code = 1
    try:
        for s in inherited:  # other executors' connections: their EOF must not wait for us
            s.close()
        os.setsid()
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from services.executor.main import main

        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(socket_path: str, preload: list[str]) -> None:
    for module in preload:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    waiting: dict[int, socket.socket] = {}   # executor pid -> the runner's connection for it
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select(timeout=0.1):
            if key.data == "stdin" and not sys.stdin.buffer.read1(1):
                return  # the runner is gone
            if key.data == "accept":
                conn, _ = listener.accept()
                conn.settimeout(30.0)
                request = json.loads(conn.makefile("rb").readline())
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    _run_executor(request, [listener, conn, *waiting.values()])
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                waiting[pid] = conn
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass  # the runner stopped waiting
                conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], [m for m in sys.argv[2].split(",") if m])
