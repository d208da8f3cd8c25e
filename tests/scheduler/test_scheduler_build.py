"""The scheduler's entry point picks the runner the settings name, with clear errors."""

from __future__ import annotations

import pytest

from services.scheduler.app import build
from shared.bus.memory import InMemoryBus
from shared.clock import ManualClock
from shared.errors import ConfigurationError
from shared.settings import FerrySettings


def test_kubernetes_runner_needs_a_node_registry(monkeypatch):
    monkeypatch.setenv("FERRY_SCHEDULER__RUNNER", "kubernetes")
    with pytest.raises(SystemExit, match="FERRY_SCHEDULER__NODE_REGISTRY"):
        build(FerrySettings(), InMemoryBus(), ManualClock())


def test_kubernetes_runner_is_built_from_the_registry(monkeypatch, tmp_path):
    registry = tmp_path / "nodes.yaml"
    registry.write_text("parties:\n  hospital-a:\n    node_selector: {ferry.io/party: hospital-a}\n"
                        "    data_volume: {hostPath: {path: /data/a}}\n")
    monkeypatch.setenv("FERRY_SCHEDULER__RUNNER", "kubernetes")
    monkeypatch.setenv("FERRY_SCHEDULER__NODE_REGISTRY", str(registry))
    service = build(FerrySettings(), InMemoryBus(), ManualClock())
    assert service.runner.name == "kubernetes"


def test_local_runner_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("FERRY_SCHEDULER__WORK_DIR", str(tmp_path))
    assert build(FerrySettings(), InMemoryBus(), ManualClock()).runner.name == "local"


def test_local_cpu_limits_are_read_from_the_environment_and_a_bad_one_stops_the_start(monkeypatch, tmp_path):
    monkeypatch.setenv("FERRY_SCHEDULER__WORK_DIR", str(tmp_path))
    monkeypatch.setenv("FERRY_SCHEDULER__LOCAL_CPU_LIMITS", '{"hospital-c": "two cores"}')
    with pytest.raises(ConfigurationError, match=r"FERRY_SCHEDULER__LOCAL_CPU_LIMITS\[hospital-c\].*'two cores'"):
        build(FerrySettings(), InMemoryBus(), ManualClock())
    monkeypatch.setenv("FERRY_SCHEDULER__LOCAL_CPU_LIMITS", '{"hospital-c": "100m", "hospital-a": 0.5}')
    assert FerrySettings().scheduler.local_cpu_limits == {"hospital-c": "100m", "hospital-a": 0.5}
    assert build(FerrySettings(), InMemoryBus(), ManualClock()).runner.name == "local"  # this machine has cgroups


def test_executor_pods_get_the_executor_settings_but_not_the_schedulers_own_or_its_host_paths():
    from services.scheduler.app import executor_pod_env

    env = executor_pod_env({"FERRY_EXECUTOR__HEARTBEAT_S": "2", "FERRY_EXECUTOR__HEARTBEAT_BUS_RETRY__MAX_ATTEMPTS": "5",
                            "FERRY_EXECUTOR__DATA_DIR": "/srv/scheduler-host", "FERRY_EXECUTOR__LEASE_FILE": "/x",
                            "FERRY_KAFKA__TLS_KEY_FILE": "/etc/ferry/scheduler.key", "FERRY_LOG__LEVEL": "DEBUG",
                            "FERRY_HTTP__PORT": "8082", "FERRY_SCHEDULER__RUNNER": "kubernetes"}, "kafka:9093")
    assert env == {"FERRY_EXECUTOR__HEARTBEAT_S": "2", "FERRY_EXECUTOR__HEARTBEAT_BUS_RETRY__MAX_ATTEMPTS": "5",
                   "FERRY_LOG__LEVEL": "DEBUG", "FERRY_KAFKA__BOOTSTRAP": "kafka:9093", "FERRY_BUS__KIND": "kafka"}
