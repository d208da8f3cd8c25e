"""Session fixture ``kafka_bootstrap``: a real Kafka broker (mutual TLS + ACLs) for integration tests.

It yields the bootstrap string, and for the whole session exports the broker's TLS settings
into ``os.environ`` (FERRY_KAFKA__TLS_CA_FILE and FERRY_KAFKA__TLS_CERT_DIR), so every
``KafkaSettings()``/``KafkaBus``, ``FerrySettings()`` and child process built in a test
speaks TLS without being told: test code connects as ``admin`` (a super user), services
started with ``ferry <service>`` as their own role, executors as ``party`` -- each held to
the federation's ACLs exactly as in production. ``kafka_tls_dir`` gives the certificate
folder (``<role>.crt``/``.key``, ``ca.crt``) to tests that connect as someone else.

Use ``FERRY_KAFKA_BOOTSTRAP=host:port`` to point tests at an already running broker (e.g.
one from ``ferry kafka up``; then ``eval "$(ferry kafka env)"`` first, which sets the TLS
variables); otherwise one broker is started per test session in a temporary directory and
stopped at the end.

Register it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.kafka_broker_fixture"]``
or ``from tests.kafka_broker_fixture import kafka_bootstrap  # noqa: F401``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.devtools.kafka_broker import BrokerHandle, start_broker, stop_broker

# If this fixture ends up registered twice (plugin + direct import), pytest treats the two as
# separate session fixtures; sharing one refcounted broker keeps it to a single JVM.
_shared: dict[str, object] = {"handle": None, "users": 0, "saved_env": {}}
_EXPORTED = ("FERRY_KAFKA__TLS_CA_FILE", "FERRY_KAFKA__TLS_CERT_DIR")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("FERRY_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if _shared["handle"] is None:
        handle = start_broker(tmp_path_factory.mktemp("kafka"))
        env = handle.client_env()
        _shared["saved_env"] = {k: os.environ.get(k) for k in _EXPORTED}
        os.environ.update({k: env[k] for k in _EXPORTED})
        _shared["handle"] = handle
    handle: BrokerHandle = _shared["handle"]  # type: ignore[no-redef]
    _shared["users"] += 1  # type: ignore[operator]
    try:
        yield handle.bootstrap
    finally:
        _shared["users"] -= 1  # type: ignore[operator]
        if _shared["users"] == 0:
            _shared["handle"] = None
            for k, v in _shared["saved_env"].items():  # type: ignore[union-attr]
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            stop_broker(handle)


@pytest.fixture(scope="session")
def kafka_tls_dir(kafka_bootstrap: str) -> Path:
    """The session broker's CA and per-role certificates (``<role>.crt``/``.key``)."""
    return Path(os.environ["FERRY_KAFKA__TLS_CERT_DIR"])


async def create_catalogue_topics(bootstrap: str) -> None:
    """Create the topic catalogue as admin, as the services do at start in production.

    Executors connect as `party`, which may write its topics but not create them, so a test
    that starts executors without the services plays the operator first.
    """
    from shared import topics
    from shared.bus.kafka import KafkaBus, KafkaSettings, tls_from_environment

    admin = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="test-topics-admin",
                                  tls=tls_from_environment("admin")))
    await admin.start()
    try:
        await admin.ensure_topics(topics.CATALOGUE)
    finally:
        await admin.stop()
