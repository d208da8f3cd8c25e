"""Job/Pod -> Observation (pure), and the list+watch loop against the fake API server."""

from __future__ import annotations

import asyncio
import copy

import pytest

from services.scheduler.adapters.k8s_watch import (KubernetesWatcher, PodExit, observation_from_job,
                                                   observation_from_pod, pod_exit)
from services.scheduler.adapters.kubernetes import KubeApi, build_job_manifest
from services.scheduler.adapters.node_registry import parse_node_registry
from shared.clock import SystemClock
from shared.events import AlgorithmTaskSpec, Observation, Phase
from tests.k8s_fake import api_client_for, running_fake

NS = "hospitals"
REGISTRY = parse_node_registry({"parties": {"hospital-a": {"namespace": NS, "node_selector": {"p": "a"}}}})
SPEC = AlgorithmTaskSpec("flow/1.train.hospital-a", "flow/1.train", "flow/1", "train", "ferry.noop", "1", {},
                         "hospital-a", "client", (), attempt=2)
JOB = build_job_manifest(SPEC, REGISTRY.node_for("hospital-a"), "ferry:test")
NAME = JOB["metadata"]["name"]
IDS = {"algo_task_id": SPEC.algo_task_id, "task_id": SPEC.task_id, "flow_id": SPEC.flow_id, "attempt": 2,
       "source": "kubernetes"}


def job(status=None, **meta):
    obj = copy.deepcopy(JOB)
    obj["metadata"].update(meta)
    obj["status"] = status or {}
    return obj


def pod(phase, **status):
    return {"metadata": {"name": f"{NAME}-x1", "labels": dict(JOB["spec"]["template"]["metadata"]["labels"]),
                         "annotations": dict(JOB["spec"]["template"]["metadata"]["annotations"])},
            "status": {"phase": phase, **status}}


def failed(reason, message=""):
    return {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}]}


def policy_message(code, rule):
    return (f"Container executor for pod {NS}/{NAME}-x1 failed with exit code {code} "
            f"matching FailJob rule at index {rule}")


# ---- pure conversions ----

def test_a_running_pod_is_running_with_the_exact_ids_from_annotations_and_the_attempt_label():
    assert observation_from_pod(pod("Running")) == Observation(
        phase=Phase.RUNNING, object_name=f"{NAME}-x1", **IDS)


def test_a_pending_pod_says_why_it_waits():
    waiting = pod("Pending", containerStatuses=[{"name": "executor", "state": {
        "waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}}])
    unschedulable = pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/3 nodes are available"}])
    assert (observation_from_pod(waiting).phase, observation_from_pod(waiting).reason) == (
        Phase.PENDING, "ImagePullBackOff")
    assert observation_from_pod(unschedulable).message == "0/3 nodes are available"


@pytest.mark.parametrize("obj", [
    pod("Running") | {"metadata": {**pod("Running")["metadata"], "deletionTimestamp": "2024-01-01T00:00:00Z"}},
    pod("Failed"), pod("Succeeded"),
    {"metadata": {"name": "not-ours", "labels": {"app": "x"}}, "status": {"phase": "Running"}},
])
def test_stopping_finished_and_foreign_pods_say_nothing(obj):
    assert observation_from_pod(obj) is None


def test_the_job_alone_reports_success_and_suspension():
    assert observation_from_job(job({"conditions": [{"type": "Complete", "status": "True"}]})) == Observation(
        phase=Phase.SUCCEEDED, object_name=NAME, reason="Complete", **IDS)
    suspended = {"type": "Suspended", "status": "True", "reason": "JobSuspended"}
    assert observation_from_job(job({"conditions": [suspended], "terminating": 1})) is None  # still checkpointing
    assert observation_from_job(job({"conditions": [suspended], "terminating": 0})).phase == Phase.SUSPENDED
    resumed = {"type": "Suspended", "status": "False", "reason": "JobResumed"}
    assert observation_from_job(job({"conditions": [resumed], "active": 1})) is None


@pytest.mark.parametrize("status, code, retriable", [
    (failed("PodFailurePolicy", policy_message(2, 2)), 2, False),
    (failed("PodFailurePolicy", policy_message(3, 2)), 3, False),
    (failed("PodFailurePolicy", policy_message(75, 3)), 75, True),
    (failed("PodFailurePolicy", policy_message(1, 3)), 1, False),
    (failed("PodFailurePolicy", policy_message(137, 3)), 137, True),
    (failed("BackoffLimitExceeded", "Job has reached the specified backoff limit"), 0, True),
    (failed("DeadlineExceeded", "Job was active longer than specified deadline"), 0, False),
])
def test_a_failed_job_is_retriable_by_its_exit_code(status, code, retriable):
    obs = observation_from_job(job(status))
    assert (obs.phase, obs.exit_code, obs.retriable, obs.reason) == (
        Phase.FAILED, code, retriable, status["conditions"][0]["reason"])


def test_without_an_exit_code_in_the_condition_the_last_failed_pod_decides():
    status = failed("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    obs = observation_from_job(job(status), pod_exit=PodExit(3, "Error", "no dataset 'mnist'"))
    assert (obs.exit_code, obs.retriable) == (3, False)
    assert obs.message.endswith("no dataset 'mnist'")


def test_pod_exit_reads_the_executor_container_and_disruption():
    ended = pod("Failed", conditions=[{"type": "DisruptionTarget", "status": "True"}], containerStatuses=[
        {"name": "sidecar", "state": {"terminated": {"exitCode": 9}}},
        {"name": "executor", "state": {"terminated": {"exitCode": 143, "reason": "Error", "message": "bye"}}}])
    assert pod_exit(ended) == PodExit(143, "Error", "bye", True)
    assert pod_exit(pod("Running")) is None


def test_a_deleted_job_is_deleted():
    assert observation_from_job(job(), deleted=True).phase == Phase.DELETED
    assert observation_from_job(job(deletionTimestamp="2024-01-01T00:00:00Z")).phase == Phase.DELETED


# ---- the watcher against the fake API server ----

class Recorder:
    def __init__(self):
        self.seen: list[Observation] = []
        self.fail_next = 0

    async def __call__(self, obs: Observation) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("bus down")
        self.seen.append(obs)

    def phases(self):
        return [o.phase for o in self.seen]


async def eventually(check, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def world():
    async with running_fake() as fake:
        api = KubeApi(api_client_for(fake))
        sink = Recorder()
        watcher = KubernetesWatcher(api, [NS], sink, SystemClock(), initial_delay_s=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        await api.create_job(NS, JOB)
        await eventually(lambda: fake.open_watches == 2)
        yield fake, api, sink, watcher
        stop.set()
        await asyncio.wait_for(task, 5)
        await api.close()


async def test_a_lifecycle_is_reported_in_order_with_the_attempt(world):
    fake, _, sink, _ = world
    pod_name = fake.create_pod(NS, NAME)
    fake.set_pod_phase(NS, pod_name, "Running")
    fake.update_status("jobs", NS, NAME, {"active": 1, "ready": 1})  # noise: nothing Ferry cares about
    fake.set_pod_phase(NS, pod_name, "Running")                       # an identical fact again
    fake.set_pod_phase(NS, pod_name, "Succeeded", exit_code=0)
    fake.complete_job(NS, NAME)
    await eventually(lambda: Phase.SUCCEEDED in sink.phases())
    assert sink.phases() == [Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED]
    assert {(o.attempt, o.algo_task_id, o.flow_id) for o in sink.seen} == {(2, SPEC.algo_task_id, "flow/1")}
    assert all(o.observed_at_ms > 0 for o in sink.seen)


async def test_suspend_resume_suspend_reports_each_suspension(world):
    fake, _, sink, _ = world
    fake.set_suspended(NS, NAME, terminating=1)
    fake.set_suspended(NS, NAME, terminating=0)
    fake.set_suspended(NS, NAME, suspended=False)
    fake.set_suspended(NS, NAME, terminating=0)
    await eventually(lambda: len(sink.seen) >= 2)
    await asyncio.sleep(0.05)
    assert sink.phases() == [Phase.SUSPENDED, Phase.SUSPENDED]


async def test_a_failure_uses_the_failed_pods_exit_when_the_condition_lacks_it(world):
    fake, _, sink, _ = world
    pod_name = fake.create_pod(NS, NAME)
    fake.set_pod_phase(NS, pod_name, "Failed", exit_code=75, message="broker unavailable")
    await eventually(lambda: sink.phases() == [Phase.PENDING])
    fake.fail_job(NS, NAME, reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
    await eventually(lambda: Phase.FAILED in sink.phases())
    failure = sink.seen[-1]
    assert (failure.exit_code, failure.retriable, failure.reason) == (75, True, "BackoffLimitExceeded")
    assert "broker unavailable" in failure.message


async def test_a_bookmark_moves_the_resume_point_so_a_compacted_history_needs_no_relist(world):
    fake, _, _, watcher = world
    lists, watches = watcher.relists, len(fake.watch_requests)
    fake.bump(50)        # writes elsewhere in the cluster
    fake.bookmark()      # "you are up to date as of now"
    fake.drop_watches()  # the server ends the streams after the bookmarks
    fake.compact()       # everything before now is gone from the history
    await eventually(lambda: len(fake.watch_requests) >= watches + 2 and fake.open_watches == 2)
    assert {w["resourceVersion"] for w in fake.watch_requests[watches:]} == {str(fake.oldest_rv)}
    assert watcher.relists == lists and sum(fake.lists.values()) == 2


@pytest.mark.parametrize("gone_as_http", [False, True])
async def test_410_gone_relists_and_loses_no_state_change(world, gone_as_http):
    fake, _, sink, watcher = world
    fake.gone_as_http = gone_as_http
    pod_name = fake.create_pod(NS, NAME)
    fake.set_pod_phase(NS, pod_name, "Running")
    await eventually(lambda: Phase.RUNNING in sink.phases())
    lists = watcher.relists
    fake.hold_watches()
    fake.drop_watches()
    fake.complete_job(NS, NAME)  # happens while nobody watches
    fake.compact()               # ... and falls out of the history
    fake.release_watches()
    await eventually(lambda: Phase.SUCCEEDED in sink.phases() and watcher.relists == lists + 2)  # jobs, pods
    assert sink.phases() == [Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED]  # no repeats after the relist


async def test_a_job_deleted_while_the_history_was_lost_is_reported_deleted(world):
    fake, api, sink, _ = world
    fake.hold_watches()
    fake.drop_watches()
    await api.delete_job(NS, NAME)
    fake.compact()
    fake.release_watches()
    await eventually(lambda: Phase.DELETED in sink.phases())
    assert sink.seen[-1].object_name == NAME and sink.seen[-1].attempt == 2


async def test_a_failed_publish_is_retried_from_a_fresh_list(world):
    fake, _, sink, _ = world
    sink.fail_next = 1
    fake.complete_job(NS, NAME)
    await eventually(lambda: sink.phases() == [Phase.SUCCEEDED])


async def test_the_watcher_stops_on_its_event_and_closes_its_streams():
    async with running_fake() as fake:
        api = KubeApi(api_client_for(fake))
        watcher = KubernetesWatcher(api, [NS, "ferry"], Recorder(), SystemClock())
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        await eventually(lambda: fake.open_watches == 4)  # jobs and pods in both namespaces
        stop.set()
        await asyncio.wait_for(task, 5)
        await eventually(lambda: fake.open_watches == 0)
        await api.close()
