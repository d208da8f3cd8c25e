"""docker-compose on real Docker: locally built images (nothing pulled), the stack comes up
healthy without a restart, a flow submitted from the host over TLS ends SUCCEEDED, and
`down` leaves no container, network or volume behind.

The first run on a machine builds the base images (debootstrap), the Kafka image and the
Ferry image (torch included) into ~/.cache/ferry: slow once (see README "Deploying").
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from shared.devtools import containers

ROOT = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], env=containers.docker_env(), capture_output=True, text=True,
                          timeout=60, check=True).stdout


def test_compose_stack_comes_up_healthy_and_runs_a_flow_from_the_host(tmp_path: Path) -> None:
    project = f"ferrytest{uuid.uuid4().hex[:6]}"
    kafka_port, splitter_port, scheduler_port, monitor_port = _free_ports(4)
    env = {"STACK_KAFKA_PORT": str(kafka_port), "STACK_SPLITTER_PORT": str(splitter_port),
           "STACK_SCHEDULER_PORT": str(scheduler_port), "STACK_MONITOR_PORT": str(monitor_port)}
    pki = tmp_path / "pki"
    dockerd_was_running = containers._ping()
    try:
        env = containers.stack_up(project, pki=pki, env=env)
        ids = _docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").split()
        inspect = _docker("inspect", "--format", "{{.Name}} {{.RestartCount}} {{.Config.User}} "
                                                 "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}"
                                                 "{{.HostIp}} {{end}}{{end}}", *ids).splitlines()
        assert len(inspect) == 4, inspect
        for line in inspect:
            name, restarts, user, *host_ips = line.split()
            assert restarts == "0", f"{name} restarted {restarts} times"
            assert user == "65534:65534", f"{name} runs as {user!r}"
            assert host_ips and set(host_ips) == {"127.0.0.1"}, f"{name} publishes on {host_ips}"

        flow_id = f"compose-{uuid.uuid4().hex[:8]}"
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_KAFKA__")}
        client_env |= {"FERRY_KAFKA__TLS_CA_FILE": str(pki / "ca.crt"), "FERRY_KAFKA__TLS_CERT_DIR": str(pki)}
        submit = subprocess.run([sys.executable, "-m", "services.cli", "flow", "submit",
                                 str(ROOT / "examples/flows/noop.yaml"), "--id", flow_id,
                                 "--bootstrap", f"127.0.0.1:{kafka_port}"],
                                cwd=ROOT, env=client_env, capture_output=True, text=True, timeout=120)
        assert submit.returncode == 0, submit.stdout + submit.stderr

        deadline, view = time.monotonic() + 180, {}
        while time.monotonic() < deadline:
            response = httpx.get(f"http://127.0.0.1:{monitor_port}/flows/{flow_id}", timeout=5)
            if response.status_code == 200:
                view = response.json()
                if view["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    break
            time.sleep(1)
        logs = "" if view.get("status") == "SUCCEEDED" else \
            containers.compose(project, env, "logs", "--tail", "60").stdout[-8000:]
        assert view.get("status") == "SUCCEEDED", f"{view}\n{logs}"
    finally:
        try:
            containers.stack_down(project, env)
        finally:
            left = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").split()
            volumes = [v for v in _docker("volume", "ls", "-q").split() if v.startswith(project)]
            networks = [n for n in _docker("network", "ls", "--format", "{{.Name}}").split()
                        if n.startswith(project)]
            if not dockerd_was_running:
                containers.dockerd_down()
    assert left == [] and volumes == [] and networks == [], (left, volumes, networks)
    if not dockerd_was_running:
        assert not containers._ping()
