"""Kill the monitor (SIGKILL) mid-stream on a real broker, restart it: the final state equals
an uninterrupted fold, with no event lost and none applied twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from services.monitor.core import MonitorState, fold
from services.monitor.core.query import get_algo_task
from shared.bus.kafka import KafkaBus, KafkaSettings
from shared.clock import ManualClock
from shared.testing.task_streams import lifecycle_events
from shared.wire import codec

ROOT = Path(__file__).resolve().parents[2]
FLOWS = 2500


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(bootstrap: str, state_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "FERRY_KAFKA__BOOTSTRAP": bootstrap, "FERRY_HTTP__PORT": str(port),
           "FERRY_MONITOR__STATE_DIR": str(state_dir), "FERRY_LOG__LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "services.cli", "monitor"], env=env, cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _health(port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}


async def _publish(bootstrap: str, items) -> None:
    bus = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="restart-test"))
    await bus.start()
    try:
        batch = [(topic, env.key.encode(), codec.encode(env)) for topic, env in items]
        for i in range(0, len(batch), 5000):
            await bus.send_batch(batch[i:i + 5000])
    finally:
        await bus.stop()


def _succeeded_flows(port: int) -> list[dict]:
    """Every SUCCEEDED flow, page by page (the API serves at most 1000 per request)."""
    out: list[dict] = []
    while True:
        response = httpx.get(f"http://127.0.0.1:{port}/flows", params={"status": "SUCCEEDED", "limit": 1000,
                                                                     "offset": len(out)}, timeout=5)
        response.raise_for_status()
        page = response.json()
        out += page
        if len(page) < 1000:
            return out


def test_sigkill_and_restart_neither_loses_nor_double_applies(kafka_bootstrap, tmp_path):
    prefix = f"restart-{uuid.uuid4().hex[:6]}"
    events = list(lifecycle_events(FLOWS, ManualClock(), prefix=prefix))
    expected, _ = fold(MonitorState(), [env for _, env in events])
    port, log = _port(), tmp_path / "monitor.log"
    asyncio.run(_publish(kafka_bootstrap, events))

    first = _start(kafka_bootstrap, tmp_path / "state", port, log)
    deadline = time.monotonic() + 90
    while _health(port).get("tasks", 0) < FLOWS // 5 and time.monotonic() < deadline:
        assert first.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)   # mid-stream, between or inside a batch
    first.wait(10)
    killed_at = _health(port)
    assert killed_at == {}  # really gone

    second = _start(kafka_bootstrap, tmp_path / "state", port, log)
    try:
        deadline, done = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            try:
                done = [f for f in _succeeded_flows(port) if f["flow_id"].startswith(prefix)]
            except httpx.HTTPError:
                done = []
            if len(done) == FLOWS:
                break
            time.sleep(0.5)
        assert len(done) == FLOWS, log.read_text()[-3000:]
        for flow_id in random.Random(1).sample([f"{prefix}-{i}" for i in range(FLOWS)], 40):
            algo_id = f"{flow_id}.train.p0"
            want = get_algo_task(expected, algo_id)
            # A flow can be SUCCEEDED while its last progress reports (another topic) are
            # still on their way: wait for them rather than call them lost.
            deadline = time.monotonic() + 30
            while True:
                got = httpx.get(f"http://127.0.0.1:{port}/algorithm-tasks/{algo_id}", timeout=5).json()
                if got["round"] == want.round or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert (got["status"], got["attempt"], got["round"], got["metrics"]) == \
                   (want.status.name, want.attempt, want.round, dict(want.metrics))
            history = httpx.get(f"http://127.0.0.1:{port}/algorithm-tasks/{algo_id}/history", timeout=5).json()
            applied = [h["to_status"] for h in history if h["outcome"] == "applied"]
            # Each transition at most once (none re-applied after the restart). SCHEDULED is
            # skipped when "running" was read before "job created" (two topics, two speeds).
            assert applied in (["PENDING", "SCHEDULED", "RUNNING", "SUCCEEDED"],
                               ["PENDING", "RUNNING", "SUCCEEDED"]), history
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]
