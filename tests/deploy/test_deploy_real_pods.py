"""deploy/k8s running for real: the splitter, scheduler and monitor Deployments as pods on the
real node (containerd + kubelet, tests/k8s_cluster_fixture.py) with Ferry's image, talking to
the session's Kafka broker over mutual TLS; flows submitted from outside the cluster, each
party's executor a Job the in-cluster scheduler creates on the node its party is registered to.

What an operator would add to deploy/k8s, the test adds as a kustomize overlay over it
(``_overlay``): its own namespace (so the kwok roll-out of test_deploy_real_cluster.py keeps
``ferry``), the Kafka certificates of each service (a secretGenerator), the settings and the
node registry, the image ``ferry:latest`` loaded on the node, and, for this machine only,
the host network: the broker listens on 127.0.0.1 and the node has no routable address, so
the platform's pods use ``hostNetwork`` (with their HTTP ports moved to free ports on
127.0.0.1 and the scheduler pointed at the API server there), and so do the executors
(FERRY_SCHEDULER__EXECUTOR_HOST_NETWORK, development only).

One real node runs per machine, so every party of these flows (two clinics and the
coordinator) is registered to that node, each with its own namespace, credentials, LMDB data
volume and checkpoint volume (hostPath folders of this test).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from kubernetes_asyncio import client as k8s

from services.executor.data.importers import import_partitioned, load_source, with_test_split
from services.executor.federation.identity import Identity
from services.scheduler.adapters.k8s_watch import LABEL_FLOW
from services.scheduler.adapters.kubernetes import EXECUTOR_UID, label_value
from shared.devtools.k8s_nodes import admin_client
from tests.deploy.test_deploy_real_cluster import ROOT, kubectl
from tests.e2e.platform import algorithm_tasks, free_port, new_flow_id, publish_flow
from tests.k8s_cluster_fixture import REAL_NODE_PARTY
from tests.kafka_broker_fixture import create_catalogue_topics
from tests.scheduler.test_kubernetes_real_pods import party_credentials

CLIENTS = ("clinic-a", "clinic-b")
AGGREGATOR = "coordinator"
PARTIES = (*CLIENTS, AGGREGATOR)
SERVICES = ("splitter", "scheduler", "monitor")
DATASET = "digits"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class Deployed:
    namespace: str
    party_namespaces: dict[str, str]
    state: dict[str, Path]  # party -> its checkpoint volume's folder on the node
    monitor: httpx.Client
    node: str
    cluster: object

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(kubectl(self.cluster, *args, "-o", "json").stdout)

    def get(self, path: str):
        response = self.monitor.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def flow(self, flow_id: str) -> dict | None:
        return self.get(f"/flows/{flow_id}")

    def command(self, verb: str, flow_id: str) -> None:
        response = self.monitor.post(f"/flows/{flow_id}/{verb}", params={"reason": "test"})
        assert response.status_code == 202, response.text

    def wait_flow(self, flow_id: str, statuses=TERMINAL, timeout_s: float = 420) -> dict:
        return wait_until(lambda: (v := self.flow(flow_id)) and v["status"] in statuses and v,
                          f"flow {flow_id} in {statuses}", timeout_s)

    def aggregator(self, flow_id: str) -> dict:
        view = self.flow(flow_id) or {"tasks": []}
        return next((a for a in algorithm_tasks(view).values() if a["role"] == "aggregator"), {})

    def pods(self, flow_id: str) -> list[dict]:
        """The executor pods of `flow_id` in every party namespace (kubectl, as an operator would)."""
        found = []
        for namespace in self.party_namespaces.values():
            listed = self.kubectl_json("get", "pods", "-n", namespace, "-l", f"{LABEL_FLOW}={label_value(flow_id)}")
            found += listed["items"]
        return found

    def model(self, flow_id: str) -> dict[str, np.ndarray]:
        path = self.state[AGGREGATOR] / "artifacts" / flow_id / "model-train.npz"
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def wait_until(probe, what: str, timeout_s: float, every_s: float = 0.5):
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")


def _party_volumes(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Each clinic's share of sklearn's digits (1797 rows, 64 features, 10 classes) in its own
    LMDB store, and a checkpoint folder per party, owned by the executor's user."""
    table = with_test_split(load_source(f"sklearn:{DATASET}"), 0.2, 7)
    import_partitioned(folder / "data", list(CLIENTS), DATASET, table, scheme="iid", seed=7)
    data = {party: folder / "data" / party for party in CLIENTS}
    state = {party: folder / "state" / party for party in PARTIES}
    for path in state.values():
        path.mkdir(parents=True)
    for top in (folder / "data", folder / "state"):
        for root, dirs, files in os.walk(top):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, EXECUTOR_UID, EXECUTOR_UID)
    return data, state


def _registry(party_namespaces: dict[str, str], data: dict[str, Path], state: dict[str, Path]) -> dict:
    """Every party on the one real node (its label ferry.io/party), with its own volumes."""
    parties = {}
    for party, namespace in party_namespaces.items():
        entry = {"namespace": namespace, "node_selector": {"ferry.io/party": REAL_NODE_PARTY},
                 "checkpoint_volume": {"hostPath": {"path": str(state[party]), "type": "Directory"}}}
        if party in data:
            entry["data_volume"] = {"hostPath": {"path": str(data[party]), "type": "Directory"}}
        parties[party] = entry
    return {"parties": parties}


def _host_network_patch(service: str, port: int, extra_env: dict[str, str]) -> dict:
    """JSON patches that put one Deployment on the host network at 127.0.0.1:`port`, on the real node."""
    container = "/spec/template/spec/containers/0"
    ops = [{"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
           {"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": "ClusterFirstWithHostNet"},
           {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"ferry.io/party": REAL_NODE_PARTY}},
           {"op": "add", "path": f"{container}/imagePullPolicy", "value": "Never"},
           {"op": "test", "path": f"{container}/env/0/name", "value": "FERRY_HTTP__PORT"},
           {"op": "replace", "path": f"{container}/env/0/value", "value": str(port)},
           {"op": "replace", "path": f"{container}/ports/0/containerPort", "value": port},
           {"op": "add", "path": f"{container}/readinessProbe/httpGet/host", "value": "127.0.0.1"},
           {"op": "add", "path": f"{container}/readinessProbe/periodSeconds", "value": 2},
           {"op": "add", "path": f"{container}/livenessProbe/httpGet/host", "value": "127.0.0.1"},
           # Under load the services take a while to import and connect: no restart for that.
           {"op": "add", "path": f"{container}/livenessProbe/initialDelaySeconds", "value": 120}]
    ops += [{"op": "add", "path": f"{container}/env/-", "value": {"name": k, "value": v}}
            for k, v in extra_env.items()]
    return {"target": {"kind": "Deployment", "name": f"ferry-{service}"}, "patch": yaml.safe_dump(ops)}


def _overlay(folder: Path, namespace: str, settings: dict[str, str], registry: dict, ports: dict[str, int],
             api_server: str, tls_dir: Path) -> Path:
    """The operator's kustomization over deploy/k8s (see the module's docstring)."""
    folder.mkdir()
    for service in SERVICES:
        (folder / service).mkdir()
        for src, dst in (("ca.crt", "ca.crt"), (f"{service}.crt", "tls.crt"), (f"{service}.key", "tls.key")):
            (folder / service / dst).write_bytes((tls_dir / src).read_bytes())
    host, port = api_server.removeprefix("https://").rsplit(":", 1)
    # In-cluster config (KUBERNETES_SERVICE_HOST/PORT) names the API server on the node's loopback.
    api = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    delete = [("v1", "Namespace", "ferry-hospital-a", None),  # deploy/k8s's example party
              ("v1", "ServiceAccount", "ferry-executor", "ferry-hospital-a"),
              ("rbac.authorization.k8s.io/v1", "RoleBinding", "ferry-scheduler", "ferry-hospital-a")]
    patches = [{"patch": yaml.safe_dump({"$patch": "delete", "apiVersion": v, "kind": kind,
                                         "metadata": {"name": name, **({"namespace": ns} if ns else {})}})}
               for v, kind, name, ns in delete]
    patches.append({"patch": yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": "ferry-settings", "namespace": "ferry"},
                                             "data": settings})})
    patches.append({"patch": yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": "ferry-nodes", "namespace": "ferry"},
                                             "data": {"nodes.yaml": yaml.safe_dump(registry)}})})
    patches += [_host_network_patch(s, ports[s], api if s == "scheduler" else {}) for s in SERVICES]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "deploy" / "k8s", folder)],
        "namespace": namespace,
        "images": [{"name": "registry.example.org/ferry", "newName": "ferry", "newTag": "latest"}],
        "secretGenerator": [{"name": f"ferry-kafka-{s}", "options": {"disableNameSuffixHash": True},
                             "files": [f"{s}/ca.crt", f"{s}/tls.crt", f"{s}/tls.key"]} for s in SERVICES],
        "patches": patches,
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return folder


async def _parties(cluster, namespace: str, party_namespaces: dict[str, str], tls_dir: Path) -> None:
    """Each party's namespace: its credentials and the scheduler's right to run Jobs there."""
    federation = {party: Identity.generate(party) for party in PARTIES}
    api_client = await admin_client(cluster.state)
    try:
        core, rbac = k8s.CoreV1Api(api_client), k8s.RbacAuthorizationV1Api(api_client)
        for party, party_namespace in party_namespaces.items():
            await core.create_namespace({"metadata": {"name": party_namespace,
                                                      "labels": {"app.kubernetes.io/part-of": "ferry"}}})
            await party_credentials(core, party_namespace, tls_dir, party, federation)
            await rbac.create_namespaced_role_binding(party_namespace, {
                "metadata": {"name": "ferry-scheduler"},
                "subjects": [{"kind": "ServiceAccount", "name": "ferry-scheduler", "namespace": namespace}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "ferry-scheduler-jobs"}})
    finally:
        await api_client.close()


@pytest.fixture(scope="module")
def deployed(k8s_cluster, k8s_real_node, kafka_bootstrap, kafka_tls_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deployed")
    namespace = f"ferry-e2e-{uuid.uuid4().hex[:5]}"
    party_namespaces = {party: f"{namespace}-{party}" for party in PARTIES}
    data, state = _party_volumes(folder)
    asyncio.run(create_catalogue_topics(kafka_bootstrap))
    asyncio.run(_parties(k8s_cluster, namespace, party_namespaces, kafka_tls_dir))
    ports = {service: free_port() for service in SERVICES}
    settings = {"FERRY_KAFKA__BOOTSTRAP": kafka_bootstrap, "FERRY_HTTP__HOST": "127.0.0.1",
                "FERRY_SCHEDULER__NAMESPACE": namespace, "FERRY_SCHEDULER__EXECUTOR_IMAGE": "ferry:latest",
                "FERRY_SCHEDULER__EXECUTOR_HOST_NETWORK": "true",
                # Six executors importing torch on a shared 2-core machine under load averages of 20+
                # went a minute without a heartbeat and were declared lost (and retried) mid-flow.
                "FERRY_MONITOR__EXECUTOR_LOST_AFTER_S": "300"}
    overlay = _overlay(folder / "overlay", namespace, settings, _registry(party_namespaces, data, state), ports,
                       k8s_cluster.state.server, kafka_tls_dir)
    monitor = httpx.Client(base_url=f"http://127.0.0.1:{ports['monitor']}", timeout=10)
    try:
        applied = kubectl(k8s_cluster, "apply", "--server-side", "--field-manager=ferry-e2e", "-k", str(overlay))
        assert "Warning" not in applied.stderr, applied.stderr
        for service in SERVICES:  # the image's services import torch-free, but the machine is shared
            kubectl(k8s_cluster, "rollout", "status", "-n", namespace, "--timeout=400s",
                    f"deployment/ferry-{service}", timeout=420)
        yield Deployed(namespace, party_namespaces, state, monitor, k8s_real_node.name, k8s_cluster)
    finally:
        monitor.close()
        for ns in (namespace, *party_namespaces.values()):
            kubectl(k8s_cluster, "delete", "namespace", ns, "--wait=false", check=False)
        for ns in (namespace, *party_namespaces.values()):
            kubectl(k8s_cluster, "wait", "--for=delete", f"namespace/{ns}", "--timeout=180s", check=False,
                    timeout=200)


def _fedavg(rounds: int, min_round_s: float = 0.0) -> dict:
    return {"flow": "k8s-fedavg",
            "parties": {**{c: {"data": DATASET} for c in CLIENTS}, AGGREGATOR: {}},
            "steps": [{"name": "train", "algorithm": "ferry.fedavg", "version": "1",
                       "params": {"model": "logreg", "rounds": rounds, "local_epochs": 1, "batch_size": 32,
                                  "lr": 0.1, "optimizer": "sgd", "strategy": "fedavg", "min_clients": 2,
                                  "seed": 7, "round_timeout_s": 120, "min_round_s": min_round_s},
                       "parties": {"client": list(CLIENTS), "aggregator": AGGREGATOR}}]}


def _platform_pods(deployed: Deployed) -> dict[str, dict]:
    pods = deployed.kubectl_json("get", "pods", "-n", deployed.namespace)["items"]
    return {p["metadata"]["labels"]["app.kubernetes.io/name"]: p for p in pods
            if p["status"].get("phase") == "Running"}


def test_a_flow_submitted_from_outside_the_cluster_trains_with_each_partys_task_a_pod_on_its_node(
        deployed, kafka_bootstrap):
    platform = _platform_pods(deployed)
    assert set(platform) == {f"ferry-{s}" for s in SERVICES}
    assert {p["spec"]["nodeName"] for p in platform.values()} == {deployed.node}

    flow_id = new_flow_id("k8s-fedavg")
    publish_flow(kafka_bootstrap, _fedavg(rounds=2), flow_id, client_id="upstream")
    view = deployed.wait_flow(flow_id)
    assert view["status"] == "SUCCEEDED", view
    tasks = algorithm_tasks(view)
    assert {(a["party"], a["role"], a["status"]) for a in tasks.values()} == {
        *((c, "client", "SUCCEEDED") for c in CLIENTS), (AGGREGATOR, "aggregator", "SUCCEEDED")}
    metrics = deployed.aggregator(flow_id)["metrics"]
    assert metrics["test_accuracy"] > 0.5, metrics  # 10 classes: chance is 0.1

    # An executor reports its end before it closes its Kafka clients: its pod ends a little later.
    pods = wait_until(lambda: (pods := deployed.pods(flow_id)) and
                      all(p["status"]["phase"] in ("Succeeded", "Failed") for p in pods) and pods,
                      "the executor pods ended", timeout_s=180)
    by_party = {p["metadata"]["annotations"]["ferry.io/party"]: p for p in pods}
    assert len(pods) == len(PARTIES) and set(by_party) == set(PARTIES)
    for party, pod in by_party.items():
        assert pod["metadata"]["namespace"] == deployed.party_namespaces[party]
        assert pod["spec"]["nodeName"] == deployed.node
        assert pod["status"]["phase"] == "Succeeded"
    model = deployed.model(flow_id)
    assert model and all(np.isfinite(v).all() for v in model.values())


def test_training_suspended_across_pods_resumes_from_its_checkpoint_to_the_uninterrupted_model(deployed,
                                                                                              kafka_bootstrap):
    rounds = 12
    reference, resumed = new_flow_id("k8s-ref"), new_flow_id("k8s-sr")
    # min_round_s paces the rounds (waiting changes no number): room to suspend mid-training.
    for flow_id in (reference, resumed):
        publish_flow(kafka_bootstrap, _fedavg(rounds, min_round_s=1.0), flow_id, client_id="upstream")

    at = wait_until(lambda: deployed.aggregator(resumed).get("round", 0) >= 2 and
                    deployed.aggregator(resumed)["round"], "the aggregator's round 2", timeout_s=420, every_s=0.2)
    assert at < rounds, "training ended before it could be suspended"
    first = {p["metadata"]["uid"] for p in deployed.pods(resumed)}
    deployed.command("suspend", resumed)
    view = deployed.wait_flow(resumed, ("SUSPENDED", *TERMINAL), timeout_s=180)
    assert view["status"] == "SUSPENDED", view
    stopped_at = deployed.aggregator(resumed)["round"]
    assert stopped_at < rounds
    # The Job controller deleted every executor pod; the checkpoints are on the parties' volumes.
    wait_until(lambda: not deployed.pods(resumed), "the suspended flow's pods deleted", timeout_s=180)
    checkpoints = sorted((deployed.state[AGGREGATOR] / "checkpoints").glob(f"{resumed}.*/ckpt-*.json"))
    assert checkpoints, "the aggregator left no checkpoint on its volume"
    time.sleep(2)
    assert not deployed.pods(resumed) and deployed.flow(resumed)["status"] == "SUSPENDED"

    deployed.command("resume", resumed)
    view = deployed.wait_flow(resumed)
    assert view["status"] == "SUCCEEDED", view
    assert {a["attempt"] for a in algorithm_tasks(view).values()} == {1}  # resumed, not retried
    second = deployed.pods(resumed)
    assert len(second) == len(PARTIES) and not first & {p["metadata"]["uid"] for p in second}
    assert {p["spec"]["nodeName"] for p in second} == {deployed.node}

    view = deployed.wait_flow(reference)
    assert view["status"] == "SUCCEEDED", view
    # The arrays, bit for bit (the .npz files differ: zip entries carry their write time).
    expected, got = deployed.model(reference), deployed.model(resumed)
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert expected[name].dtype == got[name].dtype and expected[name].shape == got[name].shape
        assert expected[name].tobytes() == got[name].tobytes(), f"{name} differs after suspend/resume"
    assert deployed.aggregator(reference)["metrics"]["test_accuracy"] == \
        deployed.aggregator(resumed)["metrics"]["test_accuracy"]
