"""The platform as OS processes on a real broker, for end-to-end tests.

`Platform` starts the splitter, the monitor and the scheduler (local runner:
executors are `python -m services.executor` child processes of the
scheduler) against one Kafka bootstrap, and gives a test what it needs to
drive and observe them: submit a flow document, read and command the
monitor's API, wait for a condition, and list the executor processes the
scheduler runs right now (read from /proc, keyed by algorithm task id).

The splitter and monitor live as long as the Platform; the scheduler is
restarted by `use_work_dir` so every test can have its own work dir (the
local runner's per-party data, checkpoint, artifact and log folders).
Flows of different tests stay apart by their ids. Restart the scheduler only
between flows: it keeps its plan in memory and does not rebuild it on start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen
    port: int
    log: Path
    terminated: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_healthy(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} never became healthy:\n{self.tail()}")

    def terminate(self) -> None:
        """SIGTERM once: a second one could land after the service removed its handler."""
        if self.process.poll() is None and not self.terminated:
            self.process.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout_s: float = 30) -> int:
        self.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


@dataclass(frozen=True)
class ExecutorProcess:
    pid: int
    algo_task_id: str
    flow_id: str
    attempt: int


def live_executors(parent_pid: int | None = None) -> list[ExecutorProcess]:
    """Every live executor process (zombies excluded) read from /proc, optionally only the children
    of `parent_pid`; an executor is known by the FERRY_TASK_SPEC in its environment."""
    from shared.wire.codec import spec_from_text

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            state, ppid = fields[0], int(fields[1])
            if state in ("Z", "X") or (parent_pid is not None and ppid != parent_pid):
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # gone meanwhile
        text = next((v[len(b"FERRY_TASK_SPEC="):] for v in environ if v.startswith(b"FERRY_TASK_SPEC=")), None)
        if text is not None:
            spec = spec_from_text(text.decode())
            found.append(ExecutorProcess(int(entry.name), spec.algo_task_id, spec.flow_id, spec.attempt))
    return sorted(found, key=lambda e: (e.algo_task_id, e.pid))


def executor_pids(flow_id: str) -> dict[str, int]:
    """algo_task_id -> pid of every live executor of `flow_id`, whoever its parent is."""
    return {e.algo_task_id: e.pid for e in live_executors() if e.flow_id == flow_id}


def publish_flow(bootstrap: str, document: Mapping[str, Any] | str, flow_id: str, client_id: str = "e2e-test"):
    """Submit a flow document the way an upstream producer does: a FlowSubmitted on the flows topic."""
    from services.splitter.core.flow_document import parse_flow_document
    from shared import topics
    from shared.bus.kafka import KafkaBus, KafkaSettings
    from shared.clock import SystemClock
    from shared.messaging import EventPublisher

    flow = parse_flow_document(document, default_flow_id=flow_id)

    async def publish() -> None:
        bus = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id=client_id))
        await bus.start()
        try:
            await EventPublisher(bus, client_id, SystemClock()).publish(topics.FLOWS.name, flow.flow_id, flow)
        finally:
            await bus.stop()

    asyncio.run(publish())
    return flow


def platform_fixture(label: str, *, env: Mapping[str, str] | None = None, clean_exit: bool = True):
    """A module-scoped `platform` fixture: one set of services per test module, stopped at its end
    (and, with clean_exit, every service must exit 0). Pair it with the `work_dir` fixture of
    tests/e2e/conftest.py, which gives each test its own work dir."""
    import pytest

    @pytest.fixture(scope="module")
    def platform(kafka_bootstrap, tmp_path_factory):
        p = Platform(kafka_bootstrap, tmp_path_factory.mktemp(label), env=env).start()
        try:
            yield p
        finally:
            codes = p.stop()
            if clean_exit:
                assert set(codes.values()) <= {0}, (codes, p.logs())
    return platform


def new_flow_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def noop_step(name: str, parties=("node-a",), *, depends_on=(), **params) -> dict:
    """A ferry.noop step of a flow document (params: sleep_s, fail, ...)."""
    step = {"name": name, "algorithm": "ferry.noop", "version": "1", "params": params,
            "parties": {"worker": list(parties)}}
    if depends_on:
        step["depends_on"] = list(depends_on)
    return step


def algorithm_tasks(view: dict) -> dict[str, dict]:
    """algo_task_id -> algorithm task view, over every task of a flow view."""
    return {a["algo_task_id"]: a for t in view["tasks"] for a in t["algorithm_tasks"]}


class Platform:
    def __init__(self, bootstrap: str, root_dir: Path, *, max_attempts: int = 3,
                 env: Mapping[str, str] | None = None):
        self.bootstrap = bootstrap
        self.env = dict(env or {})  # extra FERRY_* settings for every service
        self.root_dir = Path(root_dir)
        self.max_attempts = max_attempts
        self.services: dict[str, ServiceProcess] = {}
        self.work_dir: Path | None = None
        self._http = httpx.Client(timeout=5)

    # -- lifecycle -------------------------------------------------------------------------------------

    def _spawn(self, name: str, work_dir: Path) -> ServiceProcess:
        port = free_port()
        # FERRY_KAFKA__* stays: it carries the session broker's TLS settings (kafka_bootstrap).
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_") or k.startswith("FERRY_KAFKA__")}
        env |= {"FERRY_KAFKA__BOOTSTRAP": self.bootstrap, "FERRY_HTTP__PORT": str(port),
                "FERRY_SCHEDULER__WORK_DIR": str(work_dir),
                "FERRY_MONITOR__STATE_DIR": str(self.root_dir / "monitor"),
                "FERRY_MONITOR__MAX_ATTEMPTS": str(self.max_attempts),
                "FERRY_INSTANCE": uuid.uuid4().hex[:6], "PYTHONUNBUFFERED": "1", **self.env}
        log = self.root_dir / f"{name}-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "services.cli", name], env=env, cwd=ROOT,
                                       stdout=out, stderr=subprocess.STDOUT)
        return ServiceProcess(name, process, port, log)

    def start(self, work_dir: Path | None = None) -> "Platform":
        """Start the splitter and the monitor, and the scheduler if `work_dir` is given."""
        self.root_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in ("splitter", "monitor"):
                self.services[name] = self._spawn(name, self.root_dir / "unused-work")
            if work_dir is not None:
                self.services["scheduler"] = self._spawn("scheduler", Path(work_dir))
                self.work_dir = Path(work_dir)
            for service in self.services.values():
                service.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def use_work_dir(self, work_dir: Path) -> None:
        """Restart the scheduler with `work_dir` as the local runner's work dir."""
        if self.work_dir == Path(work_dir):
            return
        old = self.services.pop("scheduler", None)
        if old is not None and (code := old.stop()) != 0:
            raise AssertionError(f"the scheduler exited with {code} on SIGTERM:\n{old.tail()}")
        self.work_dir = Path(work_dir)
        self.services["scheduler"] = self._spawn("scheduler", self.work_dir)
        self.services["scheduler"].wait_healthy()

    def stop(self) -> dict[str, int]:
        codes = {}
        for service in self.services.values():
            service.terminate()
        for name, service in self.services.items():
            codes[name] = service.stop()
        self._http.close()
        return codes

    def logs(self, chars: int = 2500) -> str:
        parts = [f"--- {s.name} ---\n{s.tail(chars)}" for s in self.services.values()]
        if self.work_dir is not None and (self.work_dir / "logs").is_dir():
            for path in sorted((self.work_dir / "logs").glob("*.log"))[-6:]:
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars // 2:]}")
        return "\n".join(parts)

    # -- flows -----------------------------------------------------------------------------------------

    def submit(self, document: Mapping[str, Any] | str, flow_id: str):
        return publish_flow(self.bootstrap, document, flow_id)

    # -- the monitor's API -----------------------------------------------------------------------------

    @property
    def monitor_url(self) -> str:
        return self.services["monitor"].url

    def get(self, path: str) -> dict | list | None:
        try:
            response = self._http.get(self.monitor_url + path)
        except httpx.TransportError:  # a kept-alive connection the server closed meanwhile: once more
            response = self._http.get(self.monitor_url + path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def post(self, path: str, **params) -> httpx.Response:
        return self._http.post(self.monitor_url + path, params=params)

    def flow(self, flow_id: str) -> dict | None:
        return self.get(f"/flows/{flow_id}")

    def task(self, task_id: str) -> dict | None:
        return self.get(f"/tasks/{task_id}")

    def history(self, kind: str, entity_id: str) -> list[dict]:
        return self.get(f"/{kind}/{entity_id}/history") or []

    def command(self, verb: str, flow_id: str = "", *, task_id: str = "", reason: str = "") -> dict:
        path = f"/tasks/{task_id}/{verb}" if task_id else f"/flows/{flow_id}/{verb}"
        response = self.post(path, reason=reason)
        assert response.status_code == 202, (path, response.status_code, response.text)
        return response.json()

    def wait_until(self, probe: Callable[[], T], what: str, timeout_s: float = 60, every_s: float = 0.2) -> T:
        """Call `probe` until it returns something truthy; fail with the services' logs otherwise."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            for service in self.services.values():
                if service.process.poll() is not None:
                    raise AssertionError(f"{service.name} died while waiting for {what}:\n{self.logs()}")
            time.sleep(every_s)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}\n{self.logs()}")

    def wait_flow(self, flow_id: str, statuses=TERMINAL, timeout_s: float = 60) -> dict:
        def probe():
            view = self.flow(flow_id)
            return view if view is not None and view["status"] in statuses else None
        return self.wait_until(probe, f"flow {flow_id} in {statuses}", timeout_s)

    # -- executor processes ----------------------------------------------------------------------------

    def wait_executors_gone(self, flow_id: str | None = None, timeout_s: float = 30) -> None:
        """Wait for a finished flow's executors to exit.

        An executor's exit report is its last message, sent before it closes its Kafka clients
        and the interpreter tears down, so a flow can read SUCCEEDED while its processes are
        still leaving; what matters to a user is that none lingers.
        """
        self.wait_until(lambda: not self.executors(flow_id), f"the executors of {flow_id or 'every flow'} to exit",
                        timeout_s=timeout_s)

    def executors(self, flow_id: str | None = None) -> list[ExecutorProcess]:
        """The scheduler's live executor processes (zombies excluded), optionally of one flow."""
        scheduler = self.services.get("scheduler")
        if scheduler is None:
            return []
        return [e for e in live_executors(parent_pid=scheduler.process.pid)
                if flow_id is None or e.flow_id == flow_id]
