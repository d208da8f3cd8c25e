"""The dashboard's vendored libraries match their pinned manifest; the change hub never blocks the fold."""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.monitor.core import MonitorState
from services.monitor.dashboard.hub import ChangeHub
from services.monitor.dashboard.routes import build_dashboard_router
from shared.devtools.vendor_js import MANIFEST, VENDOR_DIR, check, script_names


def test_vendored_files_match_the_manifest_with_versions_and_licences():
    assert check() == []
    manifest = json.loads(MANIFEST.read_text())
    for entry in manifest["packages"]:
        assert entry["licence"] == "MIT" and entry["integrity"].startswith("sha512-")
        assert (VENDOR_DIR / f"{entry['package']}-{entry['version']}.LICENSE").read_text().strip()


def test_the_page_loads_the_pinned_scripts_and_serves_only_its_own_files():
    client = TestClient(_app())
    page = client.get("/dashboard").text
    for name in script_names():
        assert f"/dashboard/static/vendor/{name}" in page
        assert client.get(f"/dashboard/static/vendor/{name}").status_code == 200
    assert client.get("/dashboard/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/static/../routes.py").status_code == 404
    assert client.get("/dashboard/static/vendor/../../routes.py").status_code == 404


def _app() -> FastAPI:
    app = FastAPI()
    app.include_router(build_dashboard_router(lambda: MonitorState(), ChangeHub()))
    return app


async def test_a_slow_subscriber_gets_one_coalesced_notice_and_close_ends_every_stream():
    hub = ChangeHub()
    sub = hub.subscribe()
    for i in range(1000):  # the fold publishes; nobody reads: nothing queues up
        hub.publish([f"f{i % 3}"], [f"t{i % 5}"])
    assert await sub.next(1) == ({"f0", "f1", "f2"}, {f"t{i}" for i in range(5)})
    assert await sub.next(0.01) is None and not sub.closed
    waiting = asyncio.ensure_future(sub.next(30))
    await asyncio.sleep(0)
    hub.close()
    assert await asyncio.wait_for(waiting, 1) is None and sub.closed
    assert hub.subscribe().closed and hub.subscribers == 0
