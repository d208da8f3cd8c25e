"""deploy/k8s applied for real: kustomize + server-side apply on a real API server, the
Deployments rolled out (on kwok nodes), and RBAC proven least-privilege with SubjectAccessReviews."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from shared.devtools.k8s_nodes import admin_client, create_kwok_nodes

ROOT = Path(__file__).resolve().parents[2]
SCHEDULER = "system:serviceaccount:ferry:ferry-scheduler"
EXECUTORS = ("system:serviceaccount:ferry-hospital-a:ferry-executor", "system:serviceaccount:ferry:ferry-executor")
OTHERS = ("system:serviceaccount:ferry:ferry-splitter", "system:serviceaccount:ferry:ferry-monitor")
GRANTED_NAMESPACES = ("ferry", "ferry-hospital-a")
JOB_VERBS = {"create", "get", "list", "watch", "patch", "delete"}
POD_VERBS = {"get", "list", "watch"}
ALL_VERBS = ("create", "get", "list", "watch", "patch", "update", "delete", "deletecollection")
# (group, resource, subresource) the scheduler must not touch, even in its namespaces.
FORBIDDEN = [("", "secrets", ""), ("", "configmaps", ""), ("", "pods", "exec"), ("", "pods", "log"),
             ("", "serviceaccounts", "token"), ("batch", "jobs", "status"), ("batch", "cronjobs", ""),
             ("apps", "deployments", ""), ("rbac.authorization.k8s.io", "rolebindings", ""),
             ("", "namespaces", ""), ("", "nodes", "")]


def kubectl(cluster, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin / "kubectl"), f"--kubeconfig={cluster.state.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=timeout, check=check, cwd=ROOT)


@pytest.fixture(scope="module")
def applied(k8s_cluster):
    done = kubectl(k8s_cluster, "apply", "--server-side", "--field-manager=ferry-deploy", "-k", "deploy/k8s")
    return done


def test_server_side_apply_accepts_every_object_without_warnings_and_is_idempotent(k8s_cluster, applied):
    assert "Warning" not in applied.stderr, applied.stderr
    rendered = kubectl(k8s_cluster, "kustomize", "deploy/k8s").stdout
    kinds = {line.split(":", 1)[1].strip() for line in rendered.splitlines() if line.startswith("kind:")}
    assert {"Namespace", "ConfigMap", "ServiceAccount", "ClusterRole", "RoleBinding", "Deployment",
            "Service"} <= kinds
    again = kubectl(k8s_cluster, "apply", "--server-side", "--field-manager=ferry-deploy", "-k", "deploy/k8s")
    assert "Warning" not in again.stderr
    # Nothing left to change: the live objects are exactly what the manifests say.
    diff = kubectl(k8s_cluster, "diff", "--server-side", "--field-manager=ferry-deploy", "-k", "deploy/k8s",
                   check=False)
    assert diff.returncode == 0, diff.stdout[-3000:] + diff.stderr[-2000:]


async def test_the_deployments_roll_out(k8s_admin, applied):
    await create_kwok_nodes(k8s_admin, ["platform"])
    apps = k8s.AppsV1Api(k8s_admin)
    names = {"ferry-splitter", "ferry-scheduler", "ferry-monitor"}
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        deployments = (await apps.list_namespaced_deployment("ferry")).items
        available = {d.metadata.name for d in deployments if (d.status.available_replicas or 0) >= 1}
        if names <= available:
            break
        assert asyncio.get_running_loop().time() < deadline, f"not available: {names - available}"
        await asyncio.sleep(0.5)
    pods = (await k8s.CoreV1Api(k8s_admin).list_namespaced_pod("ferry")).items
    scheduler = [p for p in pods if p.metadata.labels.get("app.kubernetes.io/name") == "ferry-scheduler"]
    assert scheduler and scheduler[0].spec.service_account_name == "ferry-scheduler"
    others = [p for p in pods if p.metadata.labels.get("app.kubernetes.io/name") in ("ferry-splitter", "ferry-monitor")]
    assert others and all(not any(v.projected for v in p.spec.volumes or ()) for p in others)  # no token mounted


async def _allowed(authz, user: str, verb: str, group: str, resource: str, namespace: str,
                   subresource: str = "") -> bool:
    review = await authz.create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                 "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                        "subresource": subresource, "namespace": namespace}}})
    return bool(review.status.allowed)


async def test_the_scheduler_may_run_jobs_and_read_pods_in_party_namespaces_and_nothing_else(k8s_admin, applied):
    authz = k8s.AuthorizationV1Api(k8s_admin)
    checks = []
    for ns, verb in itertools.product(GRANTED_NAMESPACES + ("default", "kube-system", "ferry-elsewhere"), ALL_VERBS):
        granted = ns in GRANTED_NAMESPACES
        checks.append((("batch", "jobs", "", ns, verb), granted and verb in JOB_VERBS))
        checks.append((("", "pods", "", ns, verb), granted and verb in POD_VERBS))
    for (group, resource, sub), ns, verb in itertools.product(FORBIDDEN, GRANTED_NAMESPACES, ("get", "create")):
        checks.append(((group, resource, sub, ns, verb), False))
    checks.append((("batch", "jobs", "", "", "list"), False))  # not across all namespaces
    answers = await asyncio.gather(*(_allowed(authz, SCHEDULER, verb, g, r, ns, sub)
                                     for (g, r, sub, ns, verb), _ in checks))
    wrong = [(attrs, expected) for (attrs, expected), got in zip(checks, answers) if got != expected]
    assert wrong == []


async def test_executors_splitter_and_monitor_have_no_api_rights(k8s_admin, applied):
    authz = k8s.AuthorizationV1Api(k8s_admin)
    resources = [("batch", "jobs"), ("", "pods"), ("", "secrets"), ("", "configmaps"), ("", "nodes"),
                 ("", "serviceaccounts")]
    checks = list(itertools.product(EXECUTORS + OTHERS, resources, GRANTED_NAMESPACES, ("get", "list", "create")))
    answers = await asyncio.gather(*(_allowed(authz, user, verb, g, r, ns)
                                     for user, (g, r), ns, verb in checks))
    assert [c for c, allowed in zip(checks, answers) if allowed] == []


async def test_the_schedulers_effective_rules_in_a_party_namespace_are_exactly_the_jobs_role(k8s_cluster,
                                                                                                applied):
    """A SelfSubjectRulesReview impersonating the scheduler: the complete rule list, not samples,
    is the Job role plus what every authenticated user may do (review itself)."""
    as_scheduler = await admin_client(k8s_cluster.state)
    as_scheduler.set_default_header("Impersonate-User", SCHEDULER)
    as_scheduler.set_default_header("Impersonate-Group", "system:serviceaccounts")
    try:
        review = await k8s.AuthorizationV1Api(as_scheduler).create_self_subject_rules_review(
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
             "spec": {"namespace": "ferry-hospital-a"}})
    finally:
        await as_scheduler.close()
    rules = {(tuple(r.api_groups or ()), tuple(r.resources or ()), tuple(sorted(r.verbs)))
             for r in review.status.resource_rules}
    extra = {r for r in rules if r[1] not in {("jobs",), ("pods",)}}
    assert all(set(resources) <= {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}
               for _, resources, _ in extra), extra
    assert (("batch",), ("jobs",), tuple(sorted(JOB_VERBS))) in rules
    assert (("",), ("pods",), tuple(sorted(POD_VERBS))) in rules
