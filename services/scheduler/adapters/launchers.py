"""How executors start on this machine: as OS processes (local) or asyncio tasks (inline).

The local launcher gives a process the same contract a Kubernetes Job gives a
pod: FERRY_TASK_SPEC plus the party's folders and the bus settings in the
environment, SIGTERM to stop, the exit code to classify. The inline launcher
runs the executor inside this process for the embedded default, where the
in-process bus cannot cross a process boundary.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

from shared.events import AlgorithmTaskSpec
from shared.wire.codec import spec_to_text

if TYPE_CHECKING:
    from services.scheduler.adapters.cpu_limits import CpuLimiter
    from services.scheduler.adapters.zygote import Zygote


def failure_summary(log_text: str) -> str:
    """The executor's own account of why it failed: its last error log record, else its last line.

    The summary comes first in an Observation's message (readers may keep only its
    start), the log's tail after it.
    """
    lines = [line for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            trace = [t for t in str(record.get("exception", "")).splitlines() if t.strip()]
            detail = record.get("error") or (trace[-1] if trace else "")
            kind = record.get("error_type", "")
            return ": ".join(str(p) for p in (record.get("event", ""), kind, detail) if p)
    return lines[-1] if lines else ""


def party_dirs(work_dir: Path, party: str) -> dict[str, Path]:
    root = work_dir / "parties" / party
    return {"data": root / "data", "checkpoints": root / "checkpoints", "artifacts": root / "artifacts"}


class _ProcessHandle:
    def __init__(self, process: asyncio.subprocess.Process, log_path: Path,
                 on_exit: Callable[[], None] = lambda: None):
        self._process = process
        self._log_path = log_path
        self._on_exit = on_exit  # e.g. remove the executor's CPU-limit cgroup

    @property
    def pid(self) -> int:
        return self._process.pid

    async def wait(self) -> int:
        code = await self._process.wait()
        self._on_exit()
        return code

    def terminate(self) -> None:
        if self._process.returncode is None:
            os.killpg(self._process.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self._process.returncode is None:
            os.killpg(self._process.pid, signal.SIGKILL)

    def diagnostics(self) -> str:
        return log_diagnostics(self._log_path)


def log_diagnostics(log_path) -> str:
    """Why an executor failed, from the tail of its log: the failure summary, then the tail."""
    try:
        tail = log_path.read_text(errors="replace")[-8000:]
    except OSError:
        return ""
    return f"{failure_summary(tail)}\n--- log tail ---\n{tail[-1500:]}"


class LocalProcessLauncher:
    name = "local"

    def __init__(self, work_dir: Path, base_env: dict[str, str], zygote: "Zygote | None" = None,
                 cpu: "CpuLimiter | None" = None):
        self._work_dir = work_dir
        self._base_env = base_env
        self._zygote = zygote  # fork executors from a pre-imported interpreter (adapters/zygote.py)
        self._cpu = cpu        # per-party CPU limits (adapters/cpu_limits.py)

    async def close(self) -> None:
        if self._zygote is not None:
            await self._zygote.close()
        if self._cpu is not None:
            self._cpu.close()

    async def launch(self, spec: AlgorithmTaskSpec, name: str,
                     extra_env: dict[str, str] | None = None) -> _ProcessHandle:
        dirs = party_dirs(self._work_dir, spec.party)
        log_dir = self._work_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self._base_env,
               **self._identity_env(spec),
               "FERRY_TASK_SPEC": spec_to_text(spec),
               "FERRY_EXECUTOR__DATA_DIR": str(dirs["data"]),
               "FERRY_EXECUTOR__CHECKPOINT_DIR": str(dirs["checkpoints"]),
               "FERRY_EXECUTOR__ARTIFACTS_DIR": str(dirs["artifacts"]), **(extra_env or {})}
        log_path = log_dir / f"{name}.log"
        if self._zygote is not None:
            process = await self._zygote.spawn(env, log_path)
        else:
            with open(log_path, "ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services.executor", env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file, stderr=log_file, start_new_session=True)
        handle = _ProcessHandle(process, log_path)
        cores = self._cpu.cores_for(spec.party) if self._cpu is not None else None
        if cores is not None:
            try:
                self._cpu.confine(name, process.pid, cores)
            except Exception:
                handle.kill()  # an executor must not run unlimited when its party has a limit
                await process.wait()
                raise
            handle = _ProcessHandle(process, log_path, lambda: self._cpu.release(name))
        return handle

    def _identity_env(self, spec: AlgorithmTaskSpec) -> dict[str, str]:
        """Development provisioning: unless the operator named a key registry, every party of the
        task gets a key under <work_dir>/keys (made on first use) and the registry of them all."""
        if "FERRY_FEDERATION__KEY_REGISTRY" in {**os.environ, **self._base_env}:
            return {}
        from services.executor.federation.identity import ensure_dev_keys

        template, registry = ensure_dev_keys(self._work_dir / "keys", [spec.party, *(p.party for p in spec.peers)])
        return {"FERRY_FEDERATION__IDENTITY_KEY_FILE": str(template), "FERRY_FEDERATION__KEY_REGISTRY": str(registry)}


InlineTarget = Callable[[AlgorithmTaskSpec, dict[str, Path], asyncio.Event], Awaitable[int]]


class _TaskHandle:
    def __init__(self, task: asyncio.Task, stop: asyncio.Event):
        self._task = task
        self._stop = stop

    async def wait(self) -> int:
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():
                return -9
            raise

    def terminate(self) -> None:
        self._stop.set()  # what SIGTERM does in a real executor

    def kill(self) -> None:
        self._task.cancel()

    def diagnostics(self) -> str:
        exc = self._task.exception() if self._task.done() and not self._task.cancelled() else None
        return repr(exc) if exc else ""


class InlineLauncher:
    name = "inline"

    def __init__(self, work_dir: Path, target: InlineTarget):
        self._work_dir = work_dir
        self._target = target

    async def launch(self, spec: AlgorithmTaskSpec, name: str) -> _TaskHandle:
        stop = asyncio.Event()
        task = asyncio.create_task(self._target(spec, party_dirs(self._work_dir, spec.party), stop), name=name)
        return _TaskHandle(task, stop)
