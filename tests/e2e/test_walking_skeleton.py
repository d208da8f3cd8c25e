"""A flow travels splitter -> scheduler -> executor -> monitor and ends SUCCEEDED.

Once with the four services as separate OS processes on a real Kafka broker
(the executor as processes started by the scheduler's local runner), once on
the embedded platform (in-process bus, inline executors).
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
from pathlib import Path

import httpx
import pytest

from services.splitter.core.flow_document import parse_flow_document
from shared import topics
from shared.bus.kafka import KafkaBus, KafkaSettings
from shared.clock import SystemClock
from shared.messaging import EventPublisher

ROOT = Path(__file__).resolve().parents[2]
NOOP_FLOW = (ROOT / "examples" / "flows" / "noop.yaml").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became healthy:\n{log.read_text()[-3000:]}")


@pytest.fixture
def services(kafka_bootstrap, tmp_path):
    procs, ports = {}, {}
    for name in ("splitter", "scheduler", "monitor"):
        ports[name] = _free_port()
        env = {**os.environ, "FERRY_KAFKA__BOOTSTRAP": kafka_bootstrap, "FERRY_HTTP__PORT": str(ports[name]),
               "FERRY_SCHEDULER__WORK_DIR": str(tmp_path / "work"),
               "FERRY_MONITOR__STATE_DIR": str(tmp_path / "monitor"), "FERRY_INSTANCE": uuid.uuid4().hex[:6]}
        log = tmp_path / f"{name}.log"
        procs[name] = (subprocess.Popen([sys.executable, "-m", "services.cli", name], env=env, cwd=ROOT,
                                        stdout=log.open("wb"), stderr=subprocess.STDOUT), log)
    try:
        for name, (proc, log) in procs.items():
            _wait_healthy(f"http://127.0.0.1:{ports[name]}/healthz", proc, log)
        yield ports, procs
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _publish(bootstrap: str, flow) -> None:
    bus = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="skeleton-test"))
    await bus.start()
    try:
        await EventPublisher(bus, "upstream", SystemClock()).publish(topics.FLOWS.name, flow.flow_id, flow)
    finally:
        await bus.stop()


def test_flow_succeeds_across_service_processes_on_real_kafka(services, kafka_bootstrap):
    ports, procs = services
    flow = parse_flow_document(NOOP_FLOW, default_flow_id=f"skeleton-{uuid.uuid4().hex[:8]}")
    asyncio.run(_publish(kafka_bootstrap, flow))
    _wait_for_flow(ports, procs, flow.flow_id, expected_tasks=2)
    metrics = httpx.get(f"http://127.0.0.1:{ports['scheduler']}/metrics", timeout=2).text
    assert 'ferry_algorithm_tasks_dispatched_total{runner="local"}' in metrics
    # Clean shutdown on SIGTERM: every service exits 0.
    for proc, _ in procs.values():
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(30) for proc, _ in procs.values()] == [0, 0, 0]


def test_the_documented_upstream_producer_gets_a_flow_run(services, kafka_bootstrap):
    """examples/upstream_producer.py, as the README tells upstream systems to publish."""
    ports, procs = services
    flow_id = f"upstream-{uuid.uuid4().hex[:8]}"
    subprocess.run([sys.executable, str(ROOT / "examples" / "upstream_producer.py"), "--bootstrap",
                    kafka_bootstrap, "--flow-id", flow_id], cwd=ROOT, check=True, timeout=60)
    _wait_for_flow(ports, procs, flow_id, expected_tasks=2)


def _wait_for_flow(ports, procs, flow_id: str, expected_tasks: int) -> None:
    url = f"http://127.0.0.1:{ports['monitor']}/flows/{flow_id}"
    deadline, view = time.monotonic() + 90, {}
    while time.monotonic() < deadline:
        response = httpx.get(url, timeout=2)
        if response.status_code == 200:
            view = response.json()
            if view["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
        time.sleep(0.3)
    logs = {n: log.read_text()[-2000:] for n, (_, log) in procs.items()}
    assert view.get("status") == "SUCCEEDED", (view, logs)
    assert [t["status"] for t in view["tasks"]] == ["SUCCEEDED"] * expected_tasks


async def test_flow_succeeds_on_the_embedded_platform(tmp_path):
    from services.embedded import run_flow_embedded

    flow = parse_flow_document(NOOP_FLOW, default_flow_id="embedded-noop")
    view = await run_flow_embedded(flow, timeout_s=60, work_dir=tmp_path)
    assert view["status"] == "SUCCEEDED", view
    assert [t["status"] for t in view["tasks"]] == ["SUCCEEDED", "SUCCEEDED"]
