"""A small fake Kubernetes API server: batch/v1 Jobs and v1 Pods over the real REST + watch protocol.

It stores objects, numbers every write with a global resourceVersion, keeps the
event history for watches, and answers with Status objects the way the API
server does. There is no controller: tests play the Job controller and the
kubelet through the hook methods (create_pod, set_pod_phase, complete_job, ...).

Why it stays next to the real control plane (tests/k8s_cluster_fixture.py): it injects
failures a real cluster cannot produce on demand or in milliseconds -- a 410 sent as an
HTTP status or as a watch ERROR event, a watch that drops mid-stream, a bookmark followed
by compaction at an exact resourceVersion, a Job deleted between a 409 and the read, a
failing sink -- so the runner's and watcher's edge cases run in the fast unit suite. What
Kubernetes itself does (validation, defaulting, the Job controller, suspend, podFailurePolicy,
garbage collection, RBAC) is tested against the real one in
tests/scheduler/test_kubernetes_real_cluster.py and tests/deploy/test_deploy_real_cluster.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

_KINDS = {"jobs": ("batch/v1", "Job"), "pods": ("v1", "Pod")}
_PATHS = {"jobs": "/apis/batch/v1/namespaces/{ns}/jobs", "pods": "/api/v1/namespaces/{ns}/pods"}


def status_body(code: int, reason: str, message: str, **details) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 400 else "Success",
            "message": message, "reason": reason, "details": details, "code": code}


def merge_patch(target, patch):
    """RFC 7386; for the fields Ferry patches, a strategic merge patch does the same."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def selector_matches(selector: str, labels: dict) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass(eq=False)
class _Watch:
    resource: str
    namespace: str
    selector: str
    bookmarks: bool
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.history: list[tuple[int, str, str, str, dict]] = []  # (rv, resource, namespace, type, object)
        self.oldest_rv = 0  # watches from an older resourceVersion get 410 Gone
        self.gone_as_http = False  # 410 as the HTTP answer instead of an ERROR event
        self.lists: Counter = Counter()  # (resource, namespace) -> list requests
        self.patches: list[tuple[str, str, str, dict]] = []  # (namespace, name, content type, body)
        self.deletions: list[tuple[str, str, str, str]] = []  # (resource, namespace, name, propagation)
        self.watch_requests: list[dict] = []
        self._rv = 0
        self._watches: set[_Watch] = set()
        self._gate = asyncio.Event()
        self._gate.set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- lifecycle ----
    async def start(self) -> str:
        app = web.Application()
        for resource, path in _PATHS.items():
            base = path.replace("{ns}", "{namespace}")
            app.router.add_route("*", base, self._collection(resource))
            app.router.add_route("*", base + "/{name}", self._item(resource))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        self._gate.set()
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- storage ----
    def _write(self, resource: str, namespace: str, obj: dict, event_type: str) -> dict:
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (resource, namespace, obj["metadata"]["name"])
        if event_type == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.history.append((self._rv, resource, namespace, event_type, obj))
        for watch in list(self._watches):
            if self._visible(watch, resource, namespace, obj):
                watch.queue.put_nowait({"type": event_type, "object": copy.deepcopy(obj)})
        return copy.deepcopy(obj)

    @staticmethod
    def _visible(watch: _Watch, resource: str, namespace: str, obj: dict) -> bool:
        return (watch.resource == resource and watch.namespace == namespace
                and selector_matches(watch.selector, obj["metadata"].get("labels") or {}))

    def _get(self, resource: str, namespace: str, name: str) -> dict:
        return self.objects[(resource, namespace, name)]

    # ---- HTTP ----
    def _collection(self, resource: str):
        async def handle(request: web.Request) -> web.StreamResponse:
            namespace = request.match_info["namespace"]
            if request.method == "POST":
                return await self._create(resource, namespace, await request.json())
            if request.method != "GET":
                return _json(status_body(405, "MethodNotAllowed", request.method), 405)
            if request.query.get("watch") in ("1", "true", "True"):
                return await self._watch(request, resource, namespace)
            self.lists[(resource, namespace)] += 1
            selector = request.query.get("labelSelector", "")
            items = [copy.deepcopy(o) for (r, ns, _), o in sorted(self.objects.items()) if r == resource
                     and ns == namespace and selector_matches(selector, o["metadata"].get("labels") or {})]
            api_version, kind = _KINDS[resource]
            return _json({"kind": kind + "List", "apiVersion": api_version,
                          "metadata": {"resourceVersion": str(self._rv)}, "items": items})
        return handle

    def _item(self, resource: str):
        async def handle(request: web.Request) -> web.Response:
            namespace, name = request.match_info["namespace"], request.match_info["name"]
            key = (resource, namespace, name)
            if key not in self.objects:
                missing = status_body(404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource)
                return _json(missing, 404)
            if request.method == "GET":
                return _json(self.objects[key])
            if request.method == "PATCH":
                content_type = request.headers.get("Content-Type", "")
                if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    return _json(status_body(415, "UnsupportedMediaType", content_type), 415)
                body = await request.json()
                self.patches.append((namespace, name, content_type, body))
                return _json(self._write(resource, namespace, merge_patch(self.objects[key], body), "MODIFIED"))
            if request.method == "DELETE":
                raw = await request.read()
                options = json.loads(raw) if raw else {}
                policy = request.query.get("propagationPolicy") or options.get("propagationPolicy") or ""
                self.deletions.append((resource, namespace, name, policy))
                # Without a policy, batch/v1 Jobs orphan their Pods: why callers must say Background.
                self._delete(resource, namespace, name, policy or ("Orphan" if resource == "jobs" else "Background"))
                return _json(status_body(200, "", "", name=name, kind=resource))
            return _json(status_body(405, "MethodNotAllowed", request.method), 405)
        return handle

    async def _create(self, resource: str, namespace: str, obj: dict) -> web.Response:
        name = obj["metadata"]["name"]
        if (resource, namespace, name) in self.objects:
            group = "batch" if resource == "jobs" else ""
            qualified = f"{resource}.{group}" if group else resource
            return _json(status_body(409, "AlreadyExists", f'{qualified} "{name}" already exists',
                                     name=name, group=group, kind=resource), 409)
        api_version, kind = _KINDS[resource]
        obj = merge_patch(obj, {"apiVersion": api_version, "kind": kind, "metadata": {
            "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
            "creationTimestamp": "2024-01-01T00:00:00Z"}})
        obj.setdefault("status", {})
        if resource == "jobs":
            obj["spec"].setdefault("suspend", False)
        return _json(self._write(resource, namespace, obj, "ADDED"), 201)

    def _delete(self, resource: str, namespace: str, name: str, policy: str) -> None:
        obj = copy.deepcopy(self._get(resource, namespace, name))
        obj["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:01Z"
        self._write(resource, namespace, obj, "DELETED")
        if resource == "jobs" and policy != "Orphan":  # the garbage collector removes the Job's Pods
            for pod in [o for (r, ns, _), o in list(self.objects.items()) if r == "pods" and ns == namespace
                        and (o["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == name]:
                self._delete("pods", namespace, pod["metadata"]["name"], policy)

    async def _watch(self, request: web.Request, resource: str, namespace: str) -> web.StreamResponse:
        await self._gate.wait()
        query = request.query
        self.watch_requests.append(dict(query))
        since = query.get("resourceVersion", "")
        if since not in ("", "0") and int(since) < self.oldest_rv:
            gone = status_body(410, "Expired", f"too old resource version: {since} ({self.oldest_rv})")
            if self.gone_as_http:
                return _json(gone, 410)
            replay = [{"type": "ERROR", "object": gone}]
            watch = None
        else:
            watch = _Watch(resource, namespace, query.get("labelSelector", ""),
                           query.get("allowWatchBookmarks") in ("true", "1", "True"))
            self._watches.add(watch)  # registered before the replay is taken: nothing falls between
            if since in ("", "0"):
                replay = [{"type": "ADDED", "object": o} for (r, ns, _), o in sorted(self.objects.items())
                          if self._visible(watch, r, ns, o)]
            else:
                replay = [{"type": t, "object": o} for rv, r, ns, t, o in self.history
                          if rv > int(since) and self._visible(watch, r, ns, o)]
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            for event in replay:
                await response.write(json.dumps(event).encode() + b"\n")
            deadline = asyncio.get_running_loop().time() + float(query.get("timeoutSeconds", 1800))
            while watch is not None and asyncio.get_running_loop().time() < deadline:
                if request.transport is None or request.transport.is_closing():
                    break  # the client hung up; aiohttp does not cancel the handler for us
                try:
                    event = await asyncio.wait_for(watch.queue.get(), 0.05)
                except asyncio.TimeoutError:
                    continue
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self._watches.discard(watch)
        return response

    # ---- test hooks: the Job controller, the kubelet, the API server's history ----
    def job(self, namespace: str, name: str) -> dict:
        return copy.deepcopy(self._get("jobs", namespace, name))

    def pod(self, namespace: str, name: str) -> dict:
        return copy.deepcopy(self._get("pods", namespace, name))

    def put(self, resource: str, namespace: str, obj: dict) -> dict:
        """Create or replace an object directly (ADDED or MODIFIED), as another client would."""
        exists = (resource, namespace, obj["metadata"]["name"]) in self.objects
        obj = merge_patch(obj, {"metadata": {"namespace": namespace}})
        return self._write(resource, namespace, obj, "MODIFIED" if exists else "ADDED")

    def update_status(self, resource: str, namespace: str, name: str, status: dict) -> dict:
        obj = self._get(resource, namespace, name)
        return self._write(resource, namespace, merge_patch(obj, {"status": status}), "MODIFIED")

    def create_pod(self, namespace: str, job: str, suffix: str = "x1") -> str:
        template = self._get("jobs", namespace, job)["spec"]["template"]
        name = f"{job}-{suffix}"
        labels = {**template["metadata"].get("labels", {}), "batch.kubernetes.io/job-name": job, "job-name": job}
        self._write("pods", namespace, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": str(uuid.uuid4()),
                         "annotations": dict(template["metadata"].get("annotations", {})),
                         "ownerReferences": [{"kind": "Job", "name": job, "controller": True}]},
            "spec": copy.deepcopy(template["spec"]), "status": {"phase": "Pending"}}, "ADDED")
        return name

    def set_pod_phase(self, namespace: str, pod: str, phase: str, *, exit_code: int | None = None,
                      reason: str = "", message: str = "", conditions: tuple[dict, ...] = ()) -> dict:
        state: dict = {"running": {"startedAt": "2024-01-01T00:00:02Z"}} if phase == "Running" else {}
        if exit_code is not None:
            state = {"terminated": {"exitCode": exit_code, "reason": reason or "Error", "message": message}}
        status = {"phase": phase, "conditions": list(conditions),
                  "containerStatuses": [{"name": "executor", "state": state}] if state else []}
        return self.update_status("pods", namespace, pod, status)

    def complete_job(self, namespace: str, name: str) -> dict:
        return self.update_status("jobs", namespace, name, {"active": 0, "succeeded": 1, "conditions": [
            {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]})

    def fail_job(self, namespace: str, name: str, *, reason: str = "PodFailurePolicy", message: str = "") -> dict:
        return self.update_status("jobs", namespace, name, {"active": 0, "failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": reason, "message": message},
            {"type": "Failed", "status": "True", "reason": reason, "message": message}]})

    def set_suspended(self, namespace: str, name: str, suspended: bool = True, terminating: int = 0) -> dict:
        condition = {"type": "Suspended", "status": "True" if suspended else "False",
                     "reason": "JobSuspended" if suspended else "JobResumed"}
        return self.update_status("jobs", namespace, name, {"active": 0, "terminating": terminating,
                                                             "conditions": [condition]})

    def bump(self, writes: int = 1) -> None:
        """Writes elsewhere in the cluster: the global resourceVersion moves, our watches see nothing."""
        self._rv += writes

    def bookmark(self) -> None:
        for watch in self._watches:
            if watch.bookmarks:
                api_version, kind = _KINDS[watch.resource]
                watch.queue.put_nowait({"type": "BOOKMARK", "object": {
                    "kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(self._rv)}}})

    def compact(self) -> None:
        """Forget the history: a watch from any earlier resourceVersion gets 410 Gone."""
        self.history.clear()
        self.oldest_rv = self._rv

    def drop_watches(self) -> None:
        """End every open watch stream, as the server's timeout or a restart would."""
        for watch in list(self._watches):
            watch.queue.put_nowait(None)

    def hold_watches(self) -> None:
        self._gate.clear()

    def release_watches(self) -> None:
        self._gate.set()

    @property
    def open_watches(self) -> int:
        return len(self._watches)


def _json(body: dict, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)
