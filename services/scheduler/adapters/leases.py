"""Leases: how a restarted scheduler finds the executors an earlier one started on this machine.

Executors run in their own session and outlive a scheduler killed with -9. For
each job the local runner keeps a lease file (work_dir/leases/<job>.json): the
task spec, the executor's pid and the kernel's start time of that pid (so a
later process that reuses the pid is not taken for ours), and why the runner
last stopped it (intent). The executor touches the lease on every heartbeat and
leaves its exit code next to it as its last act (services/executor/liveness.py),
because only a parent can wait() for a process's exit code.

At start, a scheduler adopts every lease whose process still runs (it watches
it by polling) and reports the end of every other one: the exit code the
executor left, or a kill when it left none. The lease is written before the
process is spawned, so a scheduler killed in between leaves a pid-less lease;
the process is then found by the lease path in its environment, or was never
started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.executor.liveness import exit_file
from services.scheduler.adapters.launchers import LocalProcessLauncher, log_diagnostics
from services.scheduler.core.exits import Intent
from shared.events import AlgorithmTaskSpec
from shared.wire.codec import spec_from_text, spec_to_text

LEASE_ENV = "FERRY_EXECUTOR__LEASE_FILE"
KILLED = -9  # what an executor that left no exit code is taken to have died of


@dataclass(frozen=True)
class Lease:
    name: str
    spec: AlgorithmTaskSpec
    pid: int = 0
    started: str = ""
    intent: Intent = "run"


def process_started(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def find_by_lease(lease_path: Path) -> int | None:
    """The live process whose environment names this lease (a spawn the lease never recorded)."""
    needle = f"{LEASE_ENV}={lease_path}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    return None


class LeaseBook:
    def __init__(self, root: Path):
        self.root = root
        self._log = structlog.get_logger(component="leases")

    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def write(self, lease: Lease) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(lease.name)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps({"name": lease.name, "spec": spec_to_text(lease.spec), "pid": lease.pid,
                                   "started": lease.started, "intent": lease.intent}))
        os.replace(tmp, target)

    def read(self, path: Path) -> Lease | None:
        try:
            doc = json.loads(path.read_text())
            return Lease(doc["name"], spec_from_text(doc["spec"]), int(doc.get("pid", 0)),
                         str(doc.get("started", "")), doc.get("intent", "run"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._log.warning("lease.unreadable", path=str(path), error=str(exc))
            return None

    def all(self) -> list[Lease]:
        if not self.root.is_dir():
            return []
        return [lease for p in sorted(self.root.glob("*.json")) if (lease := self.read(p)) is not None]

    def exit_code(self, name: str) -> int | None:
        try:
            return int(exit_file(self.path(name)).read_text().strip())
        except (OSError, ValueError):
            return None

    def remove(self, name: str) -> None:
        for path in (self.path(name), exit_file(self.path(name))):
            path.unlink(missing_ok=True)


class AdoptedHandle:
    """The Handle of an executor an earlier scheduler started: watched by polling, not wait()."""

    def __init__(self, lease: Lease, book: LeaseBook, log_path: Path, poll_s: float):
        self._lease = lease
        self._book = book
        self._log_path = log_path
        self._poll_s = poll_s

    @property
    def pid(self) -> int:
        return self._lease.pid

    def alive(self) -> bool:
        return process_started(self._lease.pid) == self._lease.started

    async def wait(self) -> int:
        while self.alive():
            await asyncio.sleep(self._poll_s)
        code = self._book.exit_code(self._lease.name)
        return KILLED if code is None else code

    def _signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self._lease.pid, sig)  # its own session: the group is the executor's pid
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def diagnostics(self) -> str:
        return log_diagnostics(self._log_path)


class LeasingLauncher:
    """The local launcher, plus a lease per job so the next scheduler can adopt what it started."""

    name = "local"

    def __init__(self, inner: LocalProcessLauncher, work_dir: Path, poll_s: float = 0.5):
        self._inner = inner
        self._work_dir = work_dir
        self.book = LeaseBook(work_dir / "leases")
        self._poll_s = poll_s

    async def close(self) -> None:
        await self._inner.close()

    async def launch(self, spec: AlgorithmTaskSpec, name: str):
        self.book.write(Lease(name, spec))
        handle = await self._inner.launch(spec, name, {LEASE_ENV: str(self.book.path(name))})
        self.book.write(Lease(name, spec, handle.pid, process_started(handle.pid) or ""))
        return handle

    def set_intent(self, name: str, intent: Intent) -> None:
        lease = self.book.read(self.book.path(name))
        if lease is not None:
            self.book.write(dataclasses.replace(lease, intent=intent))

    def release(self, name: str) -> None:
        self.book.remove(name)

    def adopt(self) -> tuple[list[tuple[Lease, AdoptedHandle]], list[tuple[Lease, int | None]]]:
        """(executors still running, with a handle; ended ones, with the exit code they left or None)."""
        live, ended = [], []
        for lease in self.book.all():
            if not lease.pid:
                pid = find_by_lease(self.book.path(lease.name))
                if pid is not None:
                    lease = dataclasses.replace(lease, pid=pid, started=process_started(pid) or "")
            if lease.pid and lease.started and process_started(lease.pid) == lease.started:
                log_path = self._work_dir / "logs" / f"{lease.name}.log"
                live.append((lease, AdoptedHandle(lease, self.book, log_path, self._poll_s)))
            else:
                ended.append((lease, self.book.exit_code(lease.name)))
        return live, ended
