"""Executors as real pods: the Kubernetes runner's Jobs on a real kubelet with containerd.

Unlike test_kubernetes_real_cluster.py (kwok plays the kubelet), nothing here is simulated:
the runner creates the Job, the real Job controller its Pod, the real scheduler places it on
the real node of party ``realnode`` (tests/k8s_cluster_fixture.py), the kubelet mounts the
party's Secrets, ConfigMap and data volume and containerd runs Ferry's image, whose executor
reads the party's LMDB store and talks to the session's Kafka broker over mutual TLS.

One concession to the machine: the broker listens on 127.0.0.1 only and the node has no
routable address, so the test's runner puts the executor Pods on the host network.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from kubernetes_asyncio import client as k8s

from services.executor.data.importers import make_table, put_table
from services.executor.federation.identity import Identity, key_to_pem, registry_document
from services.scheduler.adapters.kubernetes import JobSettings, KubeApi, KubernetesRunner, build_job_manifest
from services.scheduler.adapters.node_registry import parse_node_registry
from shared.devtools.k8s_nodes import admin_client
from shared.errors import DataError
from shared.events import AlgorithmTaskSpec, Peer, Phase
from tests.k8s_cluster_fixture import REAL_NODE_PARTY
from tests.kafka_broker_fixture import create_catalogue_topics
from tests.scheduler.test_kubernetes_real_cluster import Recorder, eventually

PARTY = REAL_NODE_PARTY
ROWS = 40
EXECUTOR_UID = 65534


class HostNetworkRunner(KubernetesRunner):
    """The runner, with its executor Pods on the host network (see the module's docstring)."""

    def manifest(self, spec):
        manifest = super().manifest(spec)
        manifest["spec"]["template"]["spec"]["hostNetwork"] = True
        return manifest


async def party_credentials(core: k8s.CoreV1Api, namespace: str, tls_dir: Path, party: str = PARTY,
                            federation: dict[str, Identity] | None = None) -> None:
    """What an operator provisions in a party's namespace (docs/keys.md, "On Kubernetes"): its
    identity, the federation's pinned keys (`federation`: every party's identity) and its Kafka
    certificate."""
    federation = federation or {party: Identity.generate(party)}
    await core.create_namespaced_secret(namespace, {
        "metadata": {"name": f"ferry-identity-{party}"},
        "stringData": {"identity.key": key_to_pem(federation[party].private).decode()}})
    await core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "ferry-keys"},
        "data": {"keys.yaml": yaml.safe_dump(registry_document({p: i.public for p, i in federation.items()}))}})
    await core.create_namespaced_secret(namespace, {
        "metadata": {"name": "ferry-kafka-party"},
        "stringData": {"ca.crt": (tls_dir / "ca.crt").read_text(), "tls.crt": (tls_dir / "party.crt").read_text(),
                       "tls.key": (tls_dir / "party.key").read_text()}})


def _party_store(folder: Path) -> Path:
    """The party's LMDB store with dataset `clinic` (ROWS rows), readable by the executor's user."""
    rng = np.random.default_rng(7)
    table = make_table({"age": rng.normal(50, 10, ROWS), "y": rng.integers(0, 2, ROWS)}, label="y", features=["age"])
    put_table(folder, "clinic", table)
    for path in [folder, *folder.iterdir()]:
        os.chown(path, EXECUTOR_UID, EXECUTOR_UID)
    return folder


@pytest.fixture
async def party(k8s_real_node, k8s_admin, k8s_namespaces, kafka_bootstrap, kafka_tls_dir, tmp_path):
    (namespace,) = await k8s_namespaces(PARTY)
    await party_credentials(k8s.CoreV1Api(k8s_admin), namespace, kafka_tls_dir)
    await create_catalogue_topics(kafka_bootstrap)
    store = _party_store(tmp_path / "store")
    registry = parse_node_registry({"parties": {PARTY: {
        "namespace": namespace,
        "node_affinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "ferry.io/party", "operator": "In", "values": [PARTY]}]}]}},
        "data_volume": {"hostPath": {"path": str(store), "type": "Directory"}}}}})
    settings = JobSettings(env=(("FERRY_BUS__KIND", "kafka"), ("FERRY_KAFKA__BOOTSTRAP", kafka_bootstrap)),
                           image_pull_policy="Never", termination_grace_period_s=60)
    recorder = Recorder()
    runner = HostNetworkRunner(KubeApi(await admin_client(k8s_real_node.cluster.state)), registry, "ferry:latest",
                               observe=recorder, settings=settings)
    await runner.start()
    try:
        yield runner, recorder, namespace
    finally:
        await runner.close()


def _spec(name: str, algorithm: str, params: dict, role: str, data_ref: str = "") -> AlgorithmTaskSpec:
    flow = f"real-{name}"
    return AlgorithmTaskSpec(f"{flow}.s.{PARTY}", f"{flow}.s", flow, "s", algorithm, "1", params, PARTY, role,
                             (Peer(PARTY, role),), data_ref=data_ref)


async def _pods(core: k8s.CoreV1Api, runner: KubernetesRunner, namespace: str, spec) -> list[k8s.V1Pod]:
    name = runner.manifest(spec)["metadata"]["name"]
    return (await core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}")).items


def _exit_code(pod: k8s.V1Pod) -> int | None:
    (status,) = pod.status.container_statuses or [None]
    terminated = status and status.state and status.state.terminated
    return terminated.exit_code if terminated else None


async def test_an_executor_pod_reads_its_partys_lmdb_data_on_the_real_node_and_the_job_completes(
        party, k8s_admin, k8s_real_node):
    runner, recorder, namespace = party
    core, batch = k8s.CoreV1Api(k8s_admin), k8s.BatchV1Api(k8s_admin)
    enough = _spec("ok", "ferry.data.validate", {"min_rows": ROWS}, "party", data_ref="clinic")
    # One row more than the store holds: only an executor that really read it fails, with DataError.
    too_many = _spec("short", "ferry.data.validate", {"min_rows": ROWS + 1}, "party", data_ref="clinic")
    for spec in (enough, too_many):
        await runner.dispatch(spec)

    def ended(spec):
        return {Phase.SUCCEEDED, Phase.FAILED} & set(recorder.phases(spec.algo_task_id))
    await eventually(lambda: ended(enough) and ended(too_many), timeout=240, what="both executors ended")

    assert recorder.phases(enough.algo_task_id)[-1] == Phase.SUCCEEDED, recorder.seen
    (pod,) = await _pods(core, runner, namespace, enough)
    assert pod.spec.node_name == k8s_real_node.name
    assert pod.status.phase == "Succeeded" and _exit_code(pod) == 0
    job = await batch.read_namespaced_job(runner.manifest(enough)["metadata"]["name"], namespace)
    assert job.status.succeeded == 1 and any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)

    failure = [o for o in recorder.seen if o.algo_task_id == too_many.algo_task_id and o.phase == Phase.FAILED][-1]
    assert (failure.exit_code, failure.retriable) == (DataError.exit_code, False)
    (pod,) = await _pods(core, runner, namespace, too_many)
    assert _exit_code(pod) == DataError.exit_code
    assert "has 40 rows" in (pod.status.container_statuses[0].state.terminated.message or "")


async def test_suspend_stops_the_real_executor_pod_and_resume_starts_a_new_one(party, k8s_admin, k8s_real_node):
    runner, recorder, namespace = party
    core = k8s.CoreV1Api(k8s_admin)
    spec = _spec("suspend", "ferry.noop", {"sleep_s": 600.0}, "worker")
    await runner.dispatch(spec)

    async def running_pod():
        pods = [p for p in await _pods(core, runner, namespace, spec)
                if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
        return pods[0] if pods else None
    first = await eventually(running_pod, timeout=120, what="a running executor pod")
    await eventually(lambda: Phase.RUNNING in recorder.phases(spec.algo_task_id), what="running reported")
    # Suspend once the algorithm runs: before the executor installs its SIGTERM handler (while it
    # imports), the container's PID 1 ignores SIGTERM and is killed at the grace period's end.
    await eventually(lambda: "noop.start" in k8s_real_node.pod_log(namespace, first.metadata.name, "executor"),
                     timeout=120, what="the executor's algorithm started")

    await runner.suspend(spec)
    await eventually(lambda: Phase.SUSPENDED in recorder.phases(spec.algo_task_id), timeout=90, what="suspended")
    gone = await eventually(lambda: _pods_gone(core, runner, namespace, spec), timeout=90, what="the pod deleted")
    assert gone
    job = await k8s.BatchV1Api(k8s_admin).read_namespaced_job(runner.manifest(spec)["metadata"]["name"], namespace)
    assert not job.status.failed, "the executor's exit 143 on SIGTERM counted as a failure"

    await runner.resume(spec)
    second = await eventually(running_pod, timeout=120, what="a new executor pod after resume")
    assert second.metadata.uid != first.metadata.uid
    await runner.cancel(spec)
    await eventually(lambda: _pods_gone(core, runner, namespace, spec), timeout=90, what="the pod gone on cancel")


async def _pods_gone(core, runner, namespace, spec) -> bool:
    return not await _pods(core, runner, namespace, spec)
