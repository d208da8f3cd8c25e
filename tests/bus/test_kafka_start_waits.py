"""KafkaBus.start() waits out a broker that is down (restarting) for start_timeout_s, then says so."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import warnings

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



def test_a_start_cut_short_stops_the_client_it_was_starting():
    """A caller's timeout (the heartbeat thread's start timeout, a stop) must not leave the
    half-started producer behind unclosed: the 'broker' here accepts and never answers."""

    async def scenario() -> None:
        accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()
        server = await asyncio.start_server(lambda r, w: accepted.put_nowait(r), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = KafkaSettings(bootstrap=f"127.0.0.1:{port}", client_id="start-cut-short",
                                 start_timeout_s=60.0, tls=KafkaTLS(insecure_plaintext=True))
        start = asyncio.create_task(KafkaBus(settings).start())
        reader = await asyncio.wait_for(accepted.get(), 30)
        await asyncio.wait_for(reader.read(4), 30)  # its first request is on the wire
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        await asyncio.wait_for(reader.read(), 30)  # the client closed its end
        server.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(scenario())
        gc.collect()
    assert not [w for w in caught if "Unclosed AIOKafkaProducer" in str(w.message)]
