"""The Kubernetes read side: the label contract, Job/Pod -> Observation, and the list+watch loop.

The watcher turns what Kubernetes says about Ferry's Jobs and Pods into
Observations for the monitor. It never decides anything: the monitor's fold
does, fencing stale attempts by the `ferry.io/attempt` label. It talks to the
API through a small `KubeSource` (plain dicts in and out), implemented with
kubernetes_asyncio in kubernetes.py, so this module is testable without it.

Who speaks for what: a Pod says PENDING (with why) and RUNNING; the Job alone
says SUCCEEDED, FAILED and SUSPENDED, because a failed Pod is not a failed
attempt (its podFailurePolicy may ignore it and start a replacement), and
DELETED comes from the Job's deletion.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Mapping, Protocol

import structlog

from services.scheduler.core.exits import classify_exit
from services.scheduler.ports import ObservationSink
from shared.clock import Clock
from shared.errors import FerryError
from shared.events import Observation, Phase

# The label contract between build_job_manifest (writes) and this module (reads).
# Labels hold sanitized values for selection; annotations hold the exact ids.
LABEL_FLOW = "ferry.io/flow"
LABEL_TASK = "ferry.io/task"
LABEL_ALGO_TASK = "ferry.io/algo-task"
LABEL_PARTY = "ferry.io/party"
LABEL_ROLE = "ferry.io/role"
LABEL_ATTEMPT = "ferry.io/attempt"
ANNOTATION_FLOW = "ferry.io/flow-id"
ANNOTATION_TASK = "ferry.io/task-id"
ANNOTATION_ALGO_TASK = "ferry.io/algo-task-id"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")  # set on Pods by the Job controller
CONTAINER = "executor"
SOURCE = "kubernetes"
_EXIT_IN_MESSAGE = re.compile(r"exit code (\d+)")


class ApiError(FerryError):
    """A Kubernetes API answer other than success; `status` 0 means no answer at all."""

    def __init__(self, status: int, reason: str = "", message: str = ""):
        self.status, self.reason = status, reason
        # Overload and outages pass; a forbidden or invalid request stays so.
        self.retriable = status == 0 or status == 429 or status >= 500
        super().__init__(f"kubernetes API {status or 'unreachable'} {reason}: {message}".strip())


class Gone(ApiError):
    """410: the resourceVersion is older than the API server's history; list again."""

    def __init__(self, message: str = "resource version too old"):
        super().__init__(410, "Expired", message)


class KubeSource(Protocol):
    async def list_objects(self, kind: str, namespace: str, selector: str) -> tuple[list[dict], str]:
        """(items, the list's resourceVersion); kind is "jobs" or "pods"."""

    def watch_objects(self, kind: str, namespace: str, selector: str, resource_version: str,
                      timeout_s: int) -> AsyncIterator[dict]:
        """Watch events {"type", "object"} after resource_version; raises Gone when it is too old."""


@dataclass(frozen=True)
class PodExit:
    """How the executor container of a failed Pod ended."""

    exit_code: int
    reason: str = ""
    message: str = ""
    disrupted: bool = False


# ---- pure: Kubernetes objects (JSON dicts as the API returns them) -> facts ----

def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _identity(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    meta = _meta(obj)
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    try:
        attempt = int(labels[LABEL_ATTEMPT])
    except (KeyError, ValueError):
        return None  # not a Ferry object, or one from a tool that broke the contract
    ids = {"algo_task_id": notes.get(ANNOTATION_ALGO_TASK) or labels.get(LABEL_ALGO_TASK, ""),
           "task_id": notes.get(ANNOTATION_TASK) or labels.get(LABEL_TASK, ""),
           "flow_id": notes.get(ANNOTATION_FLOW) or labels.get(LABEL_FLOW, "")}
    if not ids["algo_task_id"]:
        return None
    return {**ids, "attempt": attempt, "object_name": meta.get("name", ""), "source": SOURCE}


def _true_conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in status.get("conditions") or () if c.get("status") == "True"}


def pod_exit(pod: Mapping[str, Any]) -> PodExit | None:
    """The executor's exit, if this Pod has failed."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return None
    disrupted = "DisruptionTarget" in _true_conditions(status) or status.get("reason") == "Evicted"
    for container in status.get("containerStatuses") or ():
        ended = (container.get("state") or {}).get("terminated")
        if container.get("name") == CONTAINER and ended:
            return PodExit(int(ended.get("exitCode", 0)), ended.get("reason", ""),
                           (ended.get("message") or "")[-2000:], disrupted)
    return PodExit(0, status.get("reason", ""), status.get("message", ""), disrupted)


def observation_from_pod(pod: Mapping[str, Any]) -> Observation | None:
    ident = _identity(pod)
    if ident is None or _meta(pod).get("deletionTimestamp"):
        return None  # a stopping Pod says nothing new; its Job's conditions will
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase == "Running":
        return Observation(phase=Phase.RUNNING, **ident)
    if phase == "Pending":
        reason, message = _pending_reason(status)
        return Observation(phase=Phase.PENDING, reason=reason, message=message, **ident)
    return None  # Succeeded/Failed: the Job decides whether that ends the attempt


def _pending_reason(status: Mapping[str, Any]) -> tuple[str, str]:
    # Why a Pod waits is what users ask first: unschedulable, pulling, a missing secret.
    for container in status.get("containerStatuses") or ():
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason", ""), waiting.get("message", "")
    for cond in status.get("conditions") or ():
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("reason", ""), cond.get("message", "")
    return "", ""


def observation_from_job(job: Mapping[str, Any], *, deleted: bool = False,
                         pod_exit: PodExit | None = None) -> Observation | None:
    """The Job's verdict, or None while it has none (Pods speak for a running Job).

    `pod_exit` is the last failed Pod's exit, used when the Failed condition does
    not carry the exit code (the Job and Pod watches are not ordered with each other).
    """
    ident = _identity(job)
    if ident is None:
        return None
    if deleted or _meta(job).get("deletionTimestamp"):
        return Observation(phase=Phase.DELETED, reason="JobDeleted", **ident)
    status = job.get("status") or {}
    conditions = _true_conditions(status)
    if "Complete" in conditions:
        return Observation(phase=Phase.SUCCEEDED, reason=conditions["Complete"].get("reason") or "Complete",
                           **ident)
    if "Failed" in conditions:
        return _failed(ident, conditions["Failed"], pod_exit)
    # Suspended is set when the controller starts deleting Pods; `terminating` (where the
    # cluster reports it) says the executor is still writing its checkpoint.
    if "Suspended" in conditions and not status.get("terminating"):
        return Observation(phase=Phase.SUSPENDED, reason=conditions["Suspended"].get("reason") or "JobSuspended",
                           **ident)
    return None


def _failed(ident: dict[str, Any], condition: Mapping[str, Any], last: PodExit | None) -> Observation:
    reason, message = condition.get("reason") or "Failed", condition.get("message") or ""
    found = _EXIT_IN_MESSAGE.search(message)
    code = int(found.group(1)) if found else (last.exit_code if last else 0)
    if last and last.message:
        message = f"{message}\n{last.message}" if message else last.message
    if code:
        retriable = classify_exit(code, "run").retriable  # 75 and signals yes; 2, 3 and bugs no
    else:
        # No exit code: the Pod failed around the executor (eviction, a lost node, kubelet
        # admission), which a new attempt may well survive; a deadline would not pass.
        retriable = reason != "DeadlineExceeded"
    return Observation(phase=Phase.FAILED, exit_code=code, reason=reason, message=message[-2000:],
                       retriable=retriable, **ident)


def pod_job_name(pod: Mapping[str, Any]) -> str:
    labels = _meta(pod).get("labels") or {}
    return next((labels[key] for key in JOB_NAME_LABELS if labels.get(key)), "")


# ---- the list+watch loop ----

_Key = tuple[str, str, str]  # (kind, namespace, name)


class KubernetesWatcher:
    """Lists then watches Jobs and Pods labelled ferry.io/flow in each namespace; publishes Observations."""

    def __init__(self, source: KubeSource, namespaces: Iterable[str], sink: ObservationSink, clock: Clock, *,
                 selector: str = LABEL_FLOW, timeout_s: int = 300, initial_delay_s: float = 0.5,
                 max_delay_s: float = 30.0):
        self._source, self._sink, self._clock = source, sink, clock
        self._namespaces = tuple(sorted(set(namespaces)))
        self._selector, self._timeout_s = selector, timeout_s
        self._initial_delay_s, self._max_delay_s = initial_delay_s, max_delay_s
        self._last: dict[_Key, Observation | None] = {}    # dedupe: last fact per object
        self._jobs: dict[tuple[str, str], dict] = {}         # last seen Job, to report a deletion missed
        self._exits: dict[tuple[str, str], PodExit] = {}     # (namespace, job) -> last failed Pod's exit
        self.relists = 0
        self._log = structlog.get_logger(component="k8s-watch")

    async def run(self, stop: asyncio.Event) -> None:
        streams = [asyncio.create_task(self._stream(kind, ns), name=f"watch-{kind}-{ns}")
                   for ns in self._namespaces for kind in ("jobs", "pods")]
        try:
            await stop.wait()
        finally:
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)

    async def _stream(self, kind: str, namespace: str) -> None:
        delay, version = self._initial_delay_s, ""
        while True:
            try:
                if not version:
                    version = await self._relist(kind, namespace)
                version = await self._watch(kind, namespace, version)
                delay = self._initial_delay_s
            except Gone:
                self._log.info("watch.expired", kind=kind, namespace=namespace)
                version = ""  # history compacted past us: only a fresh list is complete
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # API down, sink failing: wait, then list again
                self._log.warning("watch.failed", kind=kind, namespace=namespace, error=str(exc), retry_in_s=delay)
                await self._clock.sleep(delay)
                delay, version = min(delay * 2, self._max_delay_s), ""

    async def _relist(self, kind: str, namespace: str) -> str:
        items, version = await self._source.list_objects(kind, namespace, self._selector)
        self.relists += 1
        present = set()
        for item in items:
            present.add(_meta(item).get("name", ""))
            await self._apply(kind, namespace, "ADDED", item)
        # What vanished while we were not watching: a Job's deletion is a fact to report.
        for key in [k for k in self._last if k[0] == kind and k[1] == namespace and k[2] not in present]:
            last_job = self._jobs.get((namespace, key[2]))
            if kind == "jobs" and last_job is not None:
                await self._apply(kind, namespace, "DELETED", last_job)
            else:
                self._last.pop(key, None)
        return version

    async def _watch(self, kind: str, namespace: str, version: str) -> str:
        events = self._source.watch_objects(kind, namespace, self._selector, version, self._timeout_s)
        async with aclosing(events):
            async for event in events:
                obj = event.get("object") or {}
                # Only ever handed back to the API, never compared: resourceVersions are opaque.
                version = _meta(obj).get("resourceVersion") or version
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    await self._apply(kind, namespace, event["type"], obj)
        return version  # the server ended the watch (timeout): continue from here

    async def _apply(self, kind: str, namespace: str, event_type: str, obj: dict) -> None:
        name = _meta(obj).get("name", "")
        key = (kind, namespace, name)
        if kind == "pods":
            if event_type == "DELETED":
                self._last.pop(key, None)
                return
            ended, job = pod_exit(obj), pod_job_name(obj)
            if ended is not None and job:
                self._exits[(namespace, job)] = ended
            await self._publish(key, observation_from_pod(obj))
            return
        if event_type == "DELETED":
            await self._publish(key, observation_from_job(obj, deleted=True))
            self._last.pop(key, None)
            self._jobs.pop((namespace, name), None)
            self._exits.pop((namespace, name), None)
            return
        self._jobs[(namespace, name)] = obj
        await self._publish(key, observation_from_job(obj, pod_exit=self._exits.get((namespace, name))))

    async def _publish(self, key: _Key, observation: Observation | None) -> None:
        if key in self._last and self._last[key] == observation:
            return  # MODIFIED events that change nothing Ferry cares about
        if observation is not None:
            await self._sink(dataclasses.replace(observation, observed_at_ms=self._clock.now_ms()))
        self._last[key] = observation  # after the sink: a failed publish is retried by the relist
