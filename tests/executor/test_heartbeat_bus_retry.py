"""The heartbeat thread's bus is retried with backoff when it cannot start.

An executor started while the broker is briefly unreachable would otherwise never
beat, and the monitor would declare a healthy executor lost. Each failed attempt
is logged with the delay before the next; stopping the executor during a backoff
wait ends the thread at once; a policy that runs out, or an error that retrying
cannot help, gives up and says so.
"""

from __future__ import annotations

import os
import threading
import time

import structlog

from services.executor.liveness import HeartbeatThread
from shared import topics
from shared.bus.memory import InMemoryBus
from shared.clock import SystemClock
from shared.errors import ConfigurationError, TransientError
from shared.events import HEARTBEAT_STAGE, AlgorithmTaskSpec, Peer
from shared.retry import BackoffPolicy
from shared.wire import codec

EVERY_S = 0.1
SPEC = AlgorithmTaskSpec("t.a", "t", "f", "t", "test.blocking", "1", {}, "a", "worker", (Peer("a", "worker"),), "", 1)


class FlakyBuses:
    """Makes buses whose start() fails until `failures` attempts have failed; all share one log."""

    def __init__(self, failures: int, error: Exception = TransientError("kafka at broker:9093 unavailable")):
        self.log, self.failures, self.error = InMemoryBus(), failures, error
        self.attempts = 0
        self.stopped = 0
        self._lock = threading.Lock()

    def __call__(self) -> "FlakyBuses._Bus":
        return FlakyBuses._Bus(self)

    def beats(self) -> list[int]:
        envelopes = [codec.decode(r.value) for r in self.log.records(topics.PROGRESS.name)]
        return [e.timestamp_ms for e in envelopes if e.event.stage == HEARTBEAT_STAGE]

    class _Bus:
        def __init__(self, maker: "FlakyBuses"):
            self._maker = maker

        async def start(self) -> None:
            with self._maker._lock:
                self._maker.attempts += 1
                if self._maker.attempts <= self._maker.failures:
                    raise self._maker.error

        async def stop(self) -> None:
            self._maker.stopped += 1

        def __getattr__(self, name):  # sends go to the shared log
            return getattr(self._maker.log, name)


def _thread(buses: FlakyBuses, retry: BackoffPolicy, lease=None) -> HeartbeatThread:
    return HeartbeatThread(buses, SPEC, EVERY_S, SystemClock(), lease, bus_retry=retry, bus_start_timeout_s=5.0)


def _wait_for(condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s  # generous: the machine is shared
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


def test_a_bus_that_fails_then_starts_gets_the_beats_out():
    buses = FlakyBuses(failures=3)
    thread = _thread(buses, BackoffPolicy(initial_s=0.05, multiplier=2.0, max_delay_s=0.15, max_attempts=10))
    with structlog.testing.capture_logs() as logs:
        thread.start()
        try:
            assert _wait_for(lambda: len(buses.beats()) >= 3), buses.attempts
        finally:
            thread.stop()
    assert buses.attempts == 4  # three failures, then the start that took
    failed = _events(logs, "executor.heartbeat_bus_unavailable")
    assert [(e["attempt"], e["retry_in_s"]) for e in failed] == [(1, 0.05), (2, 0.1), (3, 0.15)]
    assert all(e["log_level"] == "warning" and "unavailable" in e["error"] for e in failed)
    assert not _events(logs, "executor.heartbeat_bus_gave_up")
    assert not thread._thread.is_alive()


def test_stopping_during_a_backoff_wait_returns_at_once():
    buses = FlakyBuses(failures=10**6)
    thread = _thread(buses, BackoffPolicy(initial_s=60.0, max_attempts=5))
    thread.start()
    assert _wait_for(lambda: buses.attempts == 1 and buses.stopped == 1)  # failed; now waiting 60 s
    started = time.monotonic()
    thread.stop(timeout_s=30.0)
    assert time.monotonic() - started < 5.0  # ~ms when idle; the wait was 60 s
    assert not thread._thread.is_alive()
    assert buses.attempts == 1 and buses.beats() == []


def test_the_lease_is_touched_while_the_bus_is_retried(tmp_path):
    # The executor lives: a restarted scheduler must not take it for a hung one meanwhile.
    lease = tmp_path / "lease"
    lease.write_text("")
    os.utime(lease, (0, 0))
    buses = FlakyBuses(failures=10**6)
    thread = _thread(buses, BackoffPolicy(initial_s=60.0, max_attempts=5), lease)
    thread.start()
    try:
        assert _wait_for(lambda: lease.stat().st_mtime > 0)
    finally:
        thread.stop()
    assert buses.attempts == 1 and buses.beats() == []


def test_a_policy_that_runs_out_gives_up_and_says_so():
    buses = FlakyBuses(failures=10**6)
    thread = _thread(buses, BackoffPolicy(initial_s=0.01, max_delay_s=0.01, max_attempts=3))
    with structlog.testing.capture_logs() as logs:
        thread.start()
        assert _wait_for(lambda: _events(logs, "executor.heartbeat_bus_gave_up"))
        thread.stop()
    assert buses.attempts == 3 and buses.stopped == 3
    assert len(_events(logs, "executor.heartbeat_bus_unavailable")) == 2
    (gave_up,) = _events(logs, "executor.heartbeat_bus_gave_up")
    assert gave_up["attempts"] == 3 and gave_up["log_level"] == "error"


def test_an_error_retrying_cannot_help_is_not_retried():
    # A refused identity (no ACL for role party) stays refused: give up at once, loudly.
    buses = FlakyBuses(failures=10**6, error=ConfigurationError("kafka refused this client's identity"))
    thread = _thread(buses, BackoffPolicy(initial_s=0.01, max_attempts=10))
    with structlog.testing.capture_logs() as logs:
        thread.start()
        assert _wait_for(lambda: _events(logs, "executor.heartbeat_bus_gave_up"))
        thread.stop()
    assert buses.attempts == 1
    assert "ConfigurationError" in _events(logs, "executor.heartbeat_bus_gave_up")[0]["error"]


def test_the_policy_comes_from_settings_and_one_variable_keeps_the_others_defaults(monkeypatch):
    from services.executor.liveness import HEARTBEAT_BUS_RETRY
    from services.executor.main import heartbeat_options
    from shared.settings import FerrySettings

    assert heartbeat_options(FerrySettings())["heartbeat_bus_retry"] == HEARTBEAT_BUS_RETRY
    monkeypatch.setenv("FERRY_EXECUTOR__HEARTBEAT_BUS_RETRY__MAX_ATTEMPTS", "4")
    monkeypatch.setenv("FERRY_EXECUTOR__HEARTBEAT_BUS_START_TIMEOUT_S", "7")
    options = heartbeat_options(FerrySettings())
    assert options["heartbeat_bus_retry"] == BackoffPolicy(HEARTBEAT_BUS_RETRY.initial_s, HEARTBEAT_BUS_RETRY.multiplier,
                                                           HEARTBEAT_BUS_RETRY.max_delay_s, 4)
    assert options["heartbeat_bus_start_timeout_s"] == 7.0
