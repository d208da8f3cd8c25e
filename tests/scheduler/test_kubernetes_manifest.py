"""build_job_manifest: the exact Job for one attempt, the label rules, the executor's environment contract."""

from __future__ import annotations

import copy

import pytest

from services.scheduler.adapters.kubernetes import JobSettings, PartyCredentials, build_job_manifest, label_value
from services.scheduler.adapters.node_registry import parse_node_registry
from shared.events import AlgorithmTaskSpec, Peer
from shared.wire.codec import spec_from_text, spec_to_text

SPEC = AlgorithmTaskSpec(
    algo_task_id="flow-1.train.hospital-a", task_id="flow-1.train", flow_id="flow-1", step="train",
    algorithm="ferry.fedavg", version="1.0", params={"rounds": 3}, party="hospital-a", role="client",
    peers=(Peer("hospital-a", "client"), Peer("coordinator", "server")), data_ref="mnist", attempt=2)

REGISTRY = parse_node_registry({"parties": {
    "hospital-a": {
        "namespace": "hospitals",
        "node_selector": {"ferry.io/party": "hospital-a"},
        "node_affinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "ferry.io/data", "operator": "Exists"}]}]}},
        "data_volume": {"persistentVolumeClaim": {"claimName": "hospital-a-data"}},
        "checkpoint_volume": {"persistentVolumeClaim": {"claimName": "hospital-a-state"}},
        "resources": {"requests": {"cpu": 1, "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "service_account": "ferry-executor",
    },
    "coordinator": {"namespace": "ferry", "node_selector": {"ferry.io/party": "coordinator"}},
}})
SETTINGS = JobSettings(env=(("FERRY_KAFKA__BOOTSTRAP", "kafka:9092"), ("FERRY_BUS__KIND", "kafka")))

LABELS = {
    "app.kubernetes.io/name": "ferry-executor", "app.kubernetes.io/part-of": "ferry",
    "app.kubernetes.io/managed-by": "ferry-scheduler",
    "ferry.io/flow": "flow-1", "ferry.io/task": "flow-1.train", "ferry.io/algo-task": "flow-1.train.hospital-a",
    "ferry.io/party": "hospital-a", "ferry.io/role": "client", "ferry.io/attempt": "2",
}
ANNOTATIONS = {
    "ferry.io/flow-id": "flow-1", "ferry.io/task-id": "flow-1.train",
    "ferry.io/algo-task-id": "flow-1.train.hospital-a", "ferry.io/party": "hospital-a", "ferry.io/role": "client", "ferry.io/step": "train",
    "ferry.io/algorithm": "ferry.fedavg@1.0",
}
GOLDEN = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "ferry-flow-1-train-hospital-a-a2", "namespace": "hospitals",
                 "labels": LABELS, "annotations": ANNOTATIONS},
    "spec": {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Ignore", "onExitCodes": {"containerName": "executor", "operator": "In", "values": [143]}},
            {"action": "FailJob", "onExitCodes": {"containerName": "executor", "operator": "In", "values": [2, 3]}},
            {"action": "FailJob", "onExitCodes": {"containerName": "executor", "operator": "NotIn", "values": [0]}},
        ]},
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "metadata": {"labels": LABELS, "annotations": ANNOTATIONS},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 300,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                    "fsGroup": 65534, "fsGroupChangePolicy": "OnRootMismatch"},
                "nodeSelector": {"ferry.io/party": "hospital-a"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "ferry.io/data", "operator": "Exists"}]}]}}},
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                "serviceAccountName": "ferry-executor",
                "containers": [{
                    "name": "executor",
                    "image": "registry.example.org/ferry:0.1.0",
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["executor"],
                    "env": [
                        {"name": "FERRY_EXECUTOR__ARTIFACTS_DIR", "value": "/var/lib/ferry/state/artifacts"},
                        {"name": "FERRY_EXECUTOR__CHECKPOINT_DIR", "value": "/var/lib/ferry/state/checkpoints"},
                        {"name": "FERRY_EXECUTOR__DATA_DIR", "value": "/var/lib/ferry/data"},
                        {"name": "FERRY_FEDERATION__IDENTITY_KEY_FILE", "value": "/etc/ferry/identity/identity.key"},
                        {"name": "FERRY_FEDERATION__KEY_REGISTRY", "value": "/etc/ferry/federation/keys.yaml"},
                        {"name": "FERRY_KAFKA__TLS_CA_FILE", "value": "/etc/ferry/kafka-tls/ca.crt"},
                        {"name": "FERRY_KAFKA__TLS_CERT_FILE", "value": "/etc/ferry/kafka-tls/tls.crt"},
                        {"name": "FERRY_KAFKA__TLS_KEY_FILE", "value": "/etc/ferry/kafka-tls/tls.key"},
                        {"name": "FERRY_TASK_SPEC", "value": spec_to_text(SPEC)},
                        {"name": "FERRY_BUS__KIND", "value": "kafka"},
                        {"name": "FERRY_KAFKA__BOOTSTRAP", "value": "kafka:9092"},
                    ],
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/var/lib/ferry/data", "readOnly": True},
                        {"name": "state", "mountPath": "/var/lib/ferry/state"},
                        {"name": "identity", "mountPath": "/etc/ferry/identity", "readOnly": True},
                        {"name": "key-registry", "mountPath": "/etc/ferry/federation", "readOnly": True},
                        {"name": "kafka-tls", "mountPath": "/etc/ferry/kafka-tls", "readOnly": True},
                    ],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
                }],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "hospital-a-data"}},
                    {"name": "state", "persistentVolumeClaim": {"claimName": "hospital-a-state"}},
                    {"name": "identity", "secret": {"secretName": "ferry-identity-hospital-a", "defaultMode": 0o440}},
                    {"name": "key-registry", "configMap": {"name": "ferry-keys"}},
                    {"name": "kafka-tls", "secret": {"secretName": "ferry-kafka-party", "defaultMode": 0o440}},
                ],
            },
        },
    },
}


def build(spec=SPEC, party="hospital-a", settings=SETTINGS):
    return build_job_manifest(spec, REGISTRY.node_for(party), "registry.example.org/ferry:0.1.0", settings)


def test_the_job_for_a_party_with_data_matches_the_golden_manifest():
    assert build() == GOLDEN


def test_the_executor_reads_back_exactly_the_spec_it_was_given():
    env = {e["name"]: e["value"] for e in build()["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert spec_from_text(env["FERRY_TASK_SPEC"]) == SPEC


def test_a_party_without_volumes_gets_no_data_dir_and_a_scratch_state_volume():
    spec = AlgorithmTaskSpec("flow-1.train.coordinator", "flow-1.train", "flow-1", "train", "ferry.fedavg", "1.0",
                             {}, "coordinator", "server", (), attempt=1)
    pod = build(spec, "coordinator")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "FERRY_EXECUTOR__DATA_DIR" not in {e["name"] for e in container["env"]}
    assert pod["volumes"][0] == {"name": "state", "emptyDir": {}}
    assert [v["name"] for v in pod["volumes"]] == ["state", "identity", "key-registry", "kafka-tls"]
    assert container["volumeMounts"][0] == {"name": "state", "mountPath": "/var/lib/ferry/state"}
    assert pod["volumes"][1]["secret"]["secretName"] == "ferry-identity-coordinator"
    assert "resources" not in container and "affinity" not in pod and "serviceAccountName" not in pod


def test_settings_cannot_override_the_executor_contract():
    settings = JobSettings(env=(("FERRY_TASK_SPEC", "stale"), ("FERRY_EXECUTOR__DATA_DIR", "/tmp")))
    env = build(settings=settings)["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    values = {e["name"]: e["value"] for e in env}
    assert values["FERRY_TASK_SPEC"] == spec_to_text(SPEC)
    assert values["FERRY_EXECUTOR__DATA_DIR"] == "/var/lib/ferry/data"


def test_executor_pods_join_the_nodes_network_only_when_the_development_setting_asks():
    assert "hostNetwork" not in build()["spec"]["template"]["spec"]
    assert build(settings=JobSettings(host_network=True))["spec"]["template"]["spec"]["hostNetwork"] is True


def test_the_manifest_shares_nothing_mutable_with_the_registry():
    before = copy.deepcopy(REGISTRY.node_for("hospital-a"))
    manifest = build()
    pod = manifest["spec"]["template"]["spec"]
    pod["volumes"][0]["persistentVolumeClaim"]["claimName"] = "changed"
    pod["containers"][0]["resources"]["requests"]["cpu"] = "99"
    pod["affinity"]["nodeAffinity"].clear()
    pod["tolerations"][0]["key"] = "changed"
    manifest["spec"]["podFailurePolicy"]["rules"].clear()
    assert REGISTRY.node_for("hospital-a") == before
    assert build() == GOLDEN


def test_long_or_odd_ids_become_valid_distinct_labels_while_annotations_keep_them_exactly():
    long_id = "flow-" + "x" * 80 + ".train.hospital-a"
    spec = AlgorithmTaskSpec(long_id, "flow/1 train", "flow/1", "train", "ferry.fedavg", "1.0", {},
                             "hospital-a", "client", (), attempt=1)
    manifest = build(spec)
    labels, notes = manifest["metadata"]["labels"], manifest["metadata"]["annotations"]
    assert notes["ferry.io/algo-task-id"] == long_id and notes["ferry.io/flow-id"] == "flow/1"
    for value in labels.values():
        assert len(value) <= 63 and value[0].isalnum() and value[-1].isalnum(), value
    assert labels["ferry.io/flow"].startswith("flow-1-")
    assert len(manifest["metadata"]["name"]) <= 63


@pytest.mark.parametrize("text", ["a", "flow-1.train", "A_b.c-9", "x" * 63, ""])
def test_valid_label_values_are_kept_as_they_are(text):
    assert label_value(text) == text


@pytest.mark.parametrize("a, b", [("flow/1", "flow:1"), ("x" * 64, "x" * 65), ("-a-", "a")])
def test_sanitized_label_values_stay_valid_and_distinct(a, b):
    assert label_value(a) != label_value(b)
    for value in (label_value(a), label_value(b)):
        assert 0 < len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()


async def test_every_field_of_the_manifest_is_known_to_the_kubernetes_api_model():
    """A misspelt field would be dropped silently by the API server; the client's models drop it here."""
    import json
    from types import SimpleNamespace

    from kubernetes_asyncio.client import ApiClient

    async with ApiClient() as client:
        job = client.deserialize(SimpleNamespace(data=json.dumps(GOLDEN)), "V1Job")
        assert client.sanitize_for_serialization(job) == GOLDEN


def test_every_executor_mounts_its_own_partys_identity_and_kafka_certificate_not_the_schedulers():
    # The scheduler's own certificate paths in its settings must not reach the Pod: the contract wins.
    settings = JobSettings(env=(("FERRY_KAFKA__TLS_CERT_FILE", "/etc/ferry/scheduler.crt"),
                                ("FERRY_FEDERATION__IDENTITY_KEY_FILE", "/elsewhere.key")))
    env = {e["name"]: e["value"] for e in build(settings=settings)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FERRY_KAFKA__TLS_CERT_FILE"] == "/etc/ferry/kafka-tls/tls.crt"
    assert env["FERRY_FEDERATION__IDENTITY_KEY_FILE"] == "/etc/ferry/identity/identity.key"


def test_credential_names_follow_the_settings_and_plaintext_development_mounts_no_kafka_certificate():
    settings = JobSettings(credentials=PartyCredentials("keys-{party}", "registry-{party}", ""))
    pod = build(settings=settings)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["identity"]["secret"]["secretName"] == "keys-hospital-a"
    assert volumes["key-registry"]["configMap"]["name"] == "registry-hospital-a"
    assert "kafka-tls" not in volumes
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert not {n for n in env if n.startswith("FERRY_KAFKA__TLS_")}
