"""Session fixture ``k8s_cluster``: a real Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) with kwok nodes, started once per test session.
``k8s_real_node`` adds a real node to it (containerd + kubelet, shared.devtools.k8s_real_node)
running Ferry's image (built by shared.devtools.containers) for the tests of real pods.

The binaries come from ``~/.cache/ferry/k8s``; on a cold cache the fixture builds them first
(deploy/k8s-dev/build.sh, ~15-25 min on 2 cores) rather than skipping anything. Every
process is stopped by its PID at the end of the session. Tests share the cluster, so each
one works in namespaces of its own (``k8s_namespaces``) and on kwok nodes labelled per party.
"""
from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from shared.devtools.k8s_cluster import Cluster, ensure_binaries
from shared.devtools.k8s_real_node import RealNode
from shared.devtools.k8s_nodes import admin_client, ensure_namespaces


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    log = lambda message: print(f"[k8s] {message}", file=sys.stderr, flush=True)  # noqa: E731
    bin_dir = ensure_binaries(log)  # builds on a cold cache: never a skip
    cluster = Cluster(tmp_path_factory.mktemp("k8s"), bin_dir, log=log)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


REAL_NODE_PARTY = "realnode"  # the party whose node is real (label ferry.io/party)


@pytest.fixture(scope="session")
def k8s_real_node(k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A real node of party REAL_NODE_PARTY with Ferry's image (``ferry:latest``) imported.

    Cold, this builds the kubelet (~2 min with the control plane's Go build cache, more without)
    and copies Ferry's image into the node's containerd (once per image version); warm, it
    starts in seconds. The private dockerd is stopped again if this fixture started it.
    """
    from shared.devtools import containers

    log = lambda message: print(f"[k8s-real-node] {message}", file=sys.stderr, flush=True)  # noqa: E731
    dockerd_was_running = containers._ping()
    node = RealNode(k8s_cluster, REAL_NODE_PARTY, tmp_path_factory.mktemp("real-node"), log=log)
    try:
        containers.dockerd_up()
        node.start(images=(containers.build_ferry_image(),))  # the build is a no-op when nothing changed
    finally:
        if not dockerd_was_running:
            containers.dockerd_down()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
async def k8s_admin(k8s_cluster: Cluster) -> AsyncIterator[object]:
    """A kubernetes_asyncio ApiClient with admin rights, on this test's event loop."""
    api_client = await admin_client(k8s_cluster.state)
    try:
        yield api_client
    finally:
        await api_client.close()


@pytest.fixture
def k8s_prefix() -> str:
    """A short unique prefix for this test's namespaces and parties."""
    return f"t{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def k8s_namespaces(k8s_admin, k8s_prefix):
    """make(*names) creates this test's namespaces (prefixed) and returns their full names."""
    async def make(*names: str) -> list[str]:
        full = [f"{k8s_prefix}-{n}" for n in names]
        await ensure_namespaces(k8s_admin, full)
        return full
    return make
