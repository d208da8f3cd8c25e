"""Settings, grouped and documented; read from the environment at entry points only.

Every field maps to an environment variable FERRY_<GROUP>__<FIELD>, for example
FERRY_KAFKA__BOOTSTRAP=127.0.0.1:9092 or FERRY_SCHEDULER__RUNNER=local.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bus.kafka import KafkaSettings
from shared.retry import BackoffPolicy


class BusSettings(BaseModel):
    kind: Literal["memory", "kafka"] = Field("kafka", description="memory: in-process (embedded mode only)")


class KafkaGroup(BaseModel):
    bootstrap: str = Field("127.0.0.1:9092", description="host:port list of brokers")
    max_request_bytes: int = Field(1_048_576, description="largest record; keep <= broker message.max.bytes")
    linger_ms: int = Field(5, description="producer batching delay")
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000

    def adapter_settings(self, client_id: str) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.bootstrap, client_id=client_id,
                             max_request_bytes=self.max_request_bytes, linger_ms=self.linger_ms,
                             session_timeout_ms=self.session_timeout_ms,
                             heartbeat_interval_ms=self.heartbeat_interval_ms)


class HttpGroup(BaseModel):
    host: str = Field("127.0.0.1", description="bind address of /healthz, /metrics and the API")
    port: int = Field(0, description="0: the service's default port (splitter 8081, scheduler 8082, "
                                     "monitor 8083); -1: no HTTP server")


class LogGroup(BaseModel):
    level: str = "INFO"
    json_output: bool = Field(True, description="JSON lines; false for human-readable console logs")


class RetryGroup(BaseModel):
    initial_s: float = 0.2
    multiplier: float = 2.0
    max_delay_s: float = 10.0
    max_attempts: int = 8

    def policy(self) -> BackoffPolicy:
        return BackoffPolicy(self.initial_s, self.multiplier, self.max_delay_s, self.max_attempts)


class SchedulerGroup(BaseModel):
    runner: Literal["local", "kubernetes", "inline"] = "local"
    node_registry: Path | None = Field(None, description="YAML file mapping parties to data nodes")
    work_dir: Path = Field(Path.home() / ".cache" / "ferry" / "work",
                           description="local runner: per-party data and checkpoint folders live here")
    zygote: bool = Field(False, description="local runner: fork executors from one interpreter that imported "
                                            "torch once (services/scheduler/adapters/zygote.py); off by "
                                            "default until executor discovery (/proc environ, pid files) "
                                            "knows about forked executors")
    namespace: str = Field("ferry", description="kubernetes runner: default namespace for Jobs")
    executor_image: str = Field("ferry:latest", description="kubernetes runner: executor image")


class MonitorGroup(BaseModel):
    max_attempts: int = Field(3, description="attempts per algorithm task before it fails for good")
    state_dir: Path = Field(Path.home() / ".cache" / "ferry" / "monitor",
                            description="local LMDB with snapshots and consumed offsets")


class ExecutorGroup(BaseModel):
    data_dir: Path | None = Field(None, description="the party's LMDB data store (a mounted volume on Kubernetes)")
    checkpoint_dir: Path = Field(Path.home() / ".cache" / "ferry" / "checkpoints",
                                 description="where this party keeps round checkpoints")
    artifacts_dir: Path = Field(Path.home() / ".cache" / "ferry" / "artifacts",
                                description="content-addressed models and large payloads")
    torch_threads: int = Field(1, ge=1, description="intra-op CPU threads per executor (torch, OpenMP, BLAS); "
                                                    "executors of one node share its cores, so 1 unless a job "
                                                    "has the node to itself (services/executor/threads.py)")


class FerrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FERRY_", env_nested_delimiter="__", extra="ignore")

    bus: BusSettings = BusSettings()
    kafka: KafkaGroup = KafkaGroup()
    http: HttpGroup = HttpGroup()
    log: LogGroup = LogGroup()
    retry: RetryGroup = RetryGroup()
    scheduler: SchedulerGroup = SchedulerGroup()
    monitor: MonitorGroup = MonitorGroup()
    executor: ExecutorGroup = ExecutorGroup()
    instance: str = Field("0", description="instance id within a service's consumer group")
