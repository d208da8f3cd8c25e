"""KubernetesRunner against the fake API server: create, idempotent re-dispatch, suspend/resume, cancel."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from services.scheduler.adapters.k8s_watch import ApiError
from services.scheduler.adapters.kubernetes import (JobConflict, KubeApi, KubernetesRunner, ResumeImpossible,
                                                    build_job_manifest)
from services.scheduler.adapters.node_registry import UnknownParty, parse_node_registry
from shared.events import AlgorithmTaskSpec, Peer
from tests.k8s_fake import api_client_for, running_fake

NS = "hospitals"
REGISTRY = parse_node_registry({"parties": {
    "hospital-a": {"namespace": NS, "node_selector": {"ferry.io/party": "hospital-a"},
                   "data_volume": {"hostPath": {"path": "/srv/hospital-a"}}}}})
SPEC = AlgorithmTaskSpec("f1.train.hospital-a", "f1.train", "f1", "train", "ferry.noop", "1", {}, "hospital-a",
                         "client", (Peer("hospital-a", "client"),), attempt=1)
NAME = "ferry-f1-train-hospital-a-a1"


@pytest.fixture
async def fake():
    async with running_fake() as server:
        yield server


@pytest.fixture
async def runner(fake):
    runner = KubernetesRunner(KubeApi(api_client_for(fake)), REGISTRY, "ferry:test")
    yield runner
    await runner.close()


async def test_dispatch_creates_the_manifest_as_a_job_in_the_partys_namespace(fake, runner):
    assert await runner.dispatch(SPEC) == NAME
    stored = fake.job(NS, NAME)
    expected = build_job_manifest(SPEC, REGISTRY.node_for("hospital-a"), "ferry:test")
    assert stored["spec"]["template"] == expected["spec"]["template"]
    assert stored["metadata"]["labels"] == expected["metadata"]["labels"]
    assert stored["spec"]["suspend"] is False


async def test_a_second_dispatch_of_the_same_attempt_is_a_no_op(fake, runner):
    await runner.dispatch(SPEC)
    before = fake.job(NS, NAME)
    assert await runner.dispatch(SPEC) == NAME
    assert fake.job(NS, NAME) == before
    assert [key for key in fake.objects if key[0] == "jobs"] == [("jobs", NS, NAME)]


@pytest.mark.parametrize("label, value", [("ferry.io/attempt", "7"), ("ferry.io/algo-task", "someone-else")])
async def test_a_job_of_another_attempt_or_task_under_this_name_is_a_conflict(fake, runner, label, value):
    squatter = build_job_manifest(SPEC, REGISTRY.node_for("hospital-a"), "ferry:test")
    squatter["metadata"]["labels"][label] = value
    fake.put("jobs", NS, squatter)
    with pytest.raises(JobConflict, match=f"{NS}/{NAME} already exists") as caught:
        await runner.dispatch(SPEC)
    assert not caught.value.retriable


async def test_an_unknown_party_fails_before_any_api_call(fake, runner):
    with pytest.raises(UnknownParty, match="'clinic-z'"):
        await runner.dispatch(dataclasses.replace(SPEC, party="clinic-z"))
    assert not fake.objects and not fake.patches


async def test_suspend_and_resume_patch_spec_suspend(fake, runner):
    await runner.dispatch(SPEC)
    await runner.suspend(SPEC)
    assert fake.job(NS, NAME)["spec"]["suspend"] is True
    await runner.resume(SPEC)
    assert fake.job(NS, NAME)["spec"]["suspend"] is False
    assert [(ctype, body) for _, _, ctype, body in fake.patches] == [
        ("application/merge-patch+json", {"spec": {"suspend": True}}),
        ("application/merge-patch+json", {"spec": {"suspend": False}})]


async def test_cancel_deletes_the_job_with_background_propagation_and_its_pods_go(fake, runner):
    await runner.dispatch(SPEC)
    pod = fake.create_pod(NS, NAME)
    await runner.cancel(SPEC)
    assert fake.deletions == [("jobs", NS, NAME, "Background")]
    assert ("pods", NS, pod) not in fake.objects and not fake.objects  # the fake's garbage collector


async def test_suspend_and_cancel_of_a_missing_job_succeed_without_creating_one(fake, runner):
    await runner.suspend(SPEC)
    await runner.cancel(SPEC)
    assert not fake.objects and fake.deletions == []


async def test_resume_of_a_vanished_job_starts_the_attempt_again(fake, runner):
    await runner.resume(SPEC)
    assert fake.job(NS, NAME)["metadata"]["labels"]["ferry.io/attempt"] == "1"


async def test_resume_of_a_job_that_failed_while_suspended_asks_for_a_new_attempt(fake, runner):
    await runner.dispatch(SPEC)
    await runner.suspend(SPEC)
    fake.fail_job(NS, NAME, reason="PodFailurePolicy",
                  message=f"Container executor for pod {NS}/{NAME}-x1 failed with exit code 137 matching "
                          "FailJob rule at index 3")
    with pytest.raises(ResumeImpossible, match="exit code 137") as caught:
        await runner.resume(SPEC)
    assert caught.value.retriable


async def test_resume_of_a_job_that_completed_is_a_no_op(fake, runner):
    await runner.dispatch(SPEC)
    fake.complete_job(NS, NAME)
    await runner.resume(SPEC)
    assert "Complete" in {c["type"] for c in fake.job(NS, NAME)["status"]["conditions"]}


async def test_an_unreachable_api_is_a_retriable_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused

        class Nowhere:
            url = f"http://127.0.0.1:{port}"

        runner = KubernetesRunner(KubeApi(api_client_for(Nowhere)), REGISTRY, "ferry:test")
        try:
            with pytest.raises(ApiError) as caught:
                await runner.dispatch(SPEC)
        finally:
            await runner.close()
    assert caught.value.status == 0 and caught.value.retriable


@pytest.mark.parametrize("status, retriable", [(500, True), (503, True), (429, True), (403, False), (422, False)])
def test_api_errors_are_retriable_only_when_waiting_can_help(status, retriable):
    assert ApiError(status, "x", "y").retriable is retriable


async def test_a_job_deleted_between_the_409_and_the_read_is_created_again():
    class Racy:
        """The Job exists at create time and is gone when read: someone deleted it in between."""

        def __init__(self):
            self.calls = []

        async def create_job(self, namespace, manifest):
            self.calls.append("create")
            if self.calls.count("create") == 1:
                raise ApiError(409, "AlreadyExists", "exists")
            return manifest

        async def read_job(self, namespace, name):
            self.calls.append("read")
            raise ApiError(404, "NotFound", "gone")

        async def close(self):
            pass

    api = Racy()
    runner = KubernetesRunner(api, REGISTRY, "ferry:test")
    assert await runner.dispatch(SPEC) == NAME
    assert api.calls == ["create", "read", "create"]


async def test_a_retry_deletes_the_job_of_the_attempt_it_supersedes(fake):
    # A lost attempt's Job may still run (the executor was only slow): the scheduler service
    # carries out the core's fence, so the retry's Job is the only one left.
    from services.scheduler.app import SchedulerService
    from shared import topics
    from shared.bus.memory import InMemoryBus
    from shared.clock import SystemClock
    from shared.events import EntityKind, Envelope, StateChanged, Status, TaskPlanned

    bus = InMemoryBus()
    await bus.ensure_topics(topics.CATALOGUE)
    service = SchedulerService(bus, SystemClock(), lambda observe: KubernetesRunner(
        KubeApi(api_client_for(fake)), REGISTRY, "ferry:test", observe=observe))
    try:
        for event in (TaskPlanned(SPEC.task_id, "f1", "train", (), (SPEC,), (SPEC.task_id,), 0),
                      StateChanged(EntityKind.ALGORITHM_TASK, SPEC.algo_task_id, "f1", SPEC.task_id,
                                   Status.RUNNING, Status.RETRYING, 2, reason="executor lost")):
            await service.handle(Envelope(event, "e", SPEC.task_id, 0, "test", 0), None)
        assert fake.deletions == [("jobs", NS, NAME, "Background")]
        assert [key for key in fake.objects if key[0] == "jobs"] == [("jobs", NS, NAME[:-1] + "2")]
    finally:
        await service.runner.close()
