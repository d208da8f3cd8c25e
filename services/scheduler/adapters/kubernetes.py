"""The Kubernetes runner: one batch/v1 Job per (algorithm task, attempt).

build_job_manifest is pure (spec + the party's node -> a Job as a dict). The
runner creates, suspends (spec.suspend, which makes the Job controller delete
the Pod with SIGTERM), resumes and deletes Jobs; KubernetesWatcher (k8s_watch)
reports what they do. This is the only module that imports kubernetes_asyncio.

Retries belong to the monitor, as new attempts with new Job names, so the Job
itself never retries a failed executor (backoffLimit 0). Its podFailurePolicy
(see _POD_FAILURE_POLICY) only decides which Pod endings are not an attempt's
failure at all: node disruptions and the executor's polite stop after a checkpoint.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

import aiohttp
import structlog
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from services.scheduler.adapters.k8s_watch import (ANNOTATION_ALGO_TASK, ANNOTATION_FLOW, ANNOTATION_TASK,
                                                   CONTAINER, LABEL_ALGO_TASK, LABEL_ATTEMPT, LABEL_FLOW,
                                                   LABEL_PARTY, LABEL_ROLE, LABEL_TASK, ApiError, Gone,
                                                   KubernetesWatcher)
from services.scheduler.adapters.node_registry import DEFAULT_STATE_MOUNT, NodeRegistry, PartyNode, Volume
from services.scheduler.core.naming import MAX_NAME, job_name
from services.scheduler.ports import ObservationSink
from shared.clock import Clock, SystemClock
from shared.errors import ConfigurationError, DataError, FerryError, Suspended
from shared.events import AlgorithmTaskSpec
from shared.wire.codec import spec_to_text

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
EXECUTOR_UID = 65534  # the image's USER (deploy/Dockerfile)

# Rules are tried in order; the first match decides. Exit codes from shared.errors.
_POD_FAILURE_POLICY = {"rules": [
    # Drains, preemption, evictions, lost nodes: not the executor's fault. Kubernetes starts
    # a new Pod for the same attempt, which continues from the last checkpoint.
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    # 143: the executor stopped on SIGTERM after writing its checkpoint. Suspending a Job
    # ends its Pod this way, and the Job controller would otherwise count that Pod as failed
    # (and, with backoffLimit 0, fail the Job) instead of waiting for the resume.
    {"action": "Ignore", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                         "values": [Suspended.exit_code]}},
    # Configuration and data errors: no retry can help.
    {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                          "values": [ConfigurationError.exit_code, DataError.exit_code]}},
    # Every other exit fails the Job too (backoffLimit 0 would as well); matching a rule puts
    # the exit code into the Failed condition's message, so the watcher can classify it
    # even before it has seen the Pod.
    {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]}},
]}


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars); invalid or long ids keep a hash so they stay distinct."""
    if len(text) <= MAX_NAME and _LABEL_VALUE.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:MAX_NAME - len(digest) - 1]
    clean = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", clean)
    return f"{clean}-{digest}" if clean else digest


IDENTITY_MOUNT, REGISTRY_MOUNT, KAFKA_TLS_MOUNT = "/etc/ferry/identity", "/etc/ferry/federation", "/etc/ferry/kafka-tls"


@dataclass(frozen=True)
class PartyCredentials:
    """What a party's namespace holds for its executors (docs/keys.md, "On Kubernetes").

    Names may contain '{party}'. The scheduler never reads them: the kubelet mounts them into
    the Pod, so the scheduler needs no right on Secrets and one party's key never leaves its
    namespace. kafka_tls_secret "" means no TLS (FERRY_KAFKA__INSECURE_PLAINTEXT, development).
    """
    identity_secret: str = "ferry-identity-{party}"  # key identity.key: the party's Ed25519 key (PKCS#8 PEM)
    key_registry_config_map: str = "ferry-keys"  # key keys.yaml: the pinned keys (`ferry keys registry --configmap`)
    kafka_tls_secret: str = "ferry-kafka-party"  # ca.crt, tls.crt, tls.key: a certificate of role `party`


def _credential_volumes(party: str, credentials: PartyCredentials) -> tuple[dict[str, str], list[dict], list[dict]]:
    """(executor environment, volumes, mounts) that bring the party's identity and Kafka certificate."""
    env = {"FERRY_FEDERATION__IDENTITY_KEY_FILE": f"{IDENTITY_MOUNT}/identity.key",
           "FERRY_FEDERATION__KEY_REGISTRY": f"{REGISTRY_MOUNT}/keys.yaml"}
    # 0440 with the Pod's fsGroup: readable by the executor's user, by nobody else in the Pod.
    volumes = [{"name": "identity", "secret": {"secretName": credentials.identity_secret.format(party=party),
                                               "defaultMode": 0o440}},
               {"name": "key-registry", "configMap": {"name": credentials.key_registry_config_map.format(party=party)}}]
    mounts = [{"name": "identity", "mountPath": IDENTITY_MOUNT, "readOnly": True},
              {"name": "key-registry", "mountPath": REGISTRY_MOUNT, "readOnly": True}]
    if credentials.kafka_tls_secret:
        env |= {"FERRY_KAFKA__TLS_CA_FILE": f"{KAFKA_TLS_MOUNT}/ca.crt",
                "FERRY_KAFKA__TLS_CERT_FILE": f"{KAFKA_TLS_MOUNT}/tls.crt",
                "FERRY_KAFKA__TLS_KEY_FILE": f"{KAFKA_TLS_MOUNT}/tls.key"}
        volumes.append({"name": "kafka-tls", "secret": {
            "secretName": credentials.kafka_tls_secret.format(party=party), "defaultMode": 0o440}})
        mounts.append({"name": "kafka-tls", "mountPath": KAFKA_TLS_MOUNT, "readOnly": True})
    return env, volumes, mounts


@dataclass(frozen=True)
class JobSettings:
    env: tuple[tuple[str, str], ...] = ()  # FERRY_* for the executor: bus, kafka, log settings
    credentials: PartyCredentials = PartyCredentials()
    args: tuple[str, ...] = ("executor",)  # the image's entrypoint is `ferry`
    ttl_seconds_after_finished: int = 86_400  # long enough to read a failed executor's logs
    termination_grace_period_s: int = 300  # SIGTERM -> finish the step, checkpoint, exit 143
    image_pull_policy: str = "IfNotPresent"
    host_network: bool = False  # development only (FERRY_SCHEDULER__EXECUTOR_HOST_NETWORK): a broker on 127.0.0.1


def job_labels(spec: AlgorithmTaskSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "ferry-executor", "app.kubernetes.io/part-of": "ferry",
            "app.kubernetes.io/managed-by": "ferry-scheduler",
            LABEL_FLOW: label_value(spec.flow_id), LABEL_TASK: label_value(spec.task_id),
            LABEL_ALGO_TASK: label_value(spec.algo_task_id), LABEL_PARTY: label_value(spec.party),
            LABEL_ROLE: label_value(spec.role), LABEL_ATTEMPT: str(spec.attempt)}


def job_annotations(spec: AlgorithmTaskSpec) -> dict[str, str]:
    return {ANNOTATION_FLOW: spec.flow_id, ANNOTATION_TASK: spec.task_id, ANNOTATION_ALGO_TASK: spec.algo_task_id,
            "ferry.io/party": spec.party, "ferry.io/role": spec.role, "ferry.io/step": spec.step,
            "ferry.io/algorithm": f"{spec.algorithm}@{spec.version}"}


def build_job_manifest(spec: AlgorithmTaskSpec, node: PartyNode, image: str,
                       settings: JobSettings = JobSettings()) -> dict[str, Any]:
    """The Job for one attempt of one algorithm task on its party's node. Pure."""
    state = node.checkpoints or Volume({"emptyDir": {}}, DEFAULT_STATE_MOUNT)  # gone with the Pod: see docs
    contract = {"FERRY_TASK_SPEC": spec_to_text(spec),
                "FERRY_EXECUTOR__CHECKPOINT_DIR": f"{state.mount_path}/checkpoints",
                "FERRY_EXECUTOR__ARTIFACTS_DIR": f"{state.mount_path}/artifacts"}
    volumes = [{"name": "state", **copy.deepcopy(dict(state.source))}]
    mounts = [{"name": "state", "mountPath": state.mount_path}]
    if node.data is not None:
        contract["FERRY_EXECUTOR__DATA_DIR"] = node.data.mount_path
        volumes.insert(0, {"name": "data", **copy.deepcopy(dict(node.data.source))})
        mounts.insert(0, {"name": "data", "mountPath": node.data.mount_path, "readOnly": True})
    secret_env, secret_volumes, secret_mounts = _credential_volumes(spec.party, settings.credentials)
    contract |= secret_env
    volumes += secret_volumes
    mounts += secret_mounts
    env = [{"name": k, "value": v} for k, v in sorted(contract.items())]
    env += [{"name": k, "value": v} for k, v in sorted(settings.env) if k not in contract]
    container: dict[str, Any] = {
        "name": CONTAINER, "image": image, "imagePullPolicy": settings.image_pull_policy,
        "args": list(settings.args), "env": env, "volumeMounts": mounts,
        # Without a termination message, the log tail becomes one: the watcher reports it.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if node.resources:
        container["resources"] = copy.deepcopy({k: dict(v) for k, v in node.resources.items()})
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": settings.termination_grace_period_s,
        "automountServiceAccountToken": False,  # executors never call the Kubernetes API
        "enableServiceLinks": False,
        # fsGroup makes PVC checkpoint volumes writable for the image's non-root user;
        # OnRootMismatch skips the recursive chown of a large store on every start.
        "securityContext": {"runAsNonRoot": True, "runAsUser": EXECUTOR_UID, "runAsGroup": EXECUTOR_UID,
                            "fsGroup": EXECUTOR_UID, "fsGroupChangePolicy": "OnRootMismatch"},
        "containers": [container], "volumes": volumes,
    }
    if settings.host_network:
        pod["hostNetwork"] = True
    if node.node_selector:
        pod["nodeSelector"] = dict(node.node_selector)
    if node.node_affinity:
        pod["affinity"] = {"nodeAffinity": copy.deepcopy(dict(node.node_affinity))}
    if node.tolerations:
        pod["tolerations"] = copy.deepcopy([dict(t) for t in node.tolerations])
    if node.service_account:
        pod["serviceAccountName"] = node.service_account
    labels, notes = job_labels(spec), job_annotations(spec)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(spec), "namespace": node.namespace, "labels": labels, "annotations": notes},
        "spec": {
            "backoffLimit": 0, "completions": 1, "parallelism": 1,
            # Never two executors of one attempt: a replacement Pod waits until the old one is gone.
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": copy.deepcopy(_POD_FAILURE_POLICY),
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(notes)}, "spec": pod},
        },
    }


def _conditions(job: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or () if c.get("status") == "True"}


class JobConflict(FerryError):
    """A Job with this attempt's name exists but belongs to another task or attempt."""

    http_status = 409


class ResumeImpossible(FerryError):
    """The suspended attempt's Job failed while stopping; a new attempt continues from its checkpoint."""

    retriable = True


class KubeApi:
    """The few calls Ferry makes, with plain JSON dicts in and out and ApiError on failure."""

    def __init__(self, api_client: k8s.ApiClient | None = None):
        self._client = api_client  # None: configured on first use, in-cluster or from kubeconfig
        self._configuring = asyncio.Lock()  # the first calls come concurrently: one client for all

    async def _apis(self) -> tuple[k8s.BatchV1Api, k8s.CoreV1Api]:
        async with self._configuring:
            if self._client is None:
                configuration = k8s.Configuration()
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    k8s_config.load_incluster_config(client_configuration=configuration)
                else:
                    await k8s_config.load_kube_config(client_configuration=configuration)
                self._client = k8s.ApiClient(configuration)
        return k8s.BatchV1Api(self._client), k8s.CoreV1Api(self._client)

    async def _call(self, method: str, *args, **kwargs) -> dict:
        batch, core = await self._apis()
        api = core if method.endswith("_pod") else batch
        try:
            response = await getattr(api, method)(*args, _preload_content=False, **kwargs)
            body = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ApiError(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        data = _json_body(body)
        if response.status >= 400:
            raise _error(response.status, data)
        return data

    async def create_job(self, namespace: str, manifest: dict) -> dict:
        return await self._call("create_namespaced_job", namespace, manifest)

    async def read_job(self, namespace: str, name: str) -> dict:
        return await self._call("read_namespaced_job", name, namespace)

    async def patch_job(self, namespace: str, name: str, patch: dict) -> dict:
        return await self._call("patch_namespaced_job", name, namespace, patch,
                                _content_type="application/merge-patch+json")

    async def delete_job(self, namespace: str, name: str, propagation_policy: str = "Background") -> dict:
        return await self._call("delete_namespaced_job", name, namespace, propagation_policy=propagation_policy)

    async def list_objects(self, kind: str, namespace: str, selector: str) -> tuple[list[dict], str]:
        method = "list_namespaced_job" if kind == "jobs" else "list_namespaced_pod"
        data = await self._call(method, namespace, label_selector=selector)
        return list(data.get("items") or ()), (data.get("metadata") or {}).get("resourceVersion", "")

    async def watch_objects(self, kind: str, namespace: str, selector: str, resource_version: str,
                            timeout_s: int) -> AsyncIterator[dict]:
        batch, core = await self._apis()
        call = batch.list_namespaced_job if kind == "jobs" else core.list_namespaced_pod
        try:
            response = await call(namespace, label_selector=selector, watch=True, resource_version=resource_version,
                                  allow_watch_bookmarks=True, timeout_seconds=timeout_s, _preload_content=False,
                                  _request_timeout=(30, timeout_s + 30))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ApiError(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        try:
            if response.status >= 400:
                raise _error(response.status, _json_body(await response.read()))
            while True:
                try:
                    line = await response.content.readline()
                except (asyncio.TimeoutError, aiohttp.ClientError):
                    return  # silent past the server's own timeout, or cut off: watch again
                if not line.endswith(b"\n"):
                    return  # the end of the stream, or half an event from a broken connection
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    raise _error(int((event.get("object") or {}).get("code") or 500), event.get("object") or {})
                yield event
        finally:
            response.release()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _json_body(body: bytes) -> dict:
    try:
        data = json.loads(body) if body else {}
    except ValueError:  # a proxy's HTML error page, say
        return {"message": body[:300].decode(errors="replace")}
    return data if isinstance(data, dict) else {}


def _error(status: int, body: Mapping[str, Any]) -> ApiError:
    if status == 410:
        return Gone(str(body.get("message", "")))
    return ApiError(status, str(body.get("reason", "")), str(body.get("message", "")))


class KubernetesRunner:
    """The Runner port on Kubernetes. With `observe`, it also runs the watcher that reports on its Jobs."""

    name = "kubernetes"

    def __init__(self, api: KubeApi, registry: NodeRegistry, image: str, *, observe: ObservationSink | None = None,
                 clock: Clock | None = None, settings: JobSettings = JobSettings(), watch_timeout_s: int = 300):
        self._api, self._registry, self._image, self._settings = api, registry, image, settings
        self._observe, self._clock, self._watch_timeout_s = observe, clock or SystemClock(), watch_timeout_s
        self._stop = asyncio.Event()
        self._watching: asyncio.Task | None = None
        self.watcher: KubernetesWatcher | None = None
        self._log = structlog.get_logger(runner=self.name)

    async def start(self) -> None:
        """Start watching every registry namespace; call once at startup so Jobs of a previous run are seen."""
        if self._observe is None or self._watching is not None:
            return
        self.watcher = KubernetesWatcher(self._api, self._registry.namespaces, self._observe, self._clock,
                                         timeout_s=self._watch_timeout_s)
        self._watching = asyncio.create_task(self.watcher.run(self._stop), name="k8s-watch")

    def manifest(self, spec: AlgorithmTaskSpec) -> dict[str, Any]:
        return build_job_manifest(spec, self._registry.node_for(spec.party), self._image, self._settings)

    async def dispatch(self, spec: AlgorithmTaskSpec) -> str:
        await self.start()
        manifest = self.manifest(spec)  # an unknown party fails here, before any API call
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            await self._api.create_job(namespace, manifest)
            self._log.info("job.created", job=name, namespace=namespace, attempt=spec.attempt)
            return name
        except ApiError as exc:
            if exc.status != 409:
                raise
        # The name exists: a repeated dispatch of this attempt (a no-op), or a collision.
        try:
            existing = await self._api.read_job(namespace, name)
        except ApiError as exc:
            if exc.status != 404:
                raise
            await self._api.create_job(namespace, manifest)  # deleted in between: create it after all
            return name
        meta = existing.get("metadata") or {}
        labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
        if (labels.get(LABEL_ATTEMPT) == str(spec.attempt)
                and labels.get(LABEL_ALGO_TASK) == label_value(spec.algo_task_id)
                and notes.get(ANNOTATION_ALGO_TASK, spec.algo_task_id) == spec.algo_task_id):
            self._log.info("job.exists", job=name, namespace=namespace, attempt=spec.attempt)
            return name
        raise JobConflict(f"job {namespace}/{name} already exists for algorithm task "
                          f"{notes.get(ANNOTATION_ALGO_TASK) or labels.get(LABEL_ALGO_TASK)!r} attempt "
                          f"{labels.get(LABEL_ATTEMPT)!r}, not {spec.algo_task_id!r} attempt {spec.attempt}")

    async def suspend(self, spec: AlgorithmTaskSpec) -> None:
        await self.start()
        namespace, name = self._registry.node_for(spec.party).namespace, job_name(spec)
        try:
            await self._api.patch_job(namespace, name, {"spec": {"suspend": True}})
        except ApiError as exc:
            if exc.status != 404:
                raise
            self._log.info("job.suspend_missing", job=name, namespace=namespace)  # nothing runs: suspended

    async def resume(self, spec: AlgorithmTaskSpec) -> None:
        await self.start()
        namespace, name = self._registry.node_for(spec.party).namespace, job_name(spec)
        try:
            job = await self._api.patch_job(namespace, name, {"spec": {"suspend": False}})
        except ApiError as exc:
            if exc.status != 404:
                raise
            # The Job is gone (deleted by hand or by its TTL): start the attempt again,
            # as the local runner does; the executor continues from its checkpoint.
            await self.dispatch(spec)
            return
        failed = _conditions(job).get("Failed")
        if failed is not None:
            # E.g. the executor outlived terminationGracePeriodSeconds while suspending and was
            # killed: a finished Job never runs again, so let the monitor retry with a new attempt.
            raise ResumeImpossible(f"job {namespace}/{name} failed before it could resume "
                                   f"({failed.get('reason', '')}: {failed.get('message', '')}); "
                                   "a new attempt will continue from the checkpoint")

    async def cancel(self, spec: AlgorithmTaskSpec) -> None:
        await self.start()
        namespace, name = self._registry.node_for(spec.party).namespace, job_name(spec)
        try:
            # Background: the Job goes now, the garbage collector stops its Pods (SIGTERM).
            await self._api.delete_job(namespace, name, "Background")
        except ApiError as exc:
            if exc.status != 404:
                raise
            self._log.info("job.cancel_missing", job=name, namespace=namespace)

    async def close(self) -> None:
        self._stop.set()
        if self._watching is not None:
            await self._watching
        await self._api.close()
