"""A fake Kubernetes API server for the scheduler's Kubernetes adapter tests (see server.py)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from tests.k8s_fake.server import FakeKube, merge_patch, selector_matches, status_body

__all__ = ["FakeKube", "api_client_for", "merge_patch", "running_fake", "selector_matches", "status_body"]


@asynccontextmanager
async def running_fake() -> AsyncIterator[FakeKube]:
    fake = FakeKube()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def api_client_for(fake: FakeKube):
    """A kubernetes_asyncio ApiClient that talks to the fake over plain HTTP, without credentials."""
    from kubernetes_asyncio import client

    configuration = client.Configuration(host=fake.url)
    return client.ApiClient(configuration)
