"""Executors outlive their scheduler (real Kafka, OS processes, local runner with leases).

A scheduler killed with -9 while its executors run leaves them running; the
restarted scheduler adopts them from their leases and reports their exits, so
the flow goes on to its later steps and ends SUCCEEDED without running any
attempt twice. An executor that dies while no scheduler watches is reported
killed by the next one and retried. A silent (stopped) executor is declared
lost by the monitor's heartbeat check and retried.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.platform import Platform, free_port  # noqa: F401

HEARTBEAT_ENV = {"FERRY_EXECUTOR__HEARTBEAT_S": "0.5", "FERRY_MONITOR__EXECUTOR_LOST_AFTER_S": "20",
                 "FERRY_MONITOR__EXECUTOR_STARTUP_GRACE_S": "10"}


@pytest.fixture(scope="module")
def platform(kafka_bootstrap, tmp_path_factory):
    root = tmp_path_factory.mktemp("adoption-e2e")
    p = Platform(kafka_bootstrap, root, env=HEARTBEAT_ENV).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def work_dir(platform, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    platform.use_work_dir(work)
    return work


def _noop(name: str, parties=("node-a",), *, depends_on=(), **params) -> dict:
    step = {"name": name, "algorithm": "ferry.noop", "version": "1", "params": params,
            "parties": {"worker": list(parties)}}
    if depends_on:
        step["depends_on"] = list(depends_on)
    return step


def executor_pids(flow_id: str) -> dict[str, int]:
    """algo_task_id -> pid of every live executor of `flow_id`, whoever its parent is."""
    from shared.wire.codec import spec_from_text

    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X"):
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        text = next((v[len(b"FERRY_TASK_SPEC="):] for v in environ if v.startswith(b"FERRY_TASK_SPEC=")), None)
        if text is not None:
            spec = spec_from_text(text.decode())
            if spec.flow_id == flow_id:
                found[spec.algo_task_id] = int(entry.name)
    return found


def _algos(view: dict) -> dict[str, dict]:
    return {a["algo_task_id"]: a for t in view["tasks"] for a in t["algorithm_tasks"]}


def _kill_scheduler(platform: Platform) -> None:
    scheduler = platform.services.pop("scheduler")
    scheduler.process.send_signal(signal.SIGKILL)
    scheduler.process.wait(10)


def _restart_scheduler(platform: Platform, work_dir: Path) -> None:
    platform.services["scheduler"] = platform._spawn("scheduler", work_dir)
    platform.services["scheduler"].wait_healthy()


def _all_running(platform: Platform, flow_id: str, step: str, n: int):
    view = platform.flow(flow_id)
    if view is None:
        return None
    algos = [a for t in view["tasks"] if t["step"] == step for a in t["algorithm_tasks"]]
    pids = executor_pids(flow_id)
    if len(algos) == n and all(a["status"] == "RUNNING" for a in algos) and len(pids) == n:
        return pids
    return None


def test_a_scheduler_killed_mid_step_is_replaced_and_the_flow_succeeds_without_rerunning(platform, work_dir):
    flow_id = f"adopt-{uuid.uuid4().hex[:8]}"
    platform.submit({"flow": "adopt", "steps": [
        _noop("long", ("node-a", "node-b"), sleep_s=6),
        _noop("after", ("node-a",), depends_on=["long"])]}, flow_id)
    pids = platform.wait_until(lambda: _all_running(platform, flow_id, "long", 2), "both executors running")

    _kill_scheduler(platform)
    time.sleep(1.0)
    assert executor_pids(flow_id) == pids, "executors must outlive a scheduler killed with -9"
    _restart_scheduler(platform, work_dir)

    view = platform.wait_flow(flow_id, timeout_s=90)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    for algo_id, algo in _algos(view).items():
        assert algo["attempt"] == 1, (algo_id, algo)  # adopted, never dispatched again
        applied = [r["to_status"] for r in platform.history("algorithm-tasks", algo_id) if r["outcome"] == "applied"]
        assert "RETRYING" not in applied and "FAILED" not in applied, (algo_id, applied)
    # The executors' own reports may reach the monitor before the runner saw them exit.
    platform.wait_until(lambda: not list((work_dir / "leases").glob("*.json")),
                        "every lease released once its exit is reported", timeout_s=15)


def test_an_executor_dying_while_no_scheduler_watches_is_reported_killed_and_retried(platform, work_dir):
    flow_id = f"orphan-{uuid.uuid4().hex[:8]}"
    platform.submit({"flow": "orphan", "steps": [_noop("work", ("node-a",), sleep_s=4)]}, flow_id)
    pids = platform.wait_until(lambda: _all_running(platform, flow_id, "work", 1), "the executor running")

    _kill_scheduler(platform)
    (victim,) = pids.values()
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.5)
    _restart_scheduler(platform, work_dir)

    view = platform.wait_flow(flow_id, timeout_s=90)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    (algo,) = _algos(view).values()
    assert algo["attempt"] == 2, algo
    history = platform.history("algorithm-tasks", algo["algo_task_id"])
    retrying = next(r for r in history if r["outcome"] == "applied" and r["to_status"] == "RETRYING")
    assert "killed" in retrying["reason"], retrying


def test_a_silent_executor_is_declared_lost_and_retried(platform, work_dir):
    flow_id = f"silent-{uuid.uuid4().hex[:8]}"
    platform.submit({"flow": "silent", "steps": [_noop("work", ("node-a",), sleep_s=3)]}, flow_id)
    pids = platform.wait_until(lambda: _all_running(platform, flow_id, "work", 1), "the executor running")
    (victim,) = pids.values()
    os.kill(victim, signal.SIGSTOP)  # alive to the OS, silent on the bus
    try:
        view = platform.wait_flow(flow_id, timeout_s=90)
    finally:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    (algo,) = _algos(view).values()
    assert algo["attempt"] == 2, algo
    history = platform.history("algorithm-tasks", algo["algo_task_id"])
    retrying = next(r for r in history if r["outcome"] == "applied" and r["to_status"] == "RETRYING")
    assert "executor lost: not heard from" in retrying["reason"], retrying
