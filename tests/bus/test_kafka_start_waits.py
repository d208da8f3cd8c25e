"""KafkaBus.start() waits out a broker that is down (restarting) for start_timeout_s, then says so."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from shared.bus.kafka import KafkaBus, KafkaSettings, KafkaTLS
from shared.errors import TransientError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_retries_a_broker_that_is_down_until_its_timeout_then_raises_transient():
    settings = KafkaSettings(bootstrap=f"127.0.0.1:{_closed_port()}", client_id="start-waits",
                             start_timeout_s=2.0, tls=KafkaTLS(insecure_plaintext=True))
    started = time.monotonic()
    with pytest.raises(TransientError, match="unavailable"):
        asyncio.run(KafkaBus(settings).start())
    waited = time.monotonic() - started
    assert 1.5 <= waited < 60, waited  # retried with backoff, not a single refused connect
