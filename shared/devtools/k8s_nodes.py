"""Objects a development cluster needs before Ferry can use it: kwok nodes per party, namespaces.

A kwok node is a Node object annotated kwok.x-k8s.io/node=fake: kwok marks it Ready, keeps
its lease and plays the kubelet for the Pods scheduled onto it (see k8s-stages.yaml). Each
party's node carries the label ferry.io/party=<party>, which the node registry selects on.
"""
from __future__ import annotations

import asyncio
from typing import Iterable

from shared.devtools.k8s_cluster import KWOK_NODE_ANNOTATION, ClusterState

PARTY_LABEL = "ferry.io/party"


def kwok_node_name(party: str) -> str:
    return f"kwok-{party}"


def kwok_node(party: str) -> dict:
    name = kwok_node_name(party)
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                         "labels": {PARTY_LABEL: party, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok"}},
            "spec": {}}


async def admin_client(state: ClusterState):
    """A kubernetes_asyncio ApiClient for the cluster's admin (close it when done)."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=state.kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


async def _create(call, *args) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        await call(*args)
    except ApiException as exc:
        if exc.status != 409:  # already there: these helpers are idempotent
            raise


async def ensure_namespaces(api_client, names: Iterable[str]) -> None:
    from kubernetes_asyncio import client

    core = client.CoreV1Api(api_client)
    await asyncio.gather(*(_create(core.create_namespace, {"metadata": {"name": n}}) for n in set(names)))


async def create_kwok_nodes(api_client, parties: Iterable[str], timeout_s: float = 60.0) -> list[str]:
    """Create one kwok node per party (idempotent) and wait until every one is Ready."""
    from kubernetes_asyncio import client

    core = client.CoreV1Api(api_client)
    parties = sorted(set(parties))
    for start in range(0, len(parties), 50):  # bounded concurrency: hundreds of parties in the bench
        await asyncio.gather(*(_create(core.create_node, kwok_node(p)) for p in parties[start:start + 50]))
    wanted = {kwok_node_name(p) for p in parties}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        nodes = await core.list_node(label_selector="type=kwok")
        ready = {n.metadata.name for n in nodes.items
                 if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or ())}
        if wanted <= ready:
            return sorted(wanted)
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"kwok nodes not Ready after {timeout_s}s: {sorted(wanted - ready)[:5]}")
        await asyncio.sleep(0.2)


def create_kwok_nodes_sync(state: ClusterState, parties: list[str]) -> list[str]:
    async def run() -> list[str]:
        api_client = await admin_client(state)
        try:
            return await create_kwok_nodes(api_client, parties)
        finally:
            await api_client.close()
    return asyncio.run(run())
