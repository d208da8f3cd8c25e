"""A real Kubernetes control plane for development and tests, built from the Go module proxy.

No Docker, kind or downloads from outside the package registries: ``deploy/k8s-dev/build.sh``
builds kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok at pinned
versions (module checksums pinned by the committed go.sum) once into
``~/.cache/ferry/k8s/<versions>/bin`` and records their sha256 in ``SHA256SUMS``, which is
checked before every start. A cluster here is etcd + the API server (RBAC, TLS from a CA made
with ``cryptography``, static tokens, bound to 127.0.0.1 on free ports) + the controller
manager (the real Job controller, garbage collector, TTL controller) + the scheduler, and kwok
simulating nodes and pod lifecycles (see k8s-stages.yaml). Starting takes a few seconds.

CLI: ``python -m shared.devtools.k8s_cluster {build,up,down,status}`` (``ferry k8s ...``); ``build
--kubelet`` and ``up --real-node PARTY`` add a real node (shared.devtools.k8s_real_node).
Env: ``FERRY_K8S_CACHE`` (binary cache root).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

K8S_VERSION = "1.35.4"
ETCD_VERSION = "3.6.5"
KWOK_VERSION = "0.8.0"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd", "etcdctl", "kwok")
_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent.parent
BUILD_SCRIPT = _REPO / "deploy" / "k8s-dev" / "build.sh"
STAGES_FILE = _HERE / "k8s-stages.yaml"
SERVICE_CIDR = "10.96.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Users of the static token file: (name, groups). The controller manager acts through one
# service account per controller (--use-service-account-credentials), as kubeadm sets it up;
# kwok plays every kubelet, so it is a cluster admin.
_USERS = {"admin": ("ferry-admin", "system:masters"),
          "controller-manager": ("system:kube-controller-manager", ""),
          "scheduler": ("system:kube-scheduler", ""),
          "kwok": ("kwok-controller", "system:masters")}


class ClusterError(RuntimeError):
    """Building, starting or stopping the development cluster failed."""


def cache_root() -> Path:
    return Path(os.environ.get("FERRY_K8S_CACHE") or Path.home() / ".cache" / "ferry" / "k8s")


def version_key() -> str:
    return f"v{K8S_VERSION}-etcd{ETCD_VERSION}-kwok{KWOK_VERSION}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stop_process(proc: subprocess.Popen | None, pid: int, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after grace_s: a child by its handle, else (started by another
    process, e.g. `up`) by its recorded PID."""
    if proc is None:
        _kill_pid(pid, grace_s)
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _verify(folder: Path, binaries: tuple[str, ...]) -> bool:
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return False
    recorded = dict(reversed(line.split(None, 1)) for line in sums.read_text().splitlines() if line.strip())
    recorded = {name.strip().lstrip("*"): digest for name, digest in recorded.items()}
    if set(recorded) != set(binaries):
        return False
    for name, digest in recorded.items():
        binary = folder / "bin" / name
        if not binary.is_file() or _sha256(binary) != digest:
            raise ClusterError(f"{binary}: sha256 differs from {sums}; delete {folder} to rebuild it")
    return True


def cached_build(key: str, binaries: tuple[str, ...], script: Path, env: dict[str, str], what: str,
                 manifest: dict, log=print) -> Path:
    """bin/ of cache_root()/key (its SHA256SUMS checked), which `script` builds first on a cold cache.

    One Go build at a time per machine: a parallel session waits for the first one's result."""
    root = cache_root()
    folder = root / key
    if _verify(folder, binaries):
        return folder / "bin"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _verify(folder, binaries):
            return folder / "bin"
        if shutil.which("go") is None:
            raise ClusterError(f"building {what} needs Go >= 1.24 on PATH (apt-get install golang-go)")
        partial = root / (key + ".tmp")
        shutil.rmtree(partial, ignore_errors=True)
        log(f"building {what} into {folder} (first run only)")
        started = time.monotonic()
        build_log = root / f"{script.stem}.log"
        with open(build_log, "w") as out:
            done = subprocess.run(["nice", "-n", "10", "bash", str(script), str(partial)], env={**os.environ, **env},
                                  stdout=out, stderr=subprocess.STDOUT, timeout=4 * 3600)  # a hang guard only
        if done.returncode != 0:
            raise ClusterError(f"{script.name} failed ({done.returncode}); see {build_log}")
        go_version = subprocess.run(["go", "version"], capture_output=True, text=True, timeout=30).stdout.strip()
        (partial / "manifest.json").write_text(json.dumps({
            **manifest, "go": go_version, "build_seconds": round(time.monotonic() - started, 1),
            "go_sum_sha256": _sha256(partial / "src" / "go.sum")}, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        if not _verify(folder, binaries):
            raise ClusterError(f"{folder}: the build left no complete SHA256SUMS")
        log(f"built {what} in {time.monotonic() - started:.0f} s")
        return folder / "bin"


def ensure_binaries(log=print) -> Path:
    """The folder holding bin/<binary>, building it first when the cache is cold (~15-25 min)."""
    return cached_build(version_key(), BINARIES, BUILD_SCRIPT,
                        {"FERRY_K8S_VERSION": K8S_VERSION, "FERRY_ETCD_VERSION": ETCD_VERSION,
                         "FERRY_KWOK_VERSION": KWOK_VERSION},
                        f"Kubernetes v{K8S_VERSION}, etcd v{ETCD_VERSION}, kwok v{KWOK_VERSION}",
                        {"kubernetes": K8S_VERSION, "etcd": ETCD_VERSION, "kwok": KWOK_VERSION}, log)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ClusterState:
    """Everything needed to use or stop a running cluster; saved as state.json in its folder."""

    folder: str
    server: str
    kubeconfig: str
    ca_file: str
    admin_token: str
    etcd_endpoint: str
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)


class Cluster:
    """One development cluster in `folder`: start, stop, restart the API server, compact etcd."""

    def __init__(self, folder: Path, bin_dir: Path | None = None, *, log=print):
        self.folder, self.log = Path(folder), log
        self.bin = bin_dir or ensure_binaries(log)
        self.state: ClusterState | None = None
        self._procs: dict[str, subprocess.Popen] = {}

    # ---- start / stop ----

    def start(self, timeout_s: float = 240.0) -> ClusterState:
        from shared.devtools import k8s_pki  # needs `cryptography`: imported where it is used

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        tokens = {user: secrets.token_urlsafe(32) for user in _USERS}
        pki = k8s_pki.write_pki(self.folder / "pki")
        (self.folder / "pki" / "tokens.csv").write_text("".join(
            f'{tokens[u]},{name},{name},"{groups}"\n' for u, (name, groups) in _USERS.items()))
        ports = {"etcd": free_port(), "etcd_peer": free_port(), "apiserver": free_port()}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        for user in _USERS:
            self._write_kubeconfig(self.folder / f"{user}.kubeconfig", server, pki["ca"], tokens[user], user)
        self.state = ClusterState(str(self.folder), server, str(self.folder / "admin.kubeconfig"), str(pki["ca"]),
                                  tokens["admin"], f"http://127.0.0.1:{ports['etcd']}", ports)
        self._save()
        deadline = time.monotonic() + timeout_s
        try:
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            self._spawn("kube-controller-manager", self._controller_manager_args())
            self._spawn("kube-scheduler", [
                f"--kubeconfig={self.folder / 'scheduler.kubeconfig'}", "--leader-elect=false", "--secure-port=0",
                "--kube-api-qps=200", "--kube-api-burst=400", "-v=1"])
            self._spawn("kwok", [
                f"--kubeconfig={self.folder / 'kwok.kubeconfig'}", "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--cidr=10.244.0.1/16", "--node-ip=127.0.0.1", f"--config={STAGES_FILE}",
                "--server-address="])
        except BaseException:
            self.stop()
            raise
        return self.state

    def _controller_manager_args(self) -> list[str]:
        pki = self.folder / "pki"
        return [f"--kubeconfig={self.folder / 'controller-manager.kubeconfig'}", "--leader-elect=false",
                "--secure-port=0", "--use-service-account-credentials=true", "--controllers=*",
                f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                # Hundreds of Jobs at once (bench/k8s_dispatch.py): the default 20 QPS would be the bottleneck.
                "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-job-syncs=20", "-v=1"]

    def _apiserver_args(self) -> list[str]:
        assert self.state is not None
        pki = self.folder / "pki"
        return [f"--etcd-servers={self.state.etcd_endpoint}", "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1", f"--secure-port={self.state.ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--endpoint-reconciler-type=none",
                "--profiling=false", "-v=1"]

    def _start_etcd(self, deadline: float) -> None:
        assert self.state is not None
        ports = self.state.ports
        peer = f"http://127.0.0.1:{ports['etcd_peer']}"
        self._spawn("etcd", [
            "--name=ferry", f"--data-dir={self.folder / 'etcd'}", f"--listen-client-urls={self.state.etcd_endpoint}",
            f"--advertise-client-urls={self.state.etcd_endpoint}", f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=ferry={peer}",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296"])
        self._wait(lambda: self._http_ok(f"{self.state.etcd_endpoint}/health"), deadline, "etcd")

    def _start_apiserver(self, deadline: float) -> None:
        self._spawn("kube-apiserver", self._apiserver_args())
        self._wait(self.ready, deadline, "kube-apiserver /readyz")

    def stop_apiserver(self) -> None:
        self._terminate("kube-apiserver")

    def start_apiserver(self, timeout_s: float = 180.0) -> None:
        """(Re)start the API server on its port and wait until it is ready."""
        if "kube-apiserver" not in self.state.pids:
            self._start_apiserver(time.monotonic() + timeout_s)

    def restart_apiserver(self, down_s: float = 0.0, timeout_s: float = 180.0) -> None:
        """Stop the API server (SIGTERM), wait `down_s`, start it again on the same port."""
        self.stop_apiserver()
        time.sleep(down_s)
        self.start_apiserver(timeout_s)

    def stop(self) -> None:
        """Stop every process this cluster started, by PID, newest first."""
        pids = dict(self.state.pids) if self.state else {}
        for name in reversed(list(pids)):
            self._terminate(name)
        if self.state:
            self._save()

    def _terminate(self, name: str, grace_s: float = 10.0) -> None:
        assert self.state is not None
        pid = self.state.pids.pop(name, None)
        proc = self._procs.pop(name, None)
        if pid is None:
            return
        stop_process(proc, pid, grace_s)
        self._save()

    # ---- operations for tests ----

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision; returns that revision."""
        assert self.state is not None
        env = {**os.environ, "ETCDCTL_API": "3"}
        out = subprocess.run([str(self.bin / "etcdctl"), f"--endpoints={self.state.etcd_endpoint}", "endpoint",
                              "status", "-w", "json"], capture_output=True, text=True, timeout=30, env=env, check=True)
        revision = int(json.loads(out.stdout)[0]["Status"]["header"]["revision"])
        subprocess.run([str(self.bin / "etcdctl"), f"--endpoints={self.state.etcd_endpoint}", "compact",
                        str(revision), "--physical"], capture_output=True, timeout=60, env=env, check=True)
        return revision

    def ready(self) -> bool:
        assert self.state is not None
        return self._http_ok(f"{self.state.server}/readyz", self.state.admin_token)

    def alive(self) -> dict[str, bool]:
        assert self.state is not None
        return {name: _pid_alive(pid) for name, pid in self.state.pids.items()}

    # ---- plumbing ----

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.state is not None
        log = open(self.folder / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen([str(self.bin / name), *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.folder)
        log.close()
        self._procs[name] = proc
        self.state.pids[name] = proc.pid
        self._save()

    def _wait(self, ready, deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    tail = (self.folder / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise ClusterError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{tail}")
            if ready():
                return
            time.sleep(0.2)
        raise ClusterError(f"{what} not ready in time; logs in {self.folder / 'logs'}")

    def _http_ok(self, url: str, token: str | None = None) -> bool:
        assert self.state is not None
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        context = ssl.create_default_context(cafile=self.state.ca_file) if url.startswith("https") else None
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    @staticmethod
    def _write_kubeconfig(path: Path, server: str, ca: Path, token: str, user: str) -> None:
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "ferry-dev",
                  "clusters": [{"name": "ferry-dev", "cluster": {"server": server, "certificate-authority": str(ca)}}],
                  "users": [{"name": user, "user": {"token": token}}],
                  "contexts": [{"name": "ferry-dev", "context": {"cluster": "ferry-dev", "user": user}}]}
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML: kubectl and kubernetes_asyncio read it
        path.chmod(0o600)

    def _save(self) -> None:
        if self.state is not None:
            (self.folder / "state.json").write_text(json.dumps(asdict(self.state), indent=2))

    @classmethod
    def attach(cls, folder: Path, *, log=print) -> "Cluster":
        """The cluster recorded in folder/state.json (started by another process)."""
        state = json.loads((Path(folder) / "state.json").read_text())
        cluster = cls(Path(folder), bin_dir=Path("/nonexistent"), log=log)
        cluster.state = ClusterState(**state)
        return cluster


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _kill_pid(pid: int, grace_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def default_up_dir() -> Path:
    return cache_root() / "up"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferry k8s", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("build", "up", "down", "status"))
    parser.add_argument("--dir", type=Path, default=None, help=f"cluster folder (default {default_up_dir()})")
    parser.add_argument("--nodes", default="", help="up: kwok nodes to create, party names separated by commas")
    parser.add_argument("--real-node", default="", metavar="PARTY",
                        help="up: also a real node (containerd + kubelet) of this party running Ferry's image "
                             "(needs root, containerd, runc, containernetworking-plugins)")
    parser.add_argument("--kubelet", action="store_true",
                        help="build: also the real node's kubelet (a cache entry of its own)")
    args = parser.parse_args(argv)
    folder = args.dir or default_up_dir()
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if args.action == "build":
        print(ensure_binaries(log))
        if args.kubelet:
            from shared.devtools.k8s_real_node import ensure_kubelet

            print(ensure_kubelet(log))
        return 0
    if args.action == "up":
        if (folder / "state.json").exists() and any(Cluster.attach(folder).alive().values()):
            raise SystemExit(f"a cluster is already running in {folder}; `ferry k8s down` first")
        shutil.rmtree(folder, ignore_errors=True)
        cluster = Cluster(folder, log=log)
        state = cluster.start()
        if args.nodes:
            from shared.devtools.k8s_nodes import create_kwok_nodes_sync

            create_kwok_nodes_sync(state, [p for p in args.nodes.split(",") if p])
        if args.real_node:
            from shared.devtools import containers
            from shared.devtools.k8s_real_node import RealNode

            try:
                containers.dockerd_up()
                node = RealNode(cluster, args.real_node, folder / "real-node", log=log)
                node.start(images=(containers.build_ferry_image(),))
            except BaseException:
                cluster.stop()
                raise
            log(f"real node {node.name} Ready (label ferry.io/party={args.real_node}); processes {node.pids}")
        log(f"cluster up at {state.server}; processes {state.pids}")
        log(f"export KUBECONFIG={state.kubeconfig}")
        print(Path(state.kubeconfig).read_text())
        return 0
    if not (folder / "state.json").exists():
        print(f"no cluster recorded in {folder}")
        return 0 if args.action == "down" else 1
    cluster = Cluster.attach(folder)
    if args.action == "down":
        if (folder / "real-node" / "real-node.json").exists():
            from shared.devtools.k8s_real_node import RealNode

            RealNode.attach(cluster, folder / "real-node").stop()
        cluster.stop()
        print(f"stopped the cluster in {folder}")
        return 0
    alive = cluster.alive()
    if (folder / "real-node" / "real-node.json").exists():
        from shared.devtools.k8s_real_node import RealNode

        alive |= {f"real-node/{name}": up for name, up in RealNode.attach(cluster, folder / "real-node").alive().items()}
    ready = cluster.ready()
    print(json.dumps({"server": cluster.state.server, "kubeconfig": cluster.state.kubeconfig,
                      "ready": ready, "processes": alive}, indent=2))
    return 0 if ready and all(alive.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
