"""/healthz and /readyz of every service against a real broker that is stopped and started again.

The broker here is this module's own (shared.devtools.kafka_broker), not the
session's: stopping that one would break every other test.
"""

from __future__ import annotations

import time

import httpx
import pytest

from shared.devtools.kafka_broker import start_broker, stop_broker
from tests.e2e.platform import Platform

SERVICES = ("splitter", "monitor", "scheduler")


def _status(platform: Platform, name: str, path: str) -> int:
    try:
        return httpx.get(platform.services[name].url + path, timeout=2).status_code
    except httpx.HTTPError:
        return -1


def _wait_all(platform: Platform, path: str, code: int, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if all(_status(platform, n, path) == code for n in SERVICES):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{path} of {SERVICES} not all {code} after {timeout_s} s: "
                         f"{[(n, _status(platform, n, path)) for n in SERVICES]}\n{platform.logs(1500)}")


@pytest.fixture
def broker(tmp_path):
    handles = [start_broker(tmp_path / "kafka")]
    yield handles
    for handle in handles:
        stop_broker(handle)


def test_readiness_fails_within_seconds_of_losing_the_broker_and_recovers_by_itself(broker, tmp_path):
    platform = Platform(broker[0].bootstrap, tmp_path / "platform",
                        env=broker[0].client_env()).start(work_dir=tmp_path / "work")  # its own CA
    try:
        _wait_all(platform, "/readyz", 200, timeout_s=60)
        body = httpx.get(platform.services["monitor"].url + "/readyz", timeout=2).json()
        assert body["ok"] and set(body["checks"]) == {"broker", "consumer_assigned", "state_restored"}, body

        stop_broker(broker.pop())
        lost_after = _wait_all(platform, "/readyz", 503, timeout_s=15)
        assert lost_after < 10, lost_after
        body = httpx.get(platform.services["scheduler"].url + "/readyz", timeout=2).json()
        assert body["checks"]["broker"]["ok"] is False and body["checks"]["broker"]["detail"], body
        assert all(_status(platform, n, "/healthz") == 200 for n in SERVICES), "liveness must not follow the broker"

        broker.append(start_broker(tmp_path / "kafka"))  # same storage and port
        _wait_all(platform, "/readyz", 200, timeout_s=90)
    finally:
        codes = platform.stop()
    assert set(codes.values()) <= {0}, codes
