"""A real node for the development cluster: containerd + a kubelet on this machine, running real pods.

The kwok nodes of shared.devtools.k8s_cluster only pretend to run pods. A real node runs
them with Debian's containerd 1.6 and runc and a kubelet built like the control plane
(``deploy/k8s-dev/build-kubelet.sh``, a cache entry of its own next to the control plane's,
sha256 in its SHA256SUMS). Nothing is pulled: the pod sandbox image is written here from the
``pause`` binary built with the kubelet, and other images (Ferry's) come from the project's
private Docker daemon with ``docker save | ctr -n k8s.io images import``; pods use
``imagePullPolicy: Never``.

What this machine needs (tried, see /work/shared/k8s-notes.md):
- containerd with ``restrict_oom_score_adj`` (root here may not lower OOM scores; runc
  fails with "can't get final child's PID from pipe" otherwise), its own config, socket,
  root and state folders; the root (the image store) is cached under
  ``~/.cache/ferry/k8s/containerd`` so images are imported once, and locked: one real node
  per machine at a time;
- CNI ``ptp`` with addresses from 127.1.0.0/24 (Debian's containernetworking-plugins);
- a kubelet with cgroupfs, ``failSwapOn: false``, ``failCgroupV1: false``, bound to
  127.0.0.1, eviction and image GC thresholds that a nearly full shared disk does not trip;
  it authenticates with a client certificate from the cluster's CA (system:node:<name>).
  It refuses a loopback node IP, so the node has no address: pod logs and exec do not work.
  It sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops: they are restored.
Everything is stopped by PID; containers left behind are killed through containerd, their
network namespaces and the kubelet's volume mounts are removed.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from shared.devtools import k8s_node_images as images
from shared.devtools.k8s_cluster import (K8S_VERSION, Cluster, ClusterError, _pid_alive, _sha256, cache_root,
                                         cached_build, free_port, stop_process)

_REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = _REPO / "deploy" / "k8s-dev" / "build-kubelet.sh"
KUBELET_BINARIES = ("kubelet", "pause")
PAUSE_IMAGE = "ferry.dev/pause:1"
POD_SUBNET = "127.1.0.0/24"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
PARTY_LABEL = "ferry.io/party"
# The kubelet writes these at start (its defaults for a node): the machine's values come back at stop.
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")


def kubelet_key() -> str:
    return f"kubelet-v{K8S_VERSION}"


def ensure_kubelet(log=print) -> Path:
    """The folder holding bin/kubelet and bin/pause, building them first on a cold cache
    (~1 min with the Go build cache the control plane's build leaves, several minutes without)."""
    return cached_build(kubelet_key(), KUBELET_BINARIES, BUILD_SCRIPT, {"FERRY_K8S_VERSION": K8S_VERSION},
                        f"kubelet v{K8S_VERSION}", {"kubernetes": K8S_VERSION}, log)


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve()) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(prefix)]


def _remove_empty_cgroups(name: str) -> None:
    """rmdir the kubelet's (now empty) cgroup trees, deepest first; a busy one stays."""
    for top in Path("/sys/fs/cgroup").glob(f"*/{name}"):
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


class RealNode:
    """containerd + kubelet registering node ``real-<party>`` (label ferry.io/party=<party>) in `cluster`."""

    def __init__(self, cluster: Cluster, party: str, folder: Path, *, log=print):
        if cluster.state is None:
            raise ClusterError("start the cluster before its real node")
        self.cluster, self.party, self.folder, self.log = cluster, party, Path(folder), log
        self.name = f"real-{party}"
        self.bin = ensure_kubelet(log)
        self.store = cache_root() / "containerd"  # the image store, kept between runs
        self.socket = self.folder / "containerd.sock"
        self.pids: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = None
        self._sysctls: dict[str, str] = {}
        self._netns_before: set[str] = set()

    # ---- start ----

    def start(self, images: tuple[str, ...] = (), timeout_s: float = 180.0) -> str:
        """Start containerd, import `images` (from the private dockerd) and the kubelet; wait until Ready.

        timeout_s bounds the start before the imports and, anew, the kubelet's start after them: an
        import copies gigabytes when the image changed (282 s once in `make test`), bounded by its own
        timeouts, and used to leave the kubelet no time at all."""
        deadline = time.monotonic() + timeout_s
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        self._take_store_lock(deadline)
        try:
            self._netns_before = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
            self._start_containerd(deadline)
            if not self._present(PAUSE_IMAGE, _sha256(self.bin / "pause")):
                archive = images.pause_image_archive(self.bin / "pause", PAUSE_IMAGE, self.folder / "pause.tar")
                self._ctr("images", "import", str(archive), timeout=600)
                self._record(PAUSE_IMAGE, _sha256(self.bin / "pause"))
            for image in images:
                self.import_docker_image(image)
            self._start_kubelet()
            self._wait_ready(time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.name

    def _take_store_lock(self, deadline: float) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.store.parent / "containerd.lock", "w")
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"another real node holds {self.store} (one per machine)") from None
                time.sleep(1)

    def _cni_bin_dir(self) -> str:
        for d in CNI_BIN_DIRS:
            if Path(d, "ptp").is_file():
                return d
        raise ClusterError("the CNI plugins are missing: apt-get install containernetworking-plugins")

    def _start_containerd(self, deadline: float) -> None:
        cni_conf = self.folder / "cni"
        cni_conf.mkdir(exist_ok=True)
        (cni_conf / "10-ferry-ptp.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "ferry-ptp", "plugins": [{
                "type": "ptp", "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                         "dataDir": str(self.folder / "cni-ipam")}}]}))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (self.folder / "containerd.toml").write_text(f"""version = 2
root = "{self.store}"
state = "{self.folder / 'containerd-state'}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.folder / 'opt'}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{self._cni_bin_dir()}"
    conf_dir = "{cni_conf}"
""")
        self._spawn("containerd", ["containerd", "--config", str(self.folder / "containerd.toml")])
        while not (self.socket.exists() and self._ctr("version", check=False).returncode == 0):
            self._check_alive("containerd")
            if time.monotonic() > deadline:
                raise ClusterError(f"containerd did not start; see {self.folder / 'logs'}")
            time.sleep(0.2)

    def _ctr(self, *args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                              capture_output=True, timeout=timeout, **kw)
        if check and done.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args[:3])} failed: {done.stderr.decode(errors='replace')[-2000:]}")
        return done

    def _imported(self) -> dict[str, str]:
        stamps = self.store / "ferry-imports.json"
        return json.loads(stamps.read_text()) if stamps.is_file() else {}

    def _present(self, ref: str, stamp: str) -> bool:
        listed = self._ctr("images", "ls", "-q").stdout.decode().split()
        return self._imported().get(ref) == stamp and any(name == ref or name.endswith("/" + ref) for name in listed)

    def _record(self, ref: str, stamp: str) -> None:
        stamps = self._imported() | {ref: stamp}
        (self.store / "ferry-imports.json").write_text(json.dumps(stamps, indent=2))

    def import_docker_image(self, ref: str) -> None:
        """Copy `ref` from the private Docker daemon (shared.devtools.containers) unless already here:
        the whole image the first time, then only the layers the node lacks (k8s_node_images)."""
        from shared.devtools.containers import docker_env, dockerd_up

        dockerd_up()
        inspect = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}} {{json .RootFS.Layers}}", ref],
                                 env=docker_env(), capture_output=True, text=True, timeout=60)
        if inspect.returncode != 0:
            raise ClusterError(f"image {ref} is not in the private Docker daemon: python -m "
                               f"shared.devtools.containers build ({inspect.stderr.strip()[-300:]})")
        image_id, layers = inspect.stdout.strip().split(" ", 1)
        if self._present(ref, image_id):
            return
        started = time.monotonic()
        have = {cols[0] for cols in (line.split() for line in
                                     self._ctr("snapshots", "ls").stdout.decode().splitlines()[1:])
                if len(cols) >= 2 and cols[-1] == "Committed"}
        partial = any(c in have for c in images.chain_ids(json.loads(layers)))
        self.log(f"importing {ref} into the real node's containerd "
                 f"({'the layers it lacks' if partial else 'all of it: the first time, minutes'})")
        try:
            if not partial:
                raise images.NeedFullImport(ref)
            with self._docker_save(ref) as stream:
                archive, kept = images.docker_archive_to_oci(stream, images.qualified(ref), have,
                                                             self.folder / "import", self.folder / "image.tar")
            try:
                self._ctr("images", "import", str(archive), timeout=1800)
            except ClusterError as exc:
                # Seen once: "parent snapshot ... does not exist". Moving the tag to the new image
                # leaves the old one unreferenced, and containerd's garbage collector may take the
                # shared snapshots before the new layers are unpacked on them. A whole copy is slow
                # (minutes) but needs no snapshot that is already there.
                self.log(f"importing only the new layers failed ({str(exc)[-300:]}); importing all of {ref}")
                raise images.NeedFullImport(ref) from exc
            finally:
                archive.unlink(missing_ok=True)
            self.log(f"{kept} new layer(s) of {ref}")
        except images.NeedFullImport:
            with self._docker_save(ref) as stream:
                self._ctr("images", "import", "-", stdin=stream, timeout=3600)
        self._discard_layer_blobs(ref)
        self._record(ref, image_id)
        self.log(f"imported {ref} in {time.monotonic() - started:.0f} s")

    @contextlib.contextmanager
    def _docker_save(self, ref: str):
        from shared.devtools.containers import docker_env

        save = subprocess.Popen(["docker", "save", ref], env=docker_env(), stdout=subprocess.PIPE)
        try:
            yield save.stdout
        finally:
            save.stdout.close()
            try:
                code = save.wait(120)
            except subprocess.TimeoutExpired:
                save.kill()
                code = save.wait(10)
        if code != 0:
            raise ClusterError(f"docker save {ref} failed ({code})")

    def _discard_layer_blobs(self, ref: str) -> None:
        """Delete the image's layer tarballs once unpacked: containers start from the unpacked
        snapshots (CRI's discard_unpacked_layers does the same for pulls). Ferry's image is ~6 GB;
        this halves what the node keeps on a shared disk."""
        listed = [line.split() for line in self._ctr("images", "ls").stdout.decode().splitlines()[1:]]
        target = next((cols[2] for cols in listed if cols and (cols[0] == ref or cols[0].endswith("/" + ref))), None)
        if target is None:
            raise ClusterError(f"{ref}: not in containerd after the import")
        document = json.loads(self._ctr("content", "get", target).stdout)
        while "manifests" in document:  # an index: the linux/amd64 manifest (docker save has one)
            target = document["manifests"][0]["digest"]
            document = json.loads(self._ctr("content", "get", target).stdout)
        layers = [layer["digest"] for layer in document.get("layers", ())]
        if layers:
            self._ctr("content", "rm", *layers, check=False)
            # Removing content only forgets it; deleting a lease synchronously runs the garbage
            # collector now, which deletes the files (containerd would otherwise wait for more changes).
            lease = self._ctr("leases", "create").stdout.decode().split()[0]
            self._ctr("leases", "delete", "--sync", lease, timeout=600)

    def _start_kubelet(self) -> None:
        from shared.devtools import k8s_pki

        pki = Path(self.cluster.state.ca_file).parent
        crt, key = k8s_pki.write_client_cert(pki, f"kubelet-{self.name}", f"system:node:{self.name}",
                                             ("system:nodes",))
        kubeconfig = self.folder / "kubelet.kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "c", "cluster": {"server": self.cluster.state.server,
                                                   "certificate-authority": self.cluster.state.ca_file}}],
            "users": [{"name": "u", "user": {"client-certificate": str(crt), "client-key": str(key)}}],
            "contexts": [{"name": "node", "context": {"cluster": "c", "user": "u"}}]}))
        kubeconfig.chmod(0o600)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "cgroupDriver": "cgroupfs", "failSwapOn": False, "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": self.cluster.state.ca_file}},
            "authorization": {"mode": "AlwaysAllow"},  # bound to 127.0.0.1 and client certificates only
            # The shared disk is nearly full: default thresholds would taint the node with
            # DiskPressure and garbage-collect the imported images.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "resolvConf": "", "registerNode": True, "nodeStatusUpdateFrequency": "2s",
            "serializeImagePulls": False, "syncFrequency": "5s",
            "podLogsDir": str(self.folder / "pod-logs"),  # not /var/log/pods: gone with the folder
        }
        (self.folder / "kubelet.yaml").write_text(json.dumps(config, indent=2))
        self._sysctls = {name: Path("/proc/sys", name).read_text().strip() for name in SYSCTLS}
        (self.folder / "sysctls.json").write_text(json.dumps(self._sysctls))
        self._spawn("kubelet", [str(self.bin / "kubelet"), f"--config={self.folder / 'kubelet.yaml'}",
                                f"--kubeconfig={kubeconfig}", f"--root-dir={self.folder / 'kubelet'}",
                                f"--cert-dir={self.folder / 'kubelet-pki'}", f"--hostname-override={self.name}",
                                f"--node-labels={PARTY_LABEL}={self.party},type=real", "-v=1"])

    def _wait_ready(self, deadline: float) -> None:
        state = self.cluster.state
        context = ssl.create_default_context(cafile=state.ca_file)
        while True:
            self._check_alive("containerd", "kubelet")
            request = urllib.request.Request(f"{state.server}/api/v1/nodes/{self.name}",
                                             headers={"Authorization": f"Bearer {state.admin_token}"})
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as response:
                    node = json.loads(response.read())
                conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", ())}
                if conditions.get("Ready") == "True" and not node.get("spec", {}).get("taints"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                tail = (self.folder / "logs" / "kubelet.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"node {self.name} not Ready in time; kubelet log tail:\n{tail}")
            time.sleep(0.5)

    # ---- stop ----

    def stop(self) -> None:
        """Stop the kubelet, every container it left, containerd; undo mounts, netns and sysctls."""
        if "kubelet" in self.pids:
            self._terminate("kubelet")
        if "containerd" in self.pids:
            self._remove_containers()
            self._terminate("containerd")
        self._unmount(self.folder)
        _remove_empty_cgroups("kubepods")
        if os.path.isdir("/var/run/netns"):
            for ns in set(os.listdir("/var/run/netns")) - self._netns_before:
                if ns.startswith("cni-"):
                    subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
        for name, value in self._sysctls.items():
            Path("/proc/sys", name).write_text(value)
        self._sysctls = {}
        self._save()
        if self._lock is not None:
            self._lock.close()  # releases the image store
            self._lock = None

    def _remove_containers(self) -> None:
        try:
            tasks = [line.split()[0] for line in self._ctr("tasks", "ls", "-q", check=False).stdout.decode().splitlines()
                     if line.strip()]
            for task in tasks:
                self._ctr("tasks", "kill", "-a", "-s", "SIGKILL", task, check=False)
            for task in tasks:
                self._ctr("tasks", "delete", "-f", task, check=False)
            containers = self._ctr("containers", "ls", "-q", check=False).stdout.decode().split()
            if containers:
                self._ctr("containers", "delete", *containers, check=False)
        except subprocess.TimeoutExpired:
            self.log("containerd did not answer while removing containers")

    def _unmount(self, folder: Path) -> None:
        for point in sorted(_mounts_under(folder), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)

    # ---- plumbing ----

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.folder / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.folder)
        log.close()
        self._procs[name], self.pids[name] = proc, proc.pid
        self._save()

    def _check_alive(self, *names: str) -> None:
        for name in names:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is not None:
                tail = (self.folder / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"{name} exited ({proc.returncode}):\n{tail}")

    def _terminate(self, name: str, grace_s: float = 20.0) -> None:
        stop_process(self._procs.pop(name, None), self.pids.pop(name), grace_s)

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's log as the kubelet wrote it (the node has no address for `kubectl logs`)."""
        return "".join(log.read_text(errors="replace") for log in
                       sorted((self.folder / "pod-logs").glob(f"{namespace}_{pod}_*/{container}/*.log")))

    def alive(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self.pids.items()}

    def _save(self) -> None:
        if not self.folder.is_dir():
            return
        (self.folder / "real-node.json").write_text(json.dumps({
            "party": self.party, "pids": self.pids, "sysctls": self._sysctls,
            "netns_before": sorted(self._netns_before)}, indent=2))

    @classmethod
    def attach(cls, cluster: Cluster, folder: Path, *, log=print) -> "RealNode":
        """The real node recorded in folder/real-node.json (started by another process, `ferry k8s up`)."""
        saved = json.loads((Path(folder) / "real-node.json").read_text())
        node = cls.__new__(cls)
        node.cluster, node.party, node.folder, node.log = cluster, saved["party"], Path(folder), log
        node.name, node.store, node.socket = f"real-{node.party}", cache_root() / "containerd", Path(folder) / "containerd.sock"
        node.pids, node._procs, node._lock = dict(saved["pids"]), {}, None
        node._sysctls, node._netns_before = dict(saved["sysctls"]), set(saved["netns_before"])
        return node
