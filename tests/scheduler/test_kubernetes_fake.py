"""The fake API server speaks the protocol the stock kubernetes_asyncio client expects."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.k8s_fake import api_client_for, merge_patch, running_fake, selector_matches

NS = "default"


def job(name: str, **labels: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "executor", "image": "busybox"}]}}}}


@pytest.fixture
async def batch():
    async with running_fake() as fake:
        async with api_client_for(fake) as api_client:
            yield fake, client.BatchV1Api(api_client)


async def test_typed_reads_conflicts_and_not_found(batch):
    fake, api = batch
    created = await api.create_namespaced_job(NS, job("a", **{"ferry.io/flow": "f"}))
    assert isinstance(created, client.V1Job) and created.metadata.resource_version == "1"
    with pytest.raises(ApiException) as conflict:
        await api.create_namespaced_job(NS, job("a"))
    assert conflict.value.status == 409 and '"reason": "AlreadyExists"' in conflict.value.body
    with pytest.raises(ApiException) as missing:
        await api.read_namespaced_job("b", NS)
    assert missing.value.status == 404


async def test_lists_filter_by_label_and_carry_a_resource_version(batch):
    fake, api = batch
    await api.create_namespaced_job(NS, job("a", **{"ferry.io/flow": "f"}))
    await api.create_namespaced_job(NS, job("b"))
    listed = await api.list_namespaced_job(NS, label_selector="ferry.io/flow")
    assert [j.metadata.name for j in listed.items] == ["a"] and listed.metadata.resource_version == "2"
    assert (await api.list_namespaced_job(NS, label_selector="ferry.io/flow=g")).items == []


async def test_the_stock_watch_reads_events_and_bookmarks_and_raises_410(batch):
    fake, api = batch
    await api.create_namespaced_job(NS, job("a", **{"ferry.io/flow": "f"}))
    stream = watch.Watch()
    events = stream.stream(api.list_namespaced_job, NS, label_selector="ferry.io/flow", resource_version="0",
                           allow_watch_bookmarks=True, timeout_seconds=5)
    first = await events.__anext__()
    assert first["type"] == "ADDED" and isinstance(first["object"], client.V1Job)
    fake.bump(3)
    fake.bookmark()
    assert (await events.__anext__())["type"] == "BOOKMARK" and stream.resource_version == "4"
    await stream.close()
    fake.compact()
    fake.bump()
    old = watch.Watch()
    with pytest.raises(ApiException) as gone:
        async for _ in old.stream(api.list_namespaced_job, NS, resource_version="1", timeout_seconds=5):
            pass
    assert gone.value.status == 410


def test_merge_patch_and_selectors_follow_the_rules():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    labels = {"ferry.io/flow": "f", "ferry.io/attempt": "2"}
    assert selector_matches("ferry.io/flow,ferry.io/attempt=2", labels)
    assert not selector_matches("ferry.io/attempt!=2", labels)
    assert not selector_matches("!ferry.io/flow", labels)
    assert not selector_matches("ferry.io/task", labels)
