"""Run a real single-node Apache Kafka (KRaft) broker for development and tests.

No Docker and no Kafka tarball: the broker's jars are resolved from Maven Central
with ``mvn`` (the same set ``kafka-run-class.sh`` puts on the classpath) into a
cache outside the repository, then ``kafka.Kafka`` runs directly on ``java``.
Stdlib only, so it is importable before the project's dependencies are installed.

CLI: ``python -m shared.devtools.kafka_broker {fetch,up,down,status}``.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

# 4.4.0 is listed on Central but its kafka-tools-api jar is missing, so it does not resolve.
KAFKA_VERSION = "4.3.1"
# slf4j-simple matches the slf4j-api 1.7.x that kafka_2.13 depends on; it is one small jar
# with no config file, and its stderr output lands in the broker log file (see _launch).
_EXTRA_DEPS = (("org.slf4j", "slf4j-simple", "1.7.36"),)
_DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_MARKER = ".ferry-complete"
_DEFAULT_UP_DIR = Path.home() / ".cache" / "ferry" / "broker"
# Start-up dominates test wall time and the broker is idle most of the time, so trade peak
# throughput for start-up: C1 only and the serial GC (no GC worker threads on 2 cores).
_JVM_FLAGS = ("-Xms256m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
              "-XX:-UsePerfData", "-Djava.awt.headless=true")
# Config dumps (hundreds of lines per client/server config) drown the useful lines.
_LOG_FLAGS = ("-Dorg.slf4j.simpleLogger.showDateTime=true",
              "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
              "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config=warn")

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.ferry</groupId><artifactId>kafka-broker-libs</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>{deps}
  </dependencies>
</project>
"""


class BrokerError(RuntimeError):
    """Fetching, formatting, starting or stopping the broker failed."""


@dataclass(frozen=True)
class BrokerHandle:
    bootstrap: str
    port: int
    controller_port: int
    data_dir: Path
    pid: int
    log_path: Path


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("FERRY_KAFKA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ferry" / "kafka"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def ensure_artifacts(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Return ``<cache>/<version>/libs`` holding the broker's runtime classpath."""
    base = _cache_root(cache_dir) / version
    libs = base / "libs"
    if (libs / _MARKER).is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Apache Maven ('mvn') is not on PATH; it is needed once to fetch "
                          f"the Kafka {version} jars into {libs}")
    base.mkdir(parents=True, exist_ok=True)
    import fcntl  # POSIX-only; imported here so the module still imports elsewhere

    # Parallel test workers may all arrive here on a cold cache: one fetches, the rest wait.
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / _MARKER).is_file():
            return libs
        deps = [("org.apache.kafka", "kafka_2.13", version), *_EXTRA_DEPS]
        (base / "pom.xml").write_text(_POM.format(deps="".join(
            f"\n    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
            f"<version>{v}</version></dependency>" for g, a, v in deps)))
        # Copy into a scratch dir and rename, so an interrupted fetch never looks complete.
        tmp = base / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(base / "pom.xml"), f"{_DEP_PLUGIN}:copy-dependencies",
               f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
        try:
            res = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"mvn timed out fetching Kafka {version}") from exc
        if res.returncode != 0 or not any(tmp.glob(f"kafka_2.13-{version}.jar")):
            raise BrokerError(f"mvn failed (exit {res.returncode}) fetching Kafka {version}: "
                              f"{' '.join(cmd)}\n{_tail(res.stdout + res.stderr)}")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        (libs / _MARKER).write_text(version + "\n")
    return libs


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # Java sets SO_REUSEADDR on server sockets, so TIME_WAIT leftovers do not block it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    # Hold all sockets open together so the kernel cannot hand out the same port twice.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cluster_id() -> str:
    while True:  # Kafka's own Uuid.randomUuid() rejects ids starting with '-' (CLI-unsafe).
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _properties(port: int, cport: int, logs: Path) -> str:
    props = {
        "process.roles": "broker,controller", "node.id": 1,
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": logs, "num.partitions": 3, "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": 1, "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1, "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1, "group.initial.rebalance.delay.ms": 0,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _java(libs: Path, *args: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("'java' (17+) is not on PATH; Kafka 4.x needs it")
    extra = os.environ.get("FERRY_KAFKA_JVM_OPTS", "").split()
    return [java, *_JVM_FLAGS, *_LOG_FLAGS, *extra, "-cp", f"{libs}/*", *args]


def _request(sock: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    client = b"ferry-probe"
    hdr = struct.pack(">hhih", api_key, version, 1, len(client)) + client
    sock.sendall(struct.pack(">i", len(hdr) + len(body)) + hdr + body)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf[8:]  # skip size and correlation id


def _probe(port: int) -> bool:
    """True once the broker answers ApiVersions and lists itself as an unfenced broker.

    A TCP connect alone is not enough: KRaft binds the listener early but only serves
    requests (and only reports itself in Metadata) once it has caught up and is unfenced.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(2)
            if struct.unpack(">h", _request(s, 18, 0, b"")[:2])[0] != 0:  # ApiVersions v0
                return False
            # Metadata v4 (oldest left in 4.x): no topics, no auto-create; count brokers.
            resp = _request(s, 3, 4, struct.pack(">ib", 0, 0))
            return struct.unpack(">i", resp[4:8])[0] >= 1
    except (OSError, struct.error):
        return False


def _read_tail(path: Path, lines: int = 60) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return "(no log)"


def start_broker(data_dir: Path, port: int | None = None, *, startup_timeout_s: float = 90.0,
                 detach: bool = False) -> BrokerHandle:
    """Format (if needed) and start a broker+controller; return once it serves requests.

    Storage in ``data_dir`` is reused when it was formatted for the same version and ports
    (so ``up`` after ``down`` keeps topics); otherwise it is wiped and formatted afresh,
    because ``--standalone`` bakes the controller endpoint into the metadata log.
    ``detach`` puts the JVM in its own session so it outlives the calling process.
    """
    libs = ensure_artifacts()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs, fmt_file = data_dir / "kafka-logs", data_dir / "format.json"
    props, log_path = data_dir / "server.properties", data_dir / "broker.log"
    prev = json.loads(fmt_file.read_text()) if fmt_file.is_file() else {}
    if (prev.get("version") == KAFKA_VERSION and (logs / "meta.properties").is_file()
            and port in (None, prev["port"])
            and _port_free(prev["port"]) and _port_free(prev["controller_port"])):
        port, cport, fresh = prev["port"], prev["controller_port"], False
    else:
        if port is not None and not _port_free(port):
            raise BrokerError(f"port {port} on 127.0.0.1 is already in use")
        ports = _free_ports(2)
        port, cport = (port, next(p for p in ports if p != port)) if port else ports
        fresh = True
    props.write_text(_properties(port, cport, logs))
    if fresh:
        shutil.rmtree(logs, ignore_errors=True)
        fmt_file.unlink(missing_ok=True)
        res = subprocess.run(_java(libs, "kafka.tools.StorageTool", "format", "--standalone",
                                   "-t", _cluster_id(), "-c", str(props)),
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise BrokerError(f"kafka storage format failed (exit {res.returncode}):\n"
                              f"{_tail(res.stdout + res.stderr)}")
        fmt_file.write_text(json.dumps(
            {"version": KAFKA_VERSION, "port": port, "controller_port": cport}))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(_java(libs, "kafka.Kafka", str(props)), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=data_dir,
                                start_new_session=detach)
    _CHILDREN[proc.pid] = proc
    handle = BrokerHandle(f"127.0.0.1:{port}", port, cport, data_dir, proc.pid, log_path)
    deadline = time.monotonic() + startup_timeout_s
    while True:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            raise BrokerError(f"Kafka broker exited with code {proc.returncode} during start-up"
                              f"; log {log_path}:\n{_read_tail(log_path)}")
        if _probe(port):
            return handle
        if time.monotonic() > deadline:
            stop_broker(handle, timeout_s=5)
            raise BrokerError(f"Kafka broker not ready after {startup_timeout_s:.0f}s; "
                              f"log {log_path}:\n{_read_tail(log_path)}")
        time.sleep(0.1)


# Popen objects of brokers started by this process, so stop_broker can reap them (a
# terminated but unreaped child is a zombie and would still look alive to kill(pid, 0)).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _alive(pid: int) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # A zombie nobody reaps (e.g. PID 1 in a container does not) is dead for our purposes.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """Guard against PID reuse before signalling a pid read from a state file."""
    if not Path("/proc/self").exists():  # no procfs (macOS): trust the pid
        return _alive(pid)
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kafka.Kafka" in cmd and str(data_dir).encode() in cmd


def stop_broker(handle: BrokerHandle, timeout_s: float = 20.0) -> None:
    """SIGTERM (Kafka shuts down cleanly on it), then SIGKILL after ``timeout_s``."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        if not _alive(handle.pid):
            break
        try:
            os.kill(handle.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while _alive(handle.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        if _alive(handle.pid):
            raise BrokerError(f"Kafka broker pid {handle.pid} survived SIGKILL")
    _CHILDREN.pop(handle.pid, None)


def _load_state(state_file: Path) -> BrokerHandle | None:
    try:
        raw = json.loads(state_file.read_text())
        h = BrokerHandle(**{**raw, "data_dir": Path(raw["data_dir"]),
                            "log_path": Path(raw["log_path"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return h if _alive(h.pid) and _is_our_broker(h.pid, h.data_dir) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.devtools.kafka_broker",
                                 description="Local single-node Kafka broker for Ferry.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the broker jars (once)")
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, default=_DEFAULT_UP_DIR, help="broker data dir")
        if name == "up":
            p.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free)")
            p.add_argument("--timeout", type=float, default=90.0, help="start-up timeout, s")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(ensure_artifacts())
            return 0
        state_file = args.dir.expanduser().resolve() / "state.json"
        running = _load_state(state_file)
        if args.cmd == "status":
            print(f"running pid={running.pid} bootstrap={running.bootstrap}" if running
                  else "not running")
            return 0 if running else 1
        if args.cmd == "down":
            if running:
                stop_broker(running)
            state_file.unlink(missing_ok=True)
            print("stopped" if running else "not running")
            return 0
        if running:
            print(f"already running (pid {running.pid})", flush=True)
        else:
            running = start_broker(args.dir.expanduser(), args.port,
                                   startup_timeout_s=args.timeout, detach=True)
            state_file.write_text(json.dumps(asdict(running), default=str, indent=1))
        print(running.bootstrap)
        return 0
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
