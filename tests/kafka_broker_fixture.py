"""Session fixture ``kafka_bootstrap``: a real Kafka broker for integration tests.

Use ``FERRY_KAFKA_BOOTSTRAP=host:port`` to point tests at an already running broker
(e.g. one from ``python -m shared.devtools.kafka_broker up``); otherwise one broker is
started per test session in a temporary directory and stopped at the end.

Register it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.kafka_broker_fixture"]``
or ``from tests.kafka_broker_fixture import kafka_bootstrap  # noqa: F401``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from shared.devtools.kafka_broker import BrokerHandle, start_broker, stop_broker

# If this fixture ends up registered twice (plugin + direct import), pytest treats the two as
# separate session fixtures; sharing one refcounted broker keeps it to a single JVM.
_shared: dict[str, object] = {"handle": None, "users": 0}


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("FERRY_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if _shared["handle"] is None:
        _shared["handle"] = start_broker(tmp_path_factory.mktemp("kafka"))
    handle: BrokerHandle = _shared["handle"]  # type: ignore[assignment]
    _shared["users"] += 1  # type: ignore[operator]
    try:
        yield handle.bootstrap
    finally:
        _shared["users"] -= 1  # type: ignore[operator]
        if _shared["users"] == 0:
            _shared["handle"] = None
            stop_broker(handle)
