"""Build Ferry's container images without pulling anything, and run a private Docker daemon.

Nothing comes from a container registry (none is reachable on air-gapped sites):
- the base root file system comes from Debian packages with ``debootstrap --variant=minbase``
  and is ``docker import``-ed as ``ferry-base-python`` (python3, venv); ``ferry-base-jre`` adds
  Debian's openjdk-17-jre-headless to it (deploy/images/jre.Dockerfile) for the broker;
- ``ferry-kafka`` adds the Kafka jars that shared.devtools.kafka_broker fetches from Maven
  Central, and deploy/images/kafka_entrypoint.py;
- ``ferry`` is deploy/Dockerfile (multi-stage; ``TORCH_INDEX_URL`` build argument).
Root file systems are cached as tarballs under ``~/.cache/ferry/images`` and Docker's own
state under ``~/.cache/ferry/docker``, so only the first build is slow.

The daemon: ``dockerd`` with its own socket, data root and exec root, started in the
background, its PID kept in ``~/.cache/ferry/dockerd/state.json``, stopped by that PID.

CLI: ``python -m shared.devtools.containers {dockerd-up,dockerd-down,build,env}``.
Needs root and Debian's docker.io, docker-compose and debootstrap.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FERRY_CONTAINERS_CACHE", Path.home() / ".cache" / "ferry")).expanduser()
DOCKERD_DIR = CACHE / "dockerd"
SOCKET = DOCKERD_DIR / "docker.sock"
MIRROR = os.environ.get("FERRY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
BASES = {  # image name -> packages on top of minbase
    "ferry-base-python": ("python3", "python3-venv", "ca-certificates"),
}
TAG = SUITE


class ContainerError(RuntimeError):
    pass


def docker_env() -> dict[str, str]:
    """Environment for docker / docker-compose clients of the private daemon."""
    # The classic builder: Debian's dockerd 20.10 has no buildx plugin next to it.
    return {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}", "COMPOSE_DOCKER_CLI_BUILD": "0", "DOCKER_BUILDKIT": "0"}


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if res.returncode != 0:
        raise ContainerError(f"{' '.join(map(str, cmd[:6]))} ... failed ({res.returncode}):\n"
                             f"{(res.stdout + res.stderr)[-3000:]}")
    return res


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def _ping(timeout_s: float = 3.0) -> bool:
    try:
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=docker_env(),
                              capture_output=True, timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def dockerd_up(timeout_s: float = 60.0) -> int:
    """Start (or find) the private dockerd; returns its PID."""
    state = DOCKERD_DIR / "state.json"
    if state.is_file():
        pid = json.loads(state.read_text())["pid"]
        if _alive(pid) and _ping():
            return pid
    if shutil.which("dockerd") is None:
        raise ContainerError("dockerd is not installed: apt-get install -y --no-install-recommends "
                             "docker.io docker-compose debootstrap")
    DOCKERD_DIR.mkdir(parents=True, exist_ok=True)
    log = open(DOCKERD_DIR / "dockerd.log", "ab")
    proc = subprocess.Popen(["dockerd", "--host", f"unix://{SOCKET}", "--data-root", str(CACHE / "docker"),
                             "--exec-root", "/run/ferry-docker", "--pidfile", str(DOCKERD_DIR / "dockerd.pid")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    state.write_text(json.dumps({"pid": proc.pid}))
    deadline = time.monotonic() + timeout_s
    while not _ping():
        if proc.poll() is not None or time.monotonic() > deadline:
            dockerd_down()
            tail = (DOCKERD_DIR / "dockerd.log").read_text(errors="replace")[-3000:]
            raise ContainerError(f"dockerd did not come up; log {DOCKERD_DIR / 'dockerd.log'}:\n{tail}")
        time.sleep(0.5)
    return proc.pid


def dockerd_down(timeout_s: float = 30.0) -> bool:
    """Stop the private dockerd by its PID (SIGTERM, then SIGKILL). False if none ran."""
    state = DOCKERD_DIR / "state.json"
    if not state.is_file():
        return False
    pid = json.loads(state.read_text())["pid"]
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        if not _alive(pid):
            break
        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
    except ChildProcessError:
        pass
    state.unlink(missing_ok=True)
    return True


def _image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], env=docker_env(), capture_output=True,
                          timeout=30).returncode == 0


def _rootfs_tarball(name: str, packages: tuple[str, ...]) -> Path:
    """debootstrap minbase + packages, trimmed, as a cached tarball."""
    stamp = hashlib.sha256(f"{SUITE}:{MIRROR}:{sorted(packages)}:v1".encode()).hexdigest()[:12]
    tarball = CACHE / "images" / f"{name}-{SUITE}-{stamp}.tar"
    if tarball.is_file():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=f"{name}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs), MIRROR],
             timeout=1800)
        # The machine's extra CAs (an egress proxy's, say), so pip inside the build can verify.
        local_cas = Path("/usr/local/share/ca-certificates")
        if local_cas.is_dir():
            for crt in local_cas.glob("*.crt"):
                shutil.copy(crt, rootfs / "usr/local/share/ca-certificates" / crt.name)
            _run(["chroot", str(rootfs), "update-ca-certificates"], timeout=300)
        for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info",
                     "usr/share/locale"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
            (rootfs / junk).mkdir(parents=True, exist_ok=True)
        (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        py = rootfs / "usr/bin/python"
        if not py.exists():
            py.symlink_to("python3")
        partial = tarball.with_suffix(".partial")
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], timeout=900)
        partial.rename(tarball)
    return tarball


def ensure_base(name: str) -> str:
    ref = f"{name}:{TAG}"
    if name == "ferry-base-jre":
        if not _image_exists(ref):
            python = ensure_base("ferry-base-python")
            with tempfile.TemporaryDirectory(prefix="ferry-jre-ctx-") as ctx:
                _run(["docker", "build", "--force-rm", "--network", "host", "-t", ref, "--build-arg", f"BASE={python}",
                      "-f", str(ROOT / "deploy/images/jre.Dockerfile"), ctx], timeout=1800, env=docker_env())
        return ref
    if not _image_exists(ref):
        tarball = _rootfs_tarball(name, BASES[name])
        with open(tarball, "rb") as f:
            res = subprocess.run(["docker", "import", "--change", "ENV LANG=C.UTF-8", "-", ref], stdin=f,
                                 env=docker_env(), capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise ContainerError(f"docker import {ref} failed: {res.stderr[-2000:]}")
    return ref


def _inputs_hash(*paths: Path, extra: str = "") -> str:
    """Content hash of a build's inputs: an image labelled with it is up to date, so a warm run
    skips `docker build` (whose cache check would re-hash gigabytes of COPY --from layers)."""
    h = hashlib.sha256(extra.encode())
    for root in paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
                h.update(f.read_bytes() if f.stat().st_size < 1 << 20 else str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def _up_to_date(ref: str, digest: str) -> bool:
    res = subprocess.run(["docker", "image", "inspect", "--format", '{{index .Config.Labels "ferry.inputs"}}', ref],
                         env=docker_env(), capture_output=True, text=True, timeout=30)
    return res.returncode == 0 and res.stdout.strip() == digest


def build_kafka_image() -> str:
    from shared.devtools.kafka_broker import KAFKA_VERSION, ensure_artifacts

    base = ensure_base("ferry-base-jre")
    libs = ensure_artifacts()
    ref = f"ferry-kafka:{KAFKA_VERSION}"
    digest = _inputs_hash(ROOT / "deploy/images/kafka.Dockerfile", ROOT / "deploy/images/kafka_entrypoint.py",
                          ROOT / "shared/topics.py", ROOT / "shared/kafka_acls.py", libs, extra=base)
    if _up_to_date(ref, digest):
        return ref
    with tempfile.TemporaryDirectory(prefix="ferry-kafka-ctx-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(libs, ctx / "libs", ignore=shutil.ignore_patterns(".*"))
        (ctx / "shared").mkdir()
        for f in ("__init__.py", "topics.py", "kafka_acls.py"):
            shutil.copy(ROOT / "shared" / f, ctx / "shared" / f)
        shutil.copy(ROOT / "deploy/images/kafka_entrypoint.py", ctx / "kafka_entrypoint.py")
        _run(["docker", "build", "--force-rm", "--network", "host", "-t", ref, "--build-arg", f"BASE={base}",
              "--label", f"ferry.inputs={digest}", "-f", str(ROOT / "deploy/images/kafka.Dockerfile"), str(ctx)],
             timeout=1800, env=docker_env())
    return ref


def torch_requirement() -> str:
    """pyproject.toml's torch requirement (e.g. "torch>=2.4,<3"), the deps stage's first layer."""
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in dependencies if re.match(r"torch\s*([<>=~!;\[]|$)", r))


def build_ferry_image(torch_index_url: str = "") -> str:
    base = ensure_base("ferry-base-python")
    digest = _inputs_hash(ROOT / "deploy/Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml",
                          ROOT / "README.md", ROOT / "shared", ROOT / "services", extra=f"{base}:{torch_index_url}")
    if _up_to_date("ferry:latest", digest):
        return "ferry:latest"
    replaced = _image_id("ferry:latest")
    _run(["docker", "build", "--force-rm", "--network", "host", "-t", "ferry:latest", "--build-arg", f"BASE={base}",
          "--build-arg", f"TORCH_INDEX_URL={torch_index_url}", "--build-arg", f"TORCH_SPEC={torch_requirement()}",
          "--label", f"ferry.inputs={digest}",
          "-f", str(ROOT / "deploy/Dockerfile"), str(ROOT)], timeout=3600, env=docker_env())
    if replaced and replaced != _image_id("ferry:latest"):
        # The image a rebuild replaced: each one held its own copy of the deps venv (gigabytes),
        # and a machine that rebuilds after every change filled its disk with them. Removing it by
        # id leaves the build cache of the deps stage alone (`docker image prune` would not: it
        # would cost the next build a fresh torch download). Refused when something still uses it.
        subprocess.run(["docker", "rmi", replaced], env=docker_env(), capture_output=True, timeout=120)
    return "ferry:latest"


def _image_id(ref: str) -> str | None:
    res = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], env=docker_env(),
                         capture_output=True, text=True, timeout=30)
    return res.stdout.strip() or None if res.returncode == 0 else None


def build_all(torch_index_url: str = "") -> dict[str, float]:
    """Build (or reuse) every image compose needs; returns seconds per step."""
    times = {}
    for name, step in (("kafka", build_kafka_image), ("ferry", lambda: build_ferry_image(torch_index_url))):
        t0 = time.monotonic()
        step()
        times[name] = round(time.monotonic() - t0, 1)
    return times


def compose_pki(directory: Path) -> Path:
    """Development certificates for the stack, readable by the containers' user (65534)."""
    from shared.pki import dev_pki

    dev_pki(directory)
    # The CA key never goes into a container: it would let a compromised service mint identities.
    if (directory / "ca.key").exists():
        os.replace(directory / "ca.key", directory.parent / f"{directory.name}-ca.key")
    for path in [directory, *directory.iterdir()]:
        os.chown(path, 65534, 65534)
    return directory


def compose(project: str, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = ["docker-compose", "-p", project, "-f", str(ROOT / "docker-compose.yml"), *args]
    return _run(cmd, timeout=timeout, env={**docker_env(), **env}, cwd=ROOT)


def stack_up(project: str = "ferry", pki: Path | None = None, env: dict[str, str] | None = None,
             torch_index_url: str = "") -> dict[str, str]:
    """dockerd, images, PKI, then `docker-compose up -d --wait`-alike (compose 1.29 has no
    --wait: it starts each service once its dependencies are healthy; then we wait for all)."""
    dockerd_up()
    build_all(torch_index_url)
    pki = compose_pki(pki or ROOT / ".ferry-compose" / "pki")
    env = {"STACK_PKI": str(pki), **(env or {})}
    compose(project, env, "up", "-d", "--no-build", timeout=900)
    wait_healthy(project, env)
    return env


def wait_healthy(project: str, env: dict[str, str], timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        ids = compose(project, env, "ps", "-q").stdout.split()
        states = _run(["docker", "inspect", "--format", "{{.Name}} {{.State.Status}} "
                       "{{if .State.Health}}{{.State.Health.Status}}{{end}}", *ids],
                      timeout=30, env=docker_env()).stdout.splitlines() if ids else []
        if len(states) == 4 and all(line.endswith(" healthy") for line in states):
            return
        if time.monotonic() > deadline:
            logs = compose(project, env, "logs", "--tail", "40").stdout[-6000:]
            raise ContainerError(f"stack not healthy after {timeout_s:.0f}s: {states}\n{logs}")
        time.sleep(2)


def stack_down(project: str = "ferry", env: dict[str, str] | None = None) -> None:
    env = {"STACK_PKI": str(ROOT / ".ferry-compose" / "pki"), **(env or {})}
    compose(project, env, "down", "-v", "--remove-orphans", "--timeout", "20", timeout=300)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.devtools.containers", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("dockerd-up", help="start the private Docker daemon (prints its PID)")
    sub.add_parser("dockerd-down", help="stop it by PID")
    b = sub.add_parser("build", help="build the base, Kafka and Ferry images (cached)")
    b.add_argument("--torch-index-url", default=os.environ.get("FERRY_TORCH_INDEX_URL", ""),
                   help="pip index for torch, e.g. a CPU-only wheel index (default: PyPI)")
    sub.add_parser("env", help="print DOCKER_HOST for docker / docker-compose")
    sub.add_parser("up", help="dockerd + images + certificates + docker-compose up, waits until healthy")
    sub.add_parser("down", help="docker-compose down -v, then stop dockerd")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "dockerd-up":
            print(dockerd_up())
        elif args.cmd == "dockerd-down":
            print("stopped" if dockerd_down() else "not running")
        elif args.cmd == "build":
            dockerd_up()
            print(json.dumps(build_all(args.torch_index_url)))
        elif args.cmd == "up":
            stack_up()
            print("ferry stack healthy: monitor http://127.0.0.1:8083, Kafka 127.0.0.1:9094 (TLS, "
                  f"certificates in {ROOT / '.ferry-compose' / 'pki'})")
        elif args.cmd == "down":
            if _ping():
                stack_down()
            dockerd_down()
        else:
            print(f"export DOCKER_HOST=unix://{SOCKET}")
    except (ContainerError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
