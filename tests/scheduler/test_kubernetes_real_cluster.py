"""The Kubernetes runner and watcher against a real control plane (tests/k8s_cluster_fixture.py).

The real kube-apiserver validates and defaults the Jobs, the real Job controller creates their
Pods, suspends, applies the podFailurePolicy and garbage-collects; the real scheduler places
the Pods on per-party kwok nodes, and kwok plays each kubelet (shared/devtools/k8s-stages.yaml):
a Pod runs, then succeeds, or fails with the exit code in ``ferry.dev/kwok-exit-code``, and
a running Pod being deleted ends with exit 143 as the executor does on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from kubernetes_asyncio import client as k8s

from services.scheduler.adapters.k8s_watch import ApiError, Gone, KubernetesWatcher
from services.scheduler.adapters.kubernetes import JobConflict, KubeApi, KubernetesRunner, build_job_manifest
from services.scheduler.adapters.node_registry import parse_node_registry
from shared.clock import SystemClock
from shared.devtools.k8s_nodes import admin_client, create_kwok_nodes, kwok_node_name
from shared.events import AlgorithmTaskSpec, Observation, Phase, Peer

HOLD = {"pod-complete.stage.kwok.x-k8s.io/delay": "1h"}  # the executor keeps running until stopped
IMAGE = "ferry-executor:test"


def exits_with(code: int) -> dict[str, str]:
    return {"ferry.dev/kwok-exit-code": str(code)}


class Recorder:
    def __init__(self):
        self.seen: list[Observation] = []

    async def __call__(self, obs: Observation) -> None:
        self.seen.append(obs)

    def phases(self, algo_task_id: str | None = None) -> list[Phase]:
        return [o.phase for o in self.seen if algo_task_id in (None, o.algo_task_id)]


async def eventually(check, timeout: float = 60.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        await asyncio.sleep(0.1)


class AnnotatedRunner(KubernetesRunner):
    """The runner, plus Pod annotations that tell kwok how this test's executor ends."""

    def __init__(self, *args, pod_annotations: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pod_annotations = dict(pod_annotations or {})

    def manifest(self, spec):
        manifest = super().manifest(spec)
        manifest["spec"]["template"]["metadata"]["annotations"].update(self.pod_annotations)
        return manifest


class World:
    """Two parties, each in its own namespace with its own kwok node, and a way to make runners."""

    def __init__(self, cluster, admin, prefix: str, namespaces: list[str]):
        self.cluster, self.admin, self.prefix = cluster, admin, prefix
        self.parties = [f"{prefix}-a", f"{prefix}-b"]
        self.namespace = dict(zip(self.parties, namespaces))
        self.registry = parse_node_registry({"parties": {
            party: {"namespace": ns,
                    "node_affinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "ferry.io/party", "operator": "In", "values": [party]}]}]}}}
            for party, ns in self.namespace.items()}})
        self.recorder = Recorder()
        self.runners: list[KubernetesRunner] = []
        self.core, self.batch = k8s.CoreV1Api(admin), k8s.BatchV1Api(admin)

    def spec(self, step: str = "train", party: str | None = None, attempt: int = 1) -> AlgorithmTaskSpec:
        party = party or self.parties[0]
        flow = f"{self.prefix}-flow"
        return AlgorithmTaskSpec(f"{flow}.{step}.{party}", f"{flow}.{step}", flow, step, "ferry.noop", "1", {},
                                 party, "client", (Peer(party, "client"),), attempt=attempt)

    async def runner(self, pod_annotations: dict[str, str] | None = None, observe: bool = True,
                     watch_timeout_s: int = 300) -> AnnotatedRunner:
        api = KubeApi(await admin_client(self.cluster.state))
        runner = AnnotatedRunner(api, self.registry, IMAGE, observe=self.recorder if observe else None,
                                 pod_annotations=pod_annotations, watch_timeout_s=watch_timeout_s)
        self.runners.append(runner)
        await runner.start()
        return runner

    async def pods(self, spec: AlgorithmTaskSpec) -> list[k8s.V1Pod]:
        ns = self.namespace[spec.party]
        name = build_job_manifest(spec, self.registry.node_for(spec.party), IMAGE)["metadata"]["name"]
        pods = await self.core.list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={name}")
        return pods.items

    async def job(self, spec: AlgorithmTaskSpec) -> k8s.V1Job | None:
        name = build_job_manifest(spec, self.registry.node_for(spec.party), IMAGE)["metadata"]["name"]
        try:
            return await self.batch.read_namespaced_job(name, self.namespace[spec.party])
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def running_pod(self, spec: AlgorithmTaskSpec) -> k8s.V1Pod:
        async def check():
            pods = [p for p in await self.pods(spec)
                    if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
            return pods[0] if pods else None
        return await eventually(check, what=f"a running pod of {spec.algo_task_id}")

    def reached(self, spec: AlgorithmTaskSpec, phase: Phase) -> bool:
        return phase in self.recorder.phases(spec.algo_task_id)


@pytest.fixture
async def world(k8s_cluster, k8s_admin, k8s_prefix, k8s_namespaces):
    namespaces = await k8s_namespaces("hospital", "bank")
    w = World(k8s_cluster, k8s_admin, k8s_prefix, namespaces)
    await create_kwok_nodes(k8s_admin, w.parties)
    yield w
    for runner in w.runners:
        await runner.close()


async def test_the_job_manifest_is_accepted_with_strict_validation_and_no_warnings(world):
    spec = world.spec()
    manifest = build_job_manifest(spec, world.registry.node_for(spec.party), IMAGE)
    response = await world.batch.create_namespaced_job(world.namespace[spec.party], manifest,
                                                       field_validation="Strict", _preload_content=False)
    body = json.loads(await response.read())
    assert response.status == 201, body
    assert response.headers.getall("Warning", []) == []
    # What was stored is what was sent: the server dropped or renamed nothing in the Pod template.
    stored = body["spec"]["template"]["spec"]["containers"][0]
    assert stored["env"] == manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    assert body["spec"]["podFailurePolicy"] == manifest["spec"]["podFailurePolicy"]


async def test_each_partys_pod_runs_in_its_namespace_on_its_node_and_the_job_completes(world):
    runner = await world.runner()
    specs = [world.spec(party=p) for p in world.parties]
    for spec in specs:
        await runner.dispatch(spec)
    for spec in specs:
        await eventually(lambda: world.reached(spec, Phase.SUCCEEDED), what=f"{spec.party} succeeded")
        assert world.recorder.phases(spec.algo_task_id)[-1] == Phase.SUCCEEDED
        (pod,) = await world.pods(spec)
        assert pod.metadata.namespace == world.namespace[spec.party]
        assert pod.spec.node_name == kwok_node_name(spec.party)
        assert pod.metadata.labels["ferry.io/attempt"] == "1"


async def test_suspend_deletes_the_running_pod_and_resume_starts_a_new_one(world):
    runner = await world.runner(pod_annotations=HOLD)
    spec = world.spec()
    await runner.dispatch(spec)
    first = await world.running_pod(spec)
    await eventually(lambda: world.reached(spec, Phase.RUNNING))

    await runner.suspend(spec)
    await eventually(lambda: world.reached(spec, Phase.SUSPENDED), what="suspended")
    await eventually(lambda: _no_pods(world, spec), what="the pod deleted")
    job = await world.job(spec)
    # The executor's exit 143 on SIGTERM is ignored by the podFailurePolicy: not a failure.
    assert not job.status.failed and "Failed" not in _true(job)

    await runner.resume(spec)
    second = await world.running_pod(spec)
    assert second.metadata.uid != first.metadata.uid
    phases = world.recorder.phases(spec.algo_task_id)
    assert phases.index(Phase.SUSPENDED) < len(phases) - 1 and phases[-1] == Phase.RUNNING
    assert "Suspended" not in _true(await world.job(spec))


@pytest.mark.parametrize("code, retriable", [(2, False), (3, False), (75, True), (1, False), (137, True)])
async def test_the_pod_failure_policy_fails_the_job_and_the_exit_code_decides_retry(world, code, retriable):
    runner = await world.runner(pod_annotations=exits_with(code))
    spec = world.spec()
    await runner.dispatch(spec)
    await eventually(lambda: world.reached(spec, Phase.FAILED), what="failed")
    failure = [o for o in world.recorder.seen if o.phase == Phase.FAILED][-1]
    assert (failure.exit_code, failure.retriable) == (code, retriable)
    assert failure.reason == "PodFailurePolicy"
    job = await world.job(spec)
    assert job.status.failed == 1 and not job.status.active


async def test_a_restarted_scheduler_redispatching_gets_409_and_treats_its_own_job_as_done(world):
    spec = world.spec()
    first = await world.runner(pod_annotations=HOLD, observe=False)
    name = await first.dispatch(spec)
    created = (await world.job(spec)).metadata.uid
    await first.close()
    world.runners.remove(first)

    again = await world.runner(pod_annotations=HOLD, observe=False)  # a new process, same attempt
    assert await again.dispatch(spec) == name
    assert (await world.job(spec)).metadata.uid == created
    # The same name for another attempt's Job (a squatter) is a conflict, not silently adopted.
    squatter = build_job_manifest(world.spec(step="eval"), world.registry.node_for(spec.party), IMAGE)
    squatter["metadata"]["name"] = build_job_manifest(world.spec(attempt=2), world.registry.node_for(spec.party),
                                                      IMAGE)["metadata"]["name"]
    await world.batch.create_namespaced_job(world.namespace[spec.party], squatter)
    with pytest.raises(JobConflict):
        await again.dispatch(world.spec(attempt=2))


async def test_cancel_deletes_the_job_in_the_background_and_its_pod_goes(world):
    runner = await world.runner(pod_annotations=HOLD)
    spec = world.spec()
    await runner.dispatch(spec)
    await world.running_pod(spec)
    await runner.cancel(spec)
    await eventually(lambda: world.reached(spec, Phase.DELETED), what="deleted")
    await eventually(lambda: _job_gone(world, spec), what="the job gone")
    await eventually(lambda: _no_pods(world, spec), what="the pod gone")
    await runner.cancel(spec)  # cancelling again is a no-op


class HeldSource:
    """KubeApi as the watcher's source, recording what the real server says, and able to hold
    new watches back (as a network partition would) and end the open ones."""

    def __init__(self, api: KubeApi):
        self.api = api
        self.released = asyncio.Event()
        self.released.set()
        self.dropping = asyncio.Event()
        self.watch_versions: list[str] = []
        self.bookmarks: list[str] = []
        self.errors: list[Exception] = []

    async def list_objects(self, kind, namespace, selector):
        return await self.api.list_objects(kind, namespace, selector)

    async def watch_objects(self, kind, namespace, selector, resource_version, timeout_s):
        await self.released.wait()
        self.watch_versions.append(resource_version)
        stream = self.api.watch_objects(kind, namespace, selector, resource_version, timeout_s)
        try:
            async for event in stream:
                if self.dropping.is_set():
                    return  # cut off: this event is never seen
                if event.get("type") == "BOOKMARK":
                    self.bookmarks.append(event["object"]["metadata"]["resourceVersion"])
                yield event
        except Exception as exc:
            self.errors.append(exc)
            raise
        finally:
            await stream.aclose()


async def test_bookmarks_move_the_watch_resume_point(world):
    spec = world.spec()
    runner = await world.runner(pod_annotations=HOLD, observe=False)
    await runner.dispatch(spec)
    source = HeldSource(KubeApi(await admin_client(world.cluster.state)))
    watcher = KubernetesWatcher(source, [world.namespace[spec.party]], world.recorder, SystemClock(), timeout_s=4)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        # The API server sends a bookmark shortly before a watch's timeout; the next watch resumes there.
        await eventually(lambda: any(b in source.watch_versions for b in source.bookmarks), timeout=40,
                         what="a watch resumed from a bookmark")
        assert watcher.relists == 2  # jobs and pods, once each: bookmarks need no relist
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await source.api.close()


async def test_a_410_after_compaction_relists_without_losing_a_change(world):
    spec = world.spec()
    runner = await world.runner(pod_annotations=HOLD, observe=False)
    await runner.dispatch(spec)
    source = HeldSource(KubeApi(await admin_client(world.cluster.state)))
    watcher = KubernetesWatcher(source, [world.namespace[spec.party]], world.recorder, SystemClock(),
                                initial_delay_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await eventually(lambda: world.reached(spec, Phase.RUNNING), what="running")
        lists = watcher.relists
        source.released.clear()  # no new watches ...
        source.dropping.set()    # ... and the open ones end at their next event
        await runner.suspend(spec)  # the change happens while nobody watches
        await eventually(lambda: _no_pods(world, spec), what="the pod deleted")
        # The history the watcher would resume from is gone: compacted in etcd, and the API
        # server's watch cache restarts empty.
        await asyncio.to_thread(world.cluster.compact_etcd)
        await asyncio.to_thread(world.cluster.restart_apiserver)
        await world.batch.list_namespaced_job(world.namespace[spec.party])  # serving again
        await asyncio.sleep(1)  # and its watch cache initialised (watches get 429 until then)
        source.dropping.clear()
        source.released.set()
        await eventually(lambda: world.reached(spec, Phase.SUSPENDED), what="suspended after the relist")
        assert any(isinstance(e, Gone) for e in source.errors), source.errors
        assert watcher.relists >= lists + 1
        assert world.recorder.phases(spec.algo_task_id).count(Phase.SUSPENDED) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await source.api.close()


async def test_the_runner_survives_an_api_server_restart(world):
    runner = await world.runner(pod_annotations=HOLD)
    before, after = world.spec("train"), world.spec("eval")
    await runner.dispatch(before)
    await eventually(lambda: world.reached(before, Phase.RUNNING), what="running")
    await asyncio.to_thread(world.cluster.stop_apiserver)
    with pytest.raises(ApiError) as down:
        await runner.dispatch(after)
    assert down.value.retriable and down.value.status == 0
    await asyncio.to_thread(world.cluster.start_apiserver)
    await runner.dispatch(after)  # the same attempt again, as the scheduler's retry policy would
    await runner.suspend(before)
    await eventually(lambda: world.reached(after, Phase.RUNNING), what="the new job running")
    await eventually(lambda: world.reached(before, Phase.SUSPENDED), what="the old job suspended")


def _true(job: k8s.V1Job) -> set[str]:
    return {c.type for c in job.status.conditions or () if c.status == "True"}


async def _no_pods(world: World, spec: AlgorithmTaskSpec) -> bool:
    return not await world.pods(spec)


async def _job_gone(world: World, spec: AlgorithmTaskSpec) -> bool:
    return await world.job(spec) is None
