"""The scheduler end to end: splitter, scheduler (local runner) and monitor as OS processes on a
real broker, executors as processes of the scheduler, driven through the monitor's API.

One set of services per module (tests/e2e/platform.py); every test has its own work dir (the
scheduler is restarted on it) and its own flow ids.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np

from tests.e2e.platform import Platform, algorithm_tasks, new_flow_id, noop_step, platform_fixture

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
ACTIVE = ("SCHEDULED", "RUNNING")


platform = platform_fixture("scheduler-e2e")


def _first(history: list[dict], statuses) -> dict | None:
    return next((r for r in history if r["outcome"] == "applied" and r["to_status"] in statuses), None)


# -- 1. dispatch and dependencies --------------------------------------------------------------------

def test_diamond_dependencies_release_each_step_after_its_dependencies_succeeded(platform, work_dir):
    flow_id = new_flow_id("diamond")
    platform.submit({"flow": "diamond", "steps": [
        noop_step("a", sleep_s=0.2),
        noop_step("b", ("node-a", "node-b"), depends_on=["a"], sleep_s=0.1),
        noop_step("c", ("node-a", "node-b"), depends_on=["a"], sleep_s=2.0),
        noop_step("d", depends_on=["b", "c"]),
    ]}, flow_id)
    view = platform.wait_flow(flow_id, timeout_s=90)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    assert {t["task_id"].rsplit(".", 1)[-1]: t["status"] for t in view["tasks"]} == dict.fromkeys("abcd", "SUCCEEDED")
    assert {a["status"] for a in algorithm_tasks(view).values()} == {"SUCCEEDED"}
    assert {a["attempt"] for a in algorithm_tasks(view).values()} == {1}

    tasks = {t["step"]: t for t in view["tasks"]}
    succeeded_at = {}
    for step, task in tasks.items():
        record = _first(platform.history("tasks", task["task_id"]), ("SUCCEEDED",))
        assert record is not None, (step, platform.history("tasks", task["task_id"]))
        succeeded_at[step] = record["at_ms"]
    # A member's first sign of life (job created / executor running) comes after every dependency
    # SUCCEEDED, by the same clock: the scheduler acted on the monitor's word, not on its own.
    for step, deps in (("b", "a"), ("c", "a"), ("d", "bc")):
        for algo in tasks[step]["algorithm_tasks"]:
            started = _first(platform.history("algorithm-tasks", algo["algo_task_id"]), ACTIVE)
            assert started is not None
            assert started["at_ms"] >= max(succeeded_at[dep] for dep in deps), (step, started, succeeded_at)
    assert succeeded_at["c"] > succeeded_at["b"]  # c sleeps longer: d really waited for the later one
    platform.wait_executors_gone(flow_id)


# -- 2. suspend and resume mid-training --------------------------------------------------------------

def _fedavg_flow(rounds: int) -> dict:
    return {"flow": "fedavg-e2e",
            "parties": {**{h: {"data": "breast_cancer"} for h in HOSPITALS}, "coordinator": {}},
            "steps": [{"name": "train", "algorithm": "ferry.fedavg", "version": "1",
                       "params": {"model": "logreg", "rounds": rounds, "local_epochs": 1, "batch_size": 32,
                                  "lr": 0.01, "optimizer": "sgd", "strategy": "fedavg", "min_clients": 3,
                                  "seed": 7, "round_timeout_s": 60},
                       "parties": {"client": list(HOSPITALS), "aggregator": "coordinator"}}]}


def _aggregator(platform: Platform, flow_id: str) -> dict:
    task = platform.task(f"{flow_id}.train")
    return next(a for a in task["algorithm_tasks"] if a["role"] == "aggregator") if task else {}


def _model(work_dir, flow_id: str) -> dict[str, np.ndarray]:
    path = work_dir / "parties" / "coordinator" / "artifacts" / flow_id / "model-train.npz"
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_suspend_and_resume_mid_training_ends_with_the_uninterrupted_model(platform, work_dir):
    from services.demo import prepare_parties

    prepare_parties(work_dir)
    rounds = 30
    reference, resumed = new_flow_id("fedavg-ref"), new_flow_id("fedavg-sr")
    platform.submit(_fedavg_flow(rounds), reference)
    platform.submit(_fedavg_flow(rounds), resumed)

    at = platform.wait_until(lambda: _aggregator(platform, resumed).get("round", 0) >= 3 and
                             _aggregator(platform, resumed)["round"], "the aggregator's round 3", timeout_s=120,
                             every_s=0.1)
    assert at < rounds, "training ended before it could be suspended; raise the rounds"
    platform.command("suspend", resumed)
    view = platform.wait_flow(resumed, ("SUSPENDED", "SUCCEEDED", "FAILED", "CANCELLED"), timeout_s=60)
    assert view["status"] == "SUSPENDED", (view, platform.logs())
    assert [t["status"] for t in view["tasks"]] == ["SUSPENDED"]
    assert {a["status"] for a in algorithm_tasks(view).values()} == {"SUSPENDED"}
    stopped_at = _aggregator(platform, resumed)["round"]
    assert stopped_at < rounds
    platform.wait_until(lambda: not platform.executors(resumed), "the suspended executors to exit", timeout_s=10)
    checkpoints = sorted((work_dir / "parties" / "coordinator" / "checkpoints").glob(f"{resumed}.*/ckpt-*.json"))
    assert checkpoints, "the aggregator left no checkpoint"

    time.sleep(1)  # suspended for a while: nothing restarts on its own
    assert not platform.executors(resumed)
    assert platform.flow(resumed)["status"] == "SUSPENDED"

    platform.command("resume", resumed)
    view = platform.wait_flow(resumed, timeout_s=120)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    assert {a["attempt"] for a in algorithm_tasks(view).values()} == {1}  # resumed, not retried
    history = platform.history("algorithm-tasks", f"{resumed}.train.coordinator.aggregator")
    assert [r["to_status"] for r in history if r["outcome"] == "applied"].count("SUSPENDED") == 1
    resumes = [json.loads(line) for path in (work_dir / "logs").glob(f"*{resumed.lower()}*aggregator*.log")
               for line in path.read_text().splitlines() if '"aggregator.resumed"' in line]
    assert len(resumes) == 1, "the aggregator did not continue from its checkpoint"
    assert 3 <= resumes[0]["after_round"] <= stopped_at, (resumes, stopped_at)

    view = platform.wait_flow(reference, timeout_s=120)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    # The arrays, bit for bit (the .npz files themselves differ: zip entries carry their write time).
    expected, got = _model(work_dir, reference), _model(work_dir, resumed)
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert expected[name].dtype == got[name].dtype and expected[name].shape == got[name].shape
        assert np.isfinite(expected[name]).all()
        assert expected[name].tobytes() == got[name].tobytes(), f"{name} differs after suspend/resume"
    scores = [{k: _aggregator(platform, f)["metrics"][k] for k in ("test_accuracy", "test_loss")}
              for f in (reference, resumed)]
    assert scores[0] == scores[1]
    platform.wait_executors_gone()


# -- 3. cancel -----------------------------------------------------------------------------------------

def test_cancel_stops_running_executors_and_dependants_never_run(platform, work_dir):
    flow_id = new_flow_id("cancel")
    platform.submit({"flow": "cancel", "steps": [
        noop_step("long", ("node-a", "node-b"), sleep_s=60),
        noop_step("after", depends_on=["long"]),
    ]}, flow_id)

    def both_running():
        task = platform.task(f"{flow_id}.long")
        running = task and all(a["status"] == "RUNNING" for a in task["algorithm_tasks"])
        return running and len(platform.executors(flow_id)) == 2
    platform.wait_until(both_running, "both executors of the long step running", timeout_s=30)

    started = time.monotonic()
    platform.command("cancel", flow_id, reason="e2e test")
    view = platform.wait_flow(flow_id, timeout_s=15)
    platform.wait_until(lambda: not platform.executors(flow_id), "the cancelled executors to exit", timeout_s=5)
    took = time.monotonic() - started
    assert view["status"] == "CANCELLED", (view, platform.logs())
    assert took < 10, f"cancel took {took:.1f} s"
    assert [t["status"] for t in view["tasks"]] == ["CANCELLED", "CANCELLED"]
    after = next(t for t in view["tasks"] if t["step"] == "after")
    for algo in after["algorithm_tasks"]:
        assert algo["job_name"] == ""
        history = platform.history("algorithm-tasks", algo["algo_task_id"])
        assert _first(history, ACTIVE) is None, history
    time.sleep(1)  # nothing starts late either
    assert not platform.executors(flow_id)
    assert not any("after" in p.name for p in (work_dir / "logs").glob(f"*{flow_id.lower()}*"))


# -- 4. retries ------------------------------------------------------------------------------------

def test_a_killed_executor_is_retried_and_a_non_retriable_failure_is_not(platform, work_dir):
    killed, failing = new_flow_id("killed"), new_flow_id("failing")
    platform.submit({"flow": "killed", "steps": [noop_step("work", sleep_s=3)]}, killed)
    platform.submit({"flow": "failing", "steps": [noop_step("work", fail=True), noop_step("next", depends_on=["work"])]},
                    failing)

    def running_executor():
        task = platform.task(f"{killed}.work")
        procs = platform.executors(killed)
        if task and task["algorithm_tasks"][0]["status"] == "RUNNING" and len(procs) == 1:
            return procs[0]
        return None
    victim = platform.wait_until(running_executor, "the executor to run", timeout_s=30)
    assert victim.attempt == 1
    os.kill(victim.pid, signal.SIGKILL)

    view = platform.wait_flow(killed, timeout_s=60)
    assert view["status"] == "SUCCEEDED", (view, platform.logs())
    algo = view["tasks"][0]["algorithm_tasks"][0]
    assert algo["status"] == "SUCCEEDED" and algo["attempt"] == 2
    history = platform.history("algorithm-tasks", algo["algo_task_id"])
    retrying = _first(history, ("RETRYING",))
    assert retrying is not None and retrying["attempt"] == 2, history
    assert "killed" in retrying["reason"] and "retrying as attempt 2" in retrying["reason"], retrying

    view = platform.wait_flow(failing, timeout_s=60)
    assert view["status"] == "FAILED", view
    work, after = view["tasks"]
    algo = work["algorithm_tasks"][0]
    assert (work["status"], algo["status"], algo["attempt"]) == ("FAILED", "FAILED", 1)
    assert "not retriable" in algo["reason"] and "configuration error" in algo["reason"], algo["reason"]
    assert "executor.failed: ConfigurationError: ferry.noop was asked to fail" in algo["reason"], algo["reason"]
    assert after["status"] == "CANCELLED"
    assert _first(platform.history("algorithm-tasks", after["algorithm_tasks"][0]["algo_task_id"]), ACTIVE) is None
    platform.wait_executors_gone()


# -- 5. missing data ----------------------------------------------------------------------------------

def test_a_party_without_its_data_fails_the_step_with_a_clear_reason(platform, work_dir):
    from services.demo import prepare_parties

    prepare_parties(work_dir)  # hospital-a/b/c and pooled; hospital-z has nothing on this node
    missing_on_node, undeclared = new_flow_id("nodata"), new_flow_id("undeclared")
    flow = _fedavg_flow(rounds=3)
    flow["parties"]["hospital-z"] = {"data": "breast_cancer"}
    flow["steps"][0]["parties"]["client"] = ["hospital-a", "hospital-z"]
    flow["steps"][0]["params"]["min_clients"] = 2
    platform.submit(flow, missing_on_node)
    # The document names no dataset for a client: the splitter rejects the flow up front.
    flow = _fedavg_flow(rounds=3)
    flow["steps"][0]["parties"]["client"] = ["hospital-a", "hospital-y"]
    platform.submit(flow, undeclared)

    view = platform.wait_flow(undeclared, timeout_s=30)
    assert view["status"] == "FAILED" and view["tasks"] == [], view
    assert "hospital-y" in view["reason"] and "needs data" in view["reason"], view["reason"]

    view = platform.wait_flow(missing_on_node, timeout_s=60)
    assert view["status"] == "FAILED", (view, platform.logs())
    algos = {a["party"]: a for a in algorithm_tasks(view).values()}
    missing = algos["hospital-z"]
    assert missing["status"] == "FAILED" and missing["attempt"] == 1
    assert "data error" in missing["reason"] and "not retriable" in missing["reason"], missing["reason"]
    assert "party hospital-z has no readable dataset 'breast_cancer' for role client" in missing["reason"], missing
    assert "hospital-z" in view["reason"], view["reason"]
    # Its peers cannot go on without it: they are cancelled and their processes stop.
    peers = [a["algo_task_id"] for a in algos.values() if a["party"] != "hospital-z"]

    def peers_cancelled():
        statuses = {a["algo_task_id"]: a["status"] for a in algorithm_tasks(platform.flow(missing_on_node)).values()}
        return all(statuses[p] == "CANCELLED" for p in peers) and not platform.executors(missing_on_node)
    platform.wait_until(peers_cancelled, "the peers of the failed client to be cancelled", timeout_s=20)
