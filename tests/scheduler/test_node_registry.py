"""The data-node registry: the documented format loads; every mistake names file, party and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.scheduler.adapters.node_registry import (NodeRegistryError, PartyNode, UnknownParty, Volume,
                                                       load_node_registry, parse_node_registry)
from shared.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]

FULL = """
parties:
  hospital-a:
    namespace: hospitals
    node_selector: {ferry.io/party: hospital-a}
    node_affinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [eu-1a]}]
    data_volume: {persistentVolumeClaim: {claimName: hospital-a-data}}
    data_mount_path: /data/
    checkpoint_volume: {hostPath: {path: /srv/ferry/checkpoints, type: DirectoryOrCreate}}
    resources: {requests: {cpu: 1, memory: 2Gi}, limits: {memory: 4Gi, nvidia.com/gpu: 1}}
    tolerations: [{key: dedicated, operator: Equal, value: hospital-a, effect: NoSchedule}]
    service_account: ferry-executor
  coordinator:
    node_affinity: {preferredDuringSchedulingIgnoredDuringExecution: []}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nodes.yaml"
    path.write_text(text)
    return path


def test_every_documented_field_is_read(tmp_path):
    registry = load_node_registry(write(tmp_path, FULL), default_namespace="ferry")
    node = registry.node_for("hospital-a")
    assert node == PartyNode(
        party="hospital-a", namespace="hospitals", node_selector={"ferry.io/party": "hospital-a"},
        node_affinity={"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-1a"]}]}]}},
        data=Volume({"persistentVolumeClaim": {"claimName": "hospital-a-data"}}, "/data"),
        checkpoints=Volume({"hostPath": {"path": "/srv/ferry/checkpoints", "type": "DirectoryOrCreate"}},
                           "/var/lib/ferry/state"),
        resources={"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi", "nvidia.com/gpu": "1"}},
        tolerations=({"key": "dedicated", "operator": "Equal", "value": "hospital-a", "effect": "NoSchedule"},),
        service_account="ferry-executor")
    coordinator = registry.node_for("coordinator")
    assert (coordinator.namespace, coordinator.data, coordinator.checkpoints) == ("ferry", None, None)
    assert registry.namespaces == {"hospitals", "ferry"}


def test_the_example_shipped_in_the_kubernetes_manifests_loads():
    docs = list(yaml.safe_load_all((REPO / "deploy/k8s/10-config.yaml").read_text()))
    nodes = next(d for d in docs if d["metadata"]["name"] == "ferry-nodes")["data"]["nodes.yaml"]
    registry = parse_node_registry(yaml.safe_load(nodes), "10-config.yaml")
    assert sorted(registry.parties) == ["coordinator", "hospital-a"]
    assert registry.node_for("hospital-a").data.source == {"persistentVolumeClaim": {"claimName": "hospital-a-data"}}


def test_an_unknown_party_is_a_configuration_error_naming_it_and_the_known_ones(tmp_path):
    registry = load_node_registry(write(tmp_path, FULL), default_namespace="ferry")
    with pytest.raises(UnknownParty) as caught:
        registry.node_for("clinic-z")
    assert isinstance(caught.value, ConfigurationError) and not caught.value.retriable
    assert caught.value.party == "clinic-z" and caught.value.known == ("coordinator", "hospital-a")
    assert "'clinic-z'" in str(caught.value) and "coordinator, hospital-a" in str(caught.value)
    assert str(tmp_path / "nodes.yaml") in str(caught.value)


@pytest.mark.parametrize("entry, field, problem", [
    ("{namespace: n, nodeSelector: {a: b}}", "nodeSelector", "did you mean 'node_selector'"),
    ("{namespace: n, node_selector: {gpu: true}}", "node_selector.gpu", "quote it"),
    ("{namespace: n}", "node_selector", "node_selector and/or node_affinity"),
    ("{node_selector: {a: b}}", "namespace", "required"),
    ("{namespace: n, node_selector: {a: b}, data_volume: {hostPath: {path: /d}, emptyDir: {}}}",
     "data_volume", "one volume source"),
    ("{namespace: n, node_selector: {a: b}, data_volume: {pvc: claim}}", "data_volume.pvc", "volume source mapping"),
    ("{namespace: n, node_selector: {a: b}, data_volume: {emptyDir: {}}, data_mount_path: data}",
     "data_mount_path", "absolute path"),
    ("{namespace: n, node_selector: {a: b}, checkpoint_mount_path: /c}", "checkpoint_mount_path",
     "checkpoint_volume is missing"),
    ("{namespace: n, node_selector: {a: b}, resources: {requests: {memory: 2 GB}}}",
     "resources.requests.memory", "not a Kubernetes quantity"),
    ("{namespace: n, node_selector: {a: b}, resources: {request: {cpu: 1}}}", "resources.request", "unknown"),
    ("{namespace: n, node_selector: {a: b}, tolerations: {key: x}}", "tolerations", "list"),
])
def test_a_bad_field_is_reported_with_file_party_and_field(tmp_path, entry, field, problem):
    path = write(tmp_path, f"parties:\n  clinic-b: {entry}\n")
    with pytest.raises(NodeRegistryError) as caught:
        load_node_registry(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: party 'clinic-b': {field}: "), message
    assert problem in message


@pytest.mark.parametrize("text, problem", [
    ("parties: {}", "non-empty 'parties'"),
    ("- a\n- b", "non-empty 'parties'"),
    ("parties: {a: {namespace: n, node_selector: {x: y}}}\nparty_defaults: {}", "unknown top-level"),
    ("parties: [unclosed", "not valid YAML"),
])
def test_a_bad_file_is_reported_with_its_path(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(NodeRegistryError, match=problem) as caught:
        load_node_registry(path)
    assert str(caught.value).startswith(str(path))


def test_a_missing_file_is_a_configuration_error_naming_the_path(tmp_path):
    with pytest.raises(NodeRegistryError, match="cannot read the node registry") as caught:
        load_node_registry(tmp_path / "absent.yaml")
    assert isinstance(caught.value, ConfigurationError)
    assert str(tmp_path / "absent.yaml") in str(caught.value)
