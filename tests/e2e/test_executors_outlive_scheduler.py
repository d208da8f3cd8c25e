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
from pathlib import Path


from tests.e2e.platform import (Platform, algorithm_tasks, executor_pids, new_flow_id, noop_step,  # noqa: F401
                                platform_fixture)

HEARTBEAT_ENV = {"FERRY_EXECUTOR__HEARTBEAT_S": "0.5", "FERRY_MONITOR__EXECUTOR_LOST_AFTER_S": "20",
                 "FERRY_MONITOR__EXECUTOR_STARTUP_GRACE_S": "10"}


platform = platform_fixture("adoption-e2e", env=HEARTBEAT_ENV, clean_exit=False)


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
    flow_id = new_flow_id("adopt")
    platform.submit({"flow": "adopt", "steps": [
        noop_step("long", ("node-a", "node-b"), sleep_s=6),
        noop_step("after", ("node-a",), depends_on=["long"])]}, flow_id)
    pids = platform.wait_until(lambda: _all_running(platform, flow_id, "long", 2), "both executors running")

    _kill_scheduler(platform)
    time.sleep(1.0)
    assert executor_pids(flow_id) == pids, "executors must outlive a scheduler killed with -9"
    _restart_scheduler(platform, work_dir)

    view = platform.wait_flow(flow_id, timeout_s=90)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    for algo_id, algo in algorithm_tasks(view).items():
        assert algo["attempt"] == 1, (algo_id, algo)  # adopted, never dispatched again
        applied = [r["to_status"] for r in platform.history("algorithm-tasks", algo_id) if r["outcome"] == "applied"]
        assert "RETRYING" not in applied and "FAILED" not in applied, (algo_id, applied)
    # The executors' own reports may reach the monitor before the runner saw them exit.
    platform.wait_until(lambda: not list((work_dir / "leases").glob("*.json")),
                        "every lease released once its exit is reported", timeout_s=15)


def test_an_executor_dying_while_no_scheduler_watches_is_reported_killed_and_retried(platform, work_dir):
    flow_id = new_flow_id("orphan")
    platform.submit({"flow": "orphan", "steps": [noop_step("work", ("node-a",), sleep_s=4)]}, flow_id)
    pids = platform.wait_until(lambda: _all_running(platform, flow_id, "work", 1), "the executor running")

    _kill_scheduler(platform)
    (victim,) = pids.values()
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.5)
    _restart_scheduler(platform, work_dir)

    view = platform.wait_flow(flow_id, timeout_s=90)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    (algo,) = algorithm_tasks(view).values()
    assert algo["attempt"] == 2, algo
    history = platform.history("algorithm-tasks", algo["algo_task_id"])
    retrying = next(r for r in history if r["outcome"] == "applied" and r["to_status"] == "RETRYING")
    assert "killed" in retrying["reason"], retrying


def _alive(pid: int) -> bool:
    """Running or stopped, not gone nor a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_silent_executor_is_declared_lost_retried_and_its_old_attempt_fenced(platform, work_dir):
    flow_id = new_flow_id("silent")
    platform.submit({"flow": "silent", "steps": [noop_step("work", ("node-a",), sleep_s=3)]}, flow_id)
    pids = platform.wait_until(lambda: _all_running(platform, flow_id, "work", 1), "the executor running")
    (victim,) = pids.values()
    os.kill(victim, signal.SIGSTOP)  # alive to the OS, silent on the bus
    try:
        # The retry must not run beside the lost attempt: the scheduler kills the old one.
        platform.wait_until(lambda: not _alive(victim), "the lost attempt's process killed",
                            timeout_s=90)
        try:
            os.kill(victim, signal.SIGCONT)  # were it still there, it would now act again
        except ProcessLookupError:
            pass
        view = platform.wait_flow(flow_id, timeout_s=90)
    finally:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    (algo,) = algorithm_tasks(view).values()
    assert algo["attempt"] == 2, algo
    history = platform.history("algorithm-tasks", algo["algo_task_id"])
    retrying = next(r for r in history if r["outcome"] == "applied" and r["to_status"] == "RETRYING")
    assert "executor lost: not heard from" in retrying["reason"], retrying
    assert not _alive(victim)
    applied = [r for r in history if r["outcome"] == "applied"]
    after = [r["to_status"] for r in applied[applied.index(retrying) + 1:]]
    assert after[-1] == "SUCCEEDED" and not {"RETRYING", "FAILED"} & set(after), after  # attempt 1 never acted
