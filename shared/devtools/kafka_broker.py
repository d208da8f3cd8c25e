"""Run a real single-node Apache Kafka (KRaft) broker for development and tests.

No Docker and no Kafka tarball: the broker's jars are resolved from Maven Central with
``mvn`` (the same set ``kafka-run-class.sh`` puts on the classpath) into a cache outside
the repository, and ``kafka.Kafka`` runs directly on ``java`` (17+). Stdlib only, so it
works before the project's dependencies are installed.

Security: the only client listener is mutual TLS (certificates from ``shared.pki``, made once
per data dir under ``<dir>/pki`` unless one is given), the controller listener too, and the
StandardAuthorizer enforces the federation's ACLs (``shared.kafka_acls``) with ``admin`` and
``broker`` as super users. Generating certificates needs ``cryptography``; ``fetch`` does not.

CLI: ``python -m shared.devtools.kafka_broker {fetch,up,down,status,env}``.
Env: ``FERRY_KAFKA_CACHE`` (jar cache root), ``FERRY_KAFKA_JVM_OPTS`` (extra JVM flags),
``FERRY_KAFKA_CDS=0`` (disable the class-data-sharing archive, see ``_cds_flags``).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shlex
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

# Newest 4.x that resolves: 4.4.0 is listed on Central but its kafka-tools-api jar is absent.
KAFKA_VERSION = "4.3.1"
_DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_POM_TEMPLATE = Path(__file__).with_name("kafka-pom.xml")
_MARKER = ".ferry-complete"
_DEFAULT_UP_DIR = Path.home() / ".cache" / "ferry" / "broker"
# Serial GC: no GC worker threads on small machines. The JIT keeps its C2 tier: a broker limited
# to C1 (-XX:TieredStopAtLevel=1, once chosen here for ~1.5 s faster start-up) encrypts TLS
# without the AES-GCM intrinsics, and moved ~1 MB records at 15-17 MB/s where the full JIT
# moves 50-90 MB/s (40 x 1 MB: publish 2.7 -> 0.8 s, consume 2.4 -> 0.45 s): every model
# and update of a round crosses it twice.
_JVM_FLAGS = ("-Xms256m", "-Xmx1g", "-XX:+UseSerialGC",
              "-XX:-UsePerfData", "-Djava.awt.headless=true", "-Xlog:cds=off",
              "-Dorg.slf4j.simpleLogger.showDateTime=true",
              "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
              # Config dumps (hundreds of lines per config object) drown the useful lines.
              "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config=warn")


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
    pki_dir: Path

    def client_env(self, role: str | None = None) -> dict[str, str]:
        """FERRY_KAFKA__* settings for clients of this broker (see shared/settings.py). Without
        ``role``, the certificate folder: each process then presents its own role's pair
        (services their name, executors ``party``, anything else ``admin``)."""
        env = {"FERRY_KAFKA__BOOTSTRAP": self.bootstrap,
               "FERRY_KAFKA__TLS_CA_FILE": str(self.pki_dir / "ca.crt")}
        if role is None:
            return env | {"FERRY_KAFKA__TLS_CERT_DIR": str(self.pki_dir)}
        return env | {"FERRY_KAFKA__TLS_CERT_FILE": str(self.pki_dir / f"{role}.crt"),
                      "FERRY_KAFKA__TLS_KEY_FILE": str(self.pki_dir / f"{role}.key")}

    def ssl_context(self, role: str = "admin"):
        from shared.kafka_acls import client_context

        return client_context(str(self.pki_dir / "ca.crt"), str(self.pki_dir / f"{role}.crt"),
                              str(self.pki_dir / f"{role}.key"))


def _tail(text: str, lines: int = 40) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # mvn colours its output even with -B
    return "\n".join(text.splitlines()[-lines:])


def ensure_artifacts(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Return ``<root>/<version>/libs``, the broker's runtime classpath; root is ``cache_dir``,
    else ``$FERRY_KAFKA_CACHE``, else ``~/.cache/ferry/kafka``. Fetches with mvn once."""
    root = cache_dir or os.environ.get("FERRY_KAFKA_CACHE") or Path.home() / ".cache/ferry/kafka"
    base = Path(root).expanduser() / version
    libs = base / "libs"
    pom = _POM_TEMPLATE.read_text().replace("@KAFKA_VERSION@", version)
    # The marker holds the POM's hash so editing the template (e.g. a new dep) refetches.
    stamp = hashlib.sha256(pom.encode()).hexdigest()[:16]
    marker = libs / _MARKER
    if marker.is_file() and marker.read_text().strip() == stamp:
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"Apache Maven ('mvn') is not on PATH; it is needed once to fetch "
                          f"the Kafka {version} jars into {libs}")
    base.mkdir(parents=True, exist_ok=True)
    import fcntl  # POSIX-only, so imported late

    # Parallel test workers may all arrive on a cold cache: one fetches, the rest wait.
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == stamp:
            return libs
        (base / "pom.xml").write_text(pom)
        # Fetch into a scratch dir and rename, so an interrupted fetch never looks complete.
        tmp = base / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(base / "pom.xml"), f"{_DEP_PLUGIN}:copy-dependencies",
               f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
        try:
            res = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"mvn timed out fetching Kafka {version}: {' '.join(cmd)}") from exc
        if res.returncode != 0 or not (tmp / f"kafka_2.13-{version}.jar").is_file():
            raise BrokerError(f"mvn failed (exit {res.returncode}) fetching Kafka {version}: "
                              f"{' '.join(cmd)}\n{_tail(res.stdout + res.stderr)}")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker.write_text(stamp + "\n")
    return libs


def _cds_flags(libs: Path, data_dir: Path) -> list[str]:
    """AppCDS: the first broker run records the classes it loaded into an archive that later
    JVMs map instead of parsing jars (format+start ~3.1 s -> ~1.8 s on 2 cores). An archive
    fits one JVM build and jar set, hence the key; a JVM that rejects one silently loads
    normally. The dump is written at JVM exit to a temp name that _settle_cds publishes."""
    java = Path(shutil.which("java") or "java").resolve()
    if os.environ.get("FERRY_KAFKA_CDS") == "0" or not java.is_file():
        return []
    stamp = f"{java}:{java.stat().st_mtime_ns}:{libs}:{(libs / _MARKER).stat().st_mtime_ns}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    archive = libs.parent / f"kafka-{key}.jsa"
    if archive.is_file():
        return [f"-XX:SharedArchiveFile={archive}"]
    dump = archive.with_name(f"{archive.name}.{uuid.uuid4().hex[:8]}.tmp")
    (data_dir / "cds-pending").write_text(str(dump))
    return [f"-XX:ArchiveClassesAtExit={dump}"]


def _java(libs: Path, *args: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("'java' (17+) is not on PATH; Kafka 4.x needs it")
    user = os.environ.get("FERRY_KAFKA_JVM_OPTS", "").split()
    # Java expands the "dir/*" wildcard itself, which keeps the command line short.
    return [java, *_JVM_FLAGS, *extra, *user, "-cp", f"{libs}/*", *args]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # Java binds with SO_REUSEADDR, so TIME_WAIT leftovers do not block it; mimic that.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pair() -> tuple[int, int]:
    with socket.socket() as a, socket.socket() as b:  # both held open: two distinct ports
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


def _cluster_id() -> str:
    while True:  # Kafka's Uuid.randomUuid() also avoids a leading '-' (looks like a flag).
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _pem_value(path: Path) -> str:
    # java.util.Properties turns "\\n" back into a newline; Kafka parses inline PEM.
    return path.read_text().strip().replace("\n", "\\n")


def _properties(port: int, cport: int, logs: Path, pki: Path) -> str:
    from shared.pki import PRINCIPAL_MAPPING_RULES

    props = {
        "process.roles": "broker,controller", "node.id": 1,
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
        "listeners": f"SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"SSL://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SSL:SSL",
        # Mutual TLS everywhere, the controller listener included (a plaintext controller
        # port would let anyone on the host in as ANONYMOUS, which would have to be a super user).
        "ssl.client.auth": "required", "ssl.protocol": "TLSv1.3", "ssl.enabled.protocols": "TLSv1.3",
        "ssl.keystore.type": "PEM", "ssl.keystore.certificate.chain": _pem_value(pki / "broker.crt"),
        "ssl.keystore.key": _pem_value(pki / "broker.key"),
        "ssl.truststore.type": "PEM", "ssl.truststore.location": pki / "ca.crt",
        "ssl.principal.mapping.rules": PRINCIPAL_MAPPING_RULES,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:broker;User:admin", "allow.everyone.if.no.acl.found": "false",
        "log.dirs": logs, "num.partitions": 3, "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": 1, "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1, "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1, "group.initial.rebalance.delay.ms": 0,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _locked(path: Path) -> bool:
    # A running broker holds <log.dirs>/.lock; Java's FileLock is an fcntl lock on Linux.
    import fcntl

    try:
        with open(path, "r+") as f:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False


def _probe(port: int, ctx) -> bool:
    """True once the broker answers ApiVersions and lists itself in Metadata. A TCP connect
    is not enough: KRaft binds its listener early but serves requests, and reports itself
    live, only once caught up and unfenced -- when it logs "Kafka Server started"."""
    from shared.kafka_acls import request

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.settimeout(2)
                if struct.unpack(">h", request(s, 18, 0, b"")[:2])[0] != 0:  # ApiVersions v0
                    return False
                # Metadata v4 (the oldest 4.x still serves): no topics, no auto-create.
                resp = request(s, 3, 4, struct.pack(">ib", 0, 0))
                return struct.unpack(">i", resp[4:8])[0] >= 1  # after throttle_time_ms: #brokers
    except (OSError, struct.error):  # ssl.SSLError is an OSError
        return False


def start_broker(data_dir: Path, port: int | None = None, *, startup_timeout_s: float = 90.0,
                 detach: bool = False, pki_dir: Path | None = None) -> BrokerHandle:
    """Format (if needed) and start a broker+controller; return once it serves requests.

    Storage in ``data_dir`` is reused when it was formatted for the same version and ports
    (so ``up`` after ``down`` keeps topics); otherwise it is wiped and formatted afresh,
    because ``format --standalone`` bakes the controller endpoint into the metadata log.
    ``detach`` gives the JVM its own session so it outlives the caller and its Ctrl-C.
    ``pki_dir``: the CA and certificates (``shared.pki.dev_pki`` layout); default
    ``<data_dir>/pki``, created on first use. The federation's ACLs are applied once ready.
    """
    from shared.kafka_acls import apply_acls, federation_acls
    from shared.pki import dev_pki

    libs = ensure_artifacts()
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pki = dev_pki(Path(pki_dir).expanduser().resolve() if pki_dir else data_dir / "pki")
    logs, fmt_file = data_dir / "kafka-logs", data_dir / "format.json"
    props, log_path = data_dir / "server.properties", data_dir / "broker.log"
    prev = json.loads(fmt_file.read_text()) if fmt_file.is_file() else {}
    fresh = not (prev.get("version") == KAFKA_VERSION and (logs / "meta.properties").is_file()
                 and port in (None, prev["port"]) and _port_free(prev["port"])
                 and _port_free(prev["controller_port"]))
    if fresh and _locked(logs / ".lock"):
        raise BrokerError(f"{logs} is in use by a running broker; stop that one first")
    if not fresh:
        port, cport = prev["port"], prev["controller_port"]
    elif port is not None and not _port_free(port):
        # Checked up front: otherwise the probe could succeed against whatever holds it.
        raise BrokerError(f"port {port} on 127.0.0.1 is already in use")
    else:
        a, b = _free_port_pair()
        port, cport = (port, a if a != port else b) if port else (a, b)
    props.touch(mode=0o600)  # it holds the broker's private key
    props.write_text(_properties(port, cport, logs, pki))
    cds = _cds_flags(libs, data_dir)
    if fresh:
        shutil.rmtree(logs, ignore_errors=True)
        fmt_file.unlink(missing_ok=True)
        fmt_cds = [f for f in cds if "SharedArchiveFile" in f]  # only the broker records
        res = subprocess.run(_java(libs, "kafka.tools.StorageTool", "format", "--standalone",
                                   "-t", _cluster_id(), "-c", str(props), extra=fmt_cds),
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise BrokerError(f"Kafka storage format failed (exit {res.returncode}):\n"
                              f"{_tail(res.stdout + res.stderr)}")
        fmt_file.write_text(json.dumps({"version": KAFKA_VERSION, "port": port,
                                        "controller_port": cport}))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(_java(libs, "kafka.Kafka", str(props), extra=cds),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=data_dir, start_new_session=detach)
    _CHILDREN[proc.pid] = proc
    handle = BrokerHandle(f"127.0.0.1:{port}", port, cport, data_dir, proc.pid, log_path, pki)
    ctx = handle.ssl_context("admin")
    deadline = time.monotonic() + startup_timeout_s
    while not _probe(port, ctx):
        died = proc.poll() is not None
        if died or time.monotonic() > deadline:
            _terminate(proc.pid, 5.0)
            _settle_cds(data_dir, promote=False)
            why = (f"exited with code {proc.returncode} during start-up" if died
                   else f"was not ready after {startup_timeout_s:g}s")
            raise BrokerError(f"Kafka broker {why}; log {log_path}:\n"
                              f"{_tail(log_path.read_text(errors='replace'), 60)}")
        time.sleep(0.1)
    try:
        apply_acls("127.0.0.1", port, ctx, federation_acls())
    except (OSError, RuntimeError) as exc:
        _terminate(proc.pid, 5.0)
        raise BrokerError(f"could not apply the federation's ACLs: {exc}") from exc
    return handle


# Brokers started by this process, so stop_broker can reap them: an exited but unreaped
# child is a zombie and still passes kill(pid, 0).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _alive(pid: int) -> bool:
    if pid in _CHILDREN:
        return _CHILDREN[pid].poll() is None
    try:
        os.kill(pid, 0)
        # Zombies nobody reaps (a container's PID 1 often does not) count as dead.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except (OSError, IndexError):  # EPERM, or no procfs: the pid exists
        return True


def stop_broker(handle: BrokerHandle, timeout_s: float = 20.0) -> None:
    """SIGTERM (Kafka runs its clean controlled shutdown), SIGKILL after ``timeout_s``."""
    _settle_cds(handle.data_dir, promote=_terminate(handle.pid, timeout_s))


def _terminate(pid: int, timeout_s: float) -> bool:  # False if SIGKILL was needed
    killed = False
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        if not _alive(pid):
            break
        killed = sig == signal.SIGKILL
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if _alive(pid):
        raise BrokerError(f"Kafka broker pid {pid} survived SIGKILL")
    _CHILDREN.pop(pid, None)
    return not killed


def _settle_cds(data_dir: Path, promote: bool) -> None:
    """Publish a CDS dump after a clean exit; drop it after a kill or a failed start (a
    killed dump may be truncated; a failed start's dump misses most broker classes)."""
    pending = data_dir / "cds-pending"
    if pending.is_file():
        dump = Path(pending.read_text().strip())
        pending.unlink()
        if promote and dump.is_file() and dump.stat().st_size:
            final = dump.with_name(dump.name.rsplit(".", 2)[0])
            for stale in dump.parent.glob("kafka-*.jsa"):  # from an older JVM or jar set
                stale.unlink(missing_ok=True)
            os.replace(dump, final)
        else:
            dump.unlink(missing_ok=True)


def _load_state(state_file: Path) -> BrokerHandle | None:
    try:
        raw = json.loads(state_file.read_text())
        h = BrokerHandle(**{**raw, "data_dir": Path(raw["data_dir"]),
                            "log_path": Path(raw["log_path"]), "pki_dir": Path(raw["pki_dir"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    try:  # guard against PID reuse before trusting (and later signalling) a stored pid
        cmd = Path(f"/proc/{h.pid}/cmdline").read_bytes()
        ours = b"kafka.Kafka" in cmd and str(h.data_dir).encode() in cmd
    except OSError:
        ours = not Path("/proc/self").exists()  # no procfs (macOS): trust the pid
    return h if ours and _alive(h.pid) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.devtools.kafka_broker",
                                 description="Local single-node Kafka broker for Ferry.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the broker jars (once)")
    for name in ("up", "down", "status", "env"):
        p = sub.add_parser(name, help={"env": "print the FERRY_KAFKA__* settings (shell exports) "
                                              "a client of the running broker needs"}.get(name))
        p.add_argument("--dir", type=Path, default=_DEFAULT_UP_DIR, help="broker data dir")
        if name == "up":
            p.add_argument("--port", type=int, default=None, help="TLS port (default free)")
            p.add_argument("--timeout", type=float, default=90.0, help="start-up timeout (s)")
            p.add_argument("--pki-dir", type=Path, default=None,
                           help="CA and certificates (default <dir>/pki, generated on first use)")
        if name == "env":
            p.add_argument("--role", default=None, help="one certificate for every process (admin, party, "
                                                        "splitter, ...); default: each its own role's")
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
        if args.cmd == "env":
            if not running:
                print("error: broker not running (ferry kafka up)", file=sys.stderr)
                return 1
            for k, v in running.client_env(args.role).items():
                print(f"export {k}={shlex.quote(v)}")
            return 0
        if args.cmd == "down":
            if running:
                stop_broker(running)
            state_file.unlink(missing_ok=True)
            print("stopped" if running else "not running")
            return 0
        if running:
            print(f"already running (pid {running.pid}, log {running.log_path})", file=sys.stderr)
        else:
            running = start_broker(args.dir, args.port, startup_timeout_s=args.timeout, detach=True,
                                   pki_dir=args.pki_dir)
            state_file.write_text(json.dumps(asdict(running), default=str, indent=1))
        print(running.bootstrap)
        print(f"TLS only; for clients: eval \"$(ferry kafka env --dir {args.dir})\"", file=sys.stderr)
        return 0
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
