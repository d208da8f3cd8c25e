"""Confidential, authenticated transport on the real broker: mutual TLS and the federation's ACLs.

The session broker (tests/kafka_broker_fixture.py) has only TLS listeners, requires client
certificates from its CA, and enforces shared.kafka_acls with StandardAuthorizer.
"""
from __future__ import annotations

import ssl
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, TopicAuthorizationFailedError

from shared import topics
from shared.bus.kafka import KafkaBus, KafkaSettings, KafkaTLS, tls_from_environment
from shared.errors import ConfigurationError
from shared.pki import create_ca, issue


def _bus(bootstrap: str, role: str) -> KafkaBus:
    return KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id=f"tls-test-{role}",
                                  tls=tls_from_environment(role)))


async def _producer_starts(bootstrap: str, **security) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000,
                                connections_max_idle_ms=10000, **security)
    try:
        await producer.start()
        await producer.send_and_wait(topics.FLOWS.name, b"should never be stored", key=b"x")
    finally:
        await producer.stop()


async def test_client_without_a_certificate_from_the_ca_is_refused(kafka_bootstrap: str, kafka_tls_dir: Path,
                                                                    tmp_path: Path) -> None:
    admin = _bus(kafka_bootstrap, "admin")
    await admin.start()
    try:
        await admin.ensure_topics([topics.FLOWS])
        before = len(await admin.read_all(topics.FLOWS.name))
    finally:
        await admin.stop()

    ca_only = ssl.create_default_context(cafile=str(kafka_tls_dir / "ca.crt"))  # encrypted, but anonymous
    with pytest.raises(KafkaConnectionError):
        await _producer_starts(kafka_bootstrap, security_protocol="SSL", ssl_context=ca_only)
    with pytest.raises(KafkaConnectionError):  # plaintext client on the TLS port
        await _producer_starts(kafka_bootstrap)
    # A well-formed certificate, right names, wrong CA: what an outsider can make for themselves.
    rogue = tmp_path / "rogue"
    create_ca(rogue, "Not the federation")
    issue(rogue, "admin", "admin")
    forged = ssl.create_default_context(cafile=str(kafka_tls_dir / "ca.crt"))
    forged.load_cert_chain(str(rogue / "admin.crt"), str(rogue / "admin.key"))
    with pytest.raises(KafkaConnectionError):
        await _producer_starts(kafka_bootstrap, security_protocol="SSL", ssl_context=forged)

    admin = _bus(kafka_bootstrap, "admin")
    await admin.start()
    try:
        assert len(await admin.read_all(topics.FLOWS.name)) == before  # nothing got in
    finally:
        await admin.stop()


async def _read(bootstrap: str, topic: str, role: str) -> list[bytes]:
    """Every value on ``topic`` visible to ``role`` within a few seconds. An unauthorized topic
    either raises or shows no partitions to fetch from (aiokafka logs the refusal)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **tls_from_environment(role).client_kwargs())
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(topics.BY_NAME[topic].partitions)])
        got: list[bytes] = []
        for _ in range(6):
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except TopicAuthorizationFailedError:
                return got
            got += [m.value for msgs in batches.values() for m in msgs]
        return got
    finally:
        await consumer.stop()


async def test_party_may_only_touch_round_traffic(kafka_bootstrap: str) -> None:
    admin = _bus(kafka_bootstrap, "admin")
    await admin.start()
    try:
        await admin.ensure_topics(topics.CATALOGUE)
        await admin.send(topics.FLOWS.name, b"secret-flow", b"a flow document only the splitter may read")
        await admin.send(topics.PROGRESS.name, b"t", b"round 1 done")
    finally:
        await admin.stop()

    party = _bus(kafka_bootstrap, "party")
    await party.start()
    try:
        task = uuid.uuid4().hex.encode()
        await party.send(topics.ROUNDS.name, task, b"an update")          # allowed
        await party.send(topics.PROGRESS.name, task, b"round 2 done")     # allowed
        with pytest.raises(TopicAuthorizationFailedError):                # forging a plan
            await party.send(topics.TASKS_PLANNED.name, task, b"forged plan")
        with pytest.raises(TopicAuthorizationFailedError):                # forging a command
            await party.send(topics.COMMANDS.name, task, b"cancel everything")
    finally:
        await party.stop()
    secret = b"a flow document only the splitter may read"
    assert secret in await _read(kafka_bootstrap, topics.FLOWS.name, "admin")     # it is there...
    assert await _read(kafka_bootstrap, topics.FLOWS.name, "party") == []         # ...but not for a party
    assert b"round 1 done" in await _read(kafka_bootstrap, topics.PROGRESS.name, "monitor")
    assert await _read(kafka_bootstrap, topics.PROGRESS.name, "party") == []      # other parties' progress
    assert b"an update" in await _read(kafka_bootstrap, topics.ROUNDS.name, "party")  # allowed

    # A certificate from the federation's CA whose role has no ACLs gets nothing at all.
    with pytest.raises(ConfigurationError, match="refused this client's identity"):
        await _bus(kafka_bootstrap, "guest").start()  # not even an idempotent producer id
    assert await _read(kafka_bootstrap, topics.ROUNDS.name, "guest") == []


async def test_service_consumes_only_in_its_own_group(kafka_bootstrap: str) -> None:
    splitter = _bus(kafka_bootstrap, "splitter")
    own = splitter.consumer([topics.FLOWS.name], group_id="ferry-splitter", client_id="splitter")
    await own.start()
    try:
        await own.poll(1.0)  # joins its group: allowed
    finally:
        await own.stop()
    impostor = splitter.consumer([topics.FLOWS.name], group_id="ferry-monitor", client_id="impostor")
    await impostor.start()
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await impostor.poll(3.0)
    finally:
        await impostor.stop()


async def test_missing_tls_settings_are_a_configuration_error_naming_the_variable() -> None:
    bus = KafkaBus(KafkaSettings(bootstrap="127.0.0.1:1", tls=KafkaTLS(ca_file="/nonexistent/ca.crt")))
    with pytest.raises(ConfigurationError, match="FERRY_KAFKA__TLS_CERT_FILE"):
        await bus.start()
    bus = KafkaBus(KafkaSettings(bootstrap="127.0.0.1:1", tls=KafkaTLS(
        ca_file="/nonexistent/ca.crt", cert_file="/nonexistent/a.crt", key_file="/nonexistent/a.key")))
    with pytest.raises(ConfigurationError, match="tls_ca_file: /nonexistent/ca.crt"):
        await bus.start()


async def test_insecure_plaintext_is_explicit_and_loud(kafka_bootstrap: str) -> None:
    tls = replace(tls_from_environment(), insecure_plaintext=True)
    bus = KafkaBus(KafkaSettings(bootstrap=kafka_bootstrap, client_id="plain", tls=tls))
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(Exception):  # and the TLS-only broker will not talk plaintext
            await bus.start()
    warning = [e for e in logs if e["event"] == "kafka.INSECURE_PLAINTEXT"]
    assert warning and warning[0]["log_level"] == "warning"
    assert "Development only" in warning[0]["danger"]
