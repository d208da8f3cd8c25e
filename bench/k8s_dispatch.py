"""Kubernetes dispatch at scale: many parties x a 3-step flow as Jobs on a real control plane.

Starts the development cluster (shared/devtools/k8s_cluster.py: real etcd, kube-apiserver,
controller manager and scheduler; kwok plays one node per party), then runs one flow of
three steps over every party: each step is one Job per party, dispatched by the scheduler's
KubernetesRunner, and the next step starts when its KubernetesWatcher has reported every Job
of the previous step SUCCEEDED. Parties are spread over --namespaces namespaces (the watcher
holds two watches per namespace).

Keys: jobs_per_s (Jobs created per second of dispatching, all waves), parties, completed
(Jobs observed SUCCEEDED), watch_lag_p99_s (observation time minus the Job's completionTime;
Kubernetes writes that in whole seconds, truncated, so each lag is an upper bound that may
overstate the true lag by up to 1 s), flow_s (wall time of the 3 steps), plus commit, clean_tree.

    python bench/k8s_dispatch.py [--quick] [--parties N] [--namespaces N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine, table, write_json  # noqa: E402
from services.scheduler.adapters.kubernetes import KubeApi, KubernetesRunner  # noqa: E402
from services.scheduler.adapters.node_registry import parse_node_registry  # noqa: E402
from shared.devtools.k8s_cluster import Cluster, ensure_binaries  # noqa: E402
from shared.devtools.k8s_nodes import admin_client, create_kwok_nodes, ensure_namespaces  # noqa: E402
from shared.events import AlgorithmTaskSpec, Observation, Phase, Peer  # noqa: E402

STEPS = ("prepare", "train", "evaluate")


def clean_tree() -> bool:
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    return status.returncode == 0 and not status.stdout.strip()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def run(parties: int, namespaces: int, concurrency: int, folder: Path) -> dict:
    cluster = Cluster(folder, ensure_binaries(lambda m: print(m, file=sys.stderr)), log=lambda m: None)
    started = time.monotonic()
    cluster.start()
    startup_s = time.monotonic() - started
    try:
        admin = await admin_client(cluster.state)
        names = [f"party-{i:04d}" for i in range(parties)]
        spaces = [f"bench-{i:02d}" for i in range(namespaces)]
        await ensure_namespaces(admin, spaces)
        await create_kwok_nodes(admin, names, timeout_s=300)
        registry = parse_node_registry({"parties": {
            p: {"namespace": spaces[i % namespaces],
                "node_affinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "ferry.io/party", "operator": "In", "values": [p]}]}]}}}
            for i, p in enumerate(names)}})
        done: dict[str, float] = {}
        objects: dict[str, str] = {}
        waiting: dict[str, asyncio.Event] = {}

        async def sink(obs: Observation) -> None:
            if obs.phase == Phase.SUCCEEDED and obs.algo_task_id not in done:
                done[obs.algo_task_id] = time.time()
                objects[obs.algo_task_id] = obs.object_name
                event = waiting.get(obs.task_id)
                if event and sum(1 for a in done if a.startswith(obs.task_id + ".")) == parties:
                    event.set()

        runner = KubernetesRunner(KubeApi(await admin_client(cluster.state)), registry, "ferry-executor:bench",
                                  observe=sink)
        await runner.start()
        gate = asyncio.Semaphore(concurrency)

        async def dispatch(spec: AlgorithmTaskSpec) -> None:
            async with gate:
                await runner.dispatch(spec)

        dispatch_s, rows = 0.0, []
        flow_started = time.monotonic()
        for step in STEPS:
            task_id = f"bench.{step}"
            waiting[task_id] = asyncio.Event()
            specs = [AlgorithmTaskSpec(f"{task_id}.{p}", task_id, "bench", step, "ferry.noop", "1", {}, p, "client",
                                       (Peer(p, "client"),)) for p in names]
            t0 = time.monotonic()
            await asyncio.gather(*(dispatch(s) for s in specs))
            wave = time.monotonic() - t0
            dispatch_s += wave
            await asyncio.wait_for(waiting[task_id].wait(), timeout=max(120, parties))
            rows.append((step, parties, f"{wave:.2f}", f"{parties / wave:.1f}", f"{time.monotonic() - t0:.2f}"))
        flow_s = time.monotonic() - flow_started
        await runner.close()

        # completionTime of every Job, to compare with when the watcher reported it.
        lags = []
        from kubernetes_asyncio import client as k8s
        batch = k8s.BatchV1Api(admin)
        completed_at: dict[tuple[str, str], dt.datetime] = {}
        for ns in spaces:
            for job in (await batch.list_namespaced_job(ns, label_selector="ferry.io/flow=bench")).items:
                if job.status.completion_time:
                    completed_at[job.metadata.name] = job.status.completion_time
        for algo_task_id, seen in done.items():
            finished = completed_at.get(objects[algo_task_id])
            if finished is not None:
                lags.append(seen - finished.timestamp())
        await admin.close()
    finally:
        cluster.stop()
    total = parties * len(STEPS)
    print(table(("step", "jobs", "dispatch_s", "jobs_per_s", "step_s"), rows))
    return {"jobs_per_s": round(total / dispatch_s, 1), "parties": parties, "completed": len(done),
            "watch_lag_p99_s": round(percentile(lags, 99), 3), "watch_lag_p50_s": round(percentile(lags, 50), 3),
            "lag_timestamp_resolution_s": 1.0, "jobs": total, "namespaces": namespaces, "steps": len(STEPS),
            "flow_s": round(flow_s, 1), "cluster_start_s": round(startup_s, 1), "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 parties (under a minute once built)")
    parser.add_argument("--parties", type=int, default=500)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32, help="Job creations in flight")
    args = parser.parse_args()
    parties = 40 if args.quick else args.parties
    namespaces = min(args.namespaces, 4) if args.quick else args.namespaces
    with tempfile.TemporaryDirectory(prefix="ferry-k8s-bench-") as folder:
        result = asyncio.run(run(parties, namespaces, args.concurrency, Path(folder)))
    info = machine()
    payload = {**result, "commit": info["commit"], "clean_tree": clean_tree(), "quick": args.quick, "machine": info}
    out = ROOT / "bench" / "results" / "k8s_dispatch.json"
    write_json(out, payload)
    print({k: payload[k] for k in ("jobs_per_s", "parties", "completed", "watch_lag_p99_s", "flow_s")})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
