"""Settings, grouped and documented; read from the environment at entry points only.

Every field maps to an environment variable FERRY_<GROUP>__<FIELD>, for example
FERRY_KAFKA__BOOTSTRAP=127.0.0.1:9092 or FERRY_SCHEDULER__RUNNER=local.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bus.kafka import KafkaSettings, KafkaTLS
from shared.retry import BackoffPolicy


class BusSettings(BaseModel):
    kind: Literal["memory", "kafka"] = Field("kafka", description="memory: in-process (embedded mode only)")


class KafkaGroup(BaseModel):
    bootstrap: str = Field("127.0.0.1:9092", description="host:port list of brokers")
    max_request_bytes: int = Field(1_048_576, description="largest record; keep <= broker message.max.bytes")
    linger_ms: int = Field(5, description="producer batching delay")
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    tls_ca_file: Path | None = Field(None, description="PEM file of the federation CA that signed the broker")
    tls_cert_file: Path | None = Field(None, description="this process's client certificate (PEM), issued by that CA")
    tls_key_file: Path | None = Field(None, description="private key (PKCS#8 PEM) of tls_cert_file")
    tls_cert_dir: Path | None = Field(
        None, description="development: a folder with one <role>.crt/.key per role (`ferry kafka up` "
                          "writes one); used when tls_cert_file is unset: a service takes its own "
                          "name's pair, an executor 'party', any other client 'admin'")
    tls_check_hostname: bool = Field(True, description="check that the broker's certificate names the host dialled")
    insecure_plaintext: bool = Field(False, description="DEVELOPMENT ONLY: talk to Kafka without TLS or "
                                                        "authentication (logs a warning on every start)")

    def tls(self, role: str | None = None) -> KafkaTLS:
        cert, key = self.tls_cert_file, self.tls_key_file
        if cert is None and self.tls_cert_dir is not None:
            cert, key = (self.tls_cert_dir / f"{role or 'admin'}.{ext}" for ext in ("crt", "key"))
        ca = self.tls_ca_file or (self.tls_cert_dir / "ca.crt" if self.tls_cert_dir else None)
        return KafkaTLS(ca_file=str(ca) if ca else None, cert_file=str(cert) if cert else None,
                        key_file=str(key) if key else None, check_hostname=self.tls_check_hostname,
                        insecure_plaintext=self.insecure_plaintext)

    def adapter_settings(self, client_id: str, role: str | None = None) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.bootstrap, client_id=client_id,
                             max_request_bytes=self.max_request_bytes, linger_ms=self.linger_ms,
                             session_timeout_ms=self.session_timeout_ms,
                             heartbeat_interval_ms=self.heartbeat_interval_ms, tls=self.tls(role))


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


class HeartbeatBusRetryGroup(RetryGroup):
    """The executor's heartbeat bus retries for longer than a service's handler: a broker
    restart can take a minute, and each Kafka attempt itself waits up to 60 s."""

    initial_s: float = 1.0
    max_delay_s: float = 30.0
    max_attempts: int = 30


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
    executor_identity_secret: str = Field(
        "ferry-identity-{party}", description="kubernetes runner: the Secret in each party's namespace holding "
                                              "identity.key, the party's Ed25519 key ('{party}' becomes its name)")
    executor_key_registry: str = Field(
        "ferry-keys", description="kubernetes runner: the ConfigMap in each party's namespace holding "
                                  "keys.yaml, the federation's pinned public keys (`ferry keys registry "
                                  "--configmap`)")
    executor_kafka_tls_secret: str = Field(
        "ferry-kafka-party", description="kubernetes runner: the Secret in each party's namespace holding "
                                         "ca.crt, tls.crt and tls.key of a Kafka certificate of role party")
    executor_host_network: bool = Field(
        False, description="DEVELOPMENT ONLY: kubernetes runner: executor Pods share their node's network "
                           "(hostNetwork), for a dev cluster whose broker listens on the node's 127.0.0.1; "
                           "Pods lose their network isolation, so the scheduler warns at start")
    adopt_poll_s: float = Field(0.5, description="local runner: how often the liveness of an executor "
                                                 "adopted from an earlier scheduler is checked")
    max_running_per_party: int = Field(0, description="executors running at once for one party (0: no limit); "
                                                      "further ones wait QUEUED in the scheduler")
    max_running_per_node: int = Field(0, description="executors running at once on one data node, all "
                                                     "parties together (0: no limit)")
    local_cpu_limits: dict[str, str | float] = Field(
        default_factory=dict, description="local runner: party -> CPU limit as a Kubernetes quantity ('250m', "
                                          "'0.5'), what resources.limits.cpu in the node registry sets on "
                                          "Kubernetes; enforced with a cgroup CPU quota per executor, and the "
                                          "scheduler refuses to start where cgroups cannot enforce it "
                                          "(services/scheduler/adapters/cpu_limits.py)")


class MonitorGroup(BaseModel):
    max_attempts: int = Field(3, description="attempts per algorithm task before it fails for good")
    state_dir: Path = Field(Path.home() / ".cache" / "ferry" / "monitor",
                            description="local LMDB with snapshots and consumed offsets")
    executor_lost_after_s: float = Field(
        60.0, description="a RUNNING executor not heard from (heartbeat, progress, observation) for this long "
                          "is declared lost and retried; keep well above the executors' heartbeat_s")
    executor_startup_grace_s: float = Field(
        120.0, description="extra time before an executor that has not yet sent its first heartbeat is declared "
                           "lost (it may be importing torch on a loaded node)")


class ExecutorGroup(BaseModel):
    data_dir: Path | None = Field(None, description="the party's LMDB data store (a mounted volume on Kubernetes)")
    checkpoint_dir: Path = Field(Path.home() / ".cache" / "ferry" / "checkpoints",
                                 description="where this party keeps round checkpoints")
    artifacts_dir: Path = Field(Path.home() / ".cache" / "ferry" / "artifacts",
                                description="content-addressed models and large payloads")
    heartbeat_s: float = Field(5.0, description="seconds between the executor's heartbeats on ferry.progress")
    heartbeat_max_blocked_s: float = Field(
        900.0, gt=0, description="the heartbeat thread beats through synchronous work (a long import or training "
                                 "step) but stops once the executor's event loop has not turned for this long, so "
                                 "that a hung executor is declared lost and retried")
    heartbeat_bus_retry: HeartbeatBusRetryGroup = Field(
        default_factory=HeartbeatBusRetryGroup,
        description="backoff between attempts to start the heartbeat thread's own bus (FERRY_EXECUTOR__"
                    "HEARTBEAT_BUS_RETRY__INITIAL_S, ...): a broker unreachable as the executor starts must not "
                    "silence its heartbeats for good; after max_attempts it gives up (logged), and the monitor "
                    "judges the executor by its other reports")
    heartbeat_bus_start_timeout_s: float = Field(
        90.0, gt=0, description="one attempt to start the heartbeat bus ends after this long (the Kafka adapter "
                                "itself waits up to 60 s for a broker that is down, then fails the attempt)")
    lease_file: Path | None = Field(None, description="local runner: the lease the executor touches on each "
                                                      "heartbeat and writes its exit code next to (set by the runner)")
    torch_threads: int = Field(1, ge=1, description="intra-op CPU threads per executor (torch, OpenMP, BLAS); "
                                                    "executors of one node share its cores, so 1 unless a job "
                                                    "has the node to itself (services/executor/threads.py)")
    kafka_linger_ms: int = Field(0, ge=0, description="the executor's producer batching delay (FERRY_KAFKA__"
                                                      "LINGER_MS is the services'): a round is a chain of "
                                                      "request and answer, so waiting to batch only adds latency")


class FederationGroup(BaseModel):
    """Party identities (docs/keys.md): pinned by default; `ferry keys` provisions them."""

    identity_key_file: Path | None = Field(None, description="this party's Ed25519 private key (PKCS#8 PEM); "
                                                             "'{party}' in the path becomes the party's name")
    key_registry: Path | None = Field(None, description="the federation's key registry (YAML: party -> public "
                                                        "key), next to the node registry")
    insecure_unpinned: bool = Field(False, description="DEVELOPMENT ONLY: without a registry, accept any "
                                                       "sender's key; every round logs a warning")
    max_incomplete_payloads: int = Field(8, description="chunked payloads a receiver keeps half-assembled per "
                                                        "sender; older ones are dropped")


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
    federation: FederationGroup = FederationGroup()
    instance: str = Field("0", description="instance id within a service's consumer group")


class _KafkaOnly(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FERRY_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaGroup = KafkaGroup()


def kafka_group_from_environment() -> KafkaGroup:
    """FERRY_KAFKA__* alone, for adapters built without settings (see shared.bus.kafka)."""
    return _KafkaOnly().kafka
