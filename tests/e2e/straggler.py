"""A federation with one straggler: hospital-c's node has a fifth of the others' CPU.

Shared by tests/e2e/test_fedbuff_kafka.py and bench/fedbuff.py. The three
clients hold the same number of rows, drawn IID from one distribution; what
differs is their hardware, the setting FedBuff (Nguyen et al. 2022) is about:
the local runner limits each executor's CPU with a cgroup quota
(FERRY_SCHEDULER__LOCAL_CPU_LIMITS, the local form of resources.limits.cpu in
the Kubernetes node registry), 500m for the fast parties and 100m for
hospital-c, so everything hospital-c does (training, and its share of the
data plane: decoding, signing) runs at a fifth of their speed. No injected
sleep, and the slow party holds no more of the data than anyone else, so down-
weighting its stale updates costs the model nothing it could not get from the
others. Executors fork from the zygote (adapters/zygote.py): otherwise
hospital-c would spend half a minute importing torch at 0.1 CPU before each flow.

The task is chosen to need many rounds: ten classes in 32 features with
Gaussian class centres only 0.5 noise standard deviations apart (separation),
one local epoch per round at lr 0.01. The settings were picked on a validation
draw of the data (seed 11, a centralised simulation of the same FedAvg) so
that synchronous accuracy still climbs after ten rounds (0.383 after one round,
0.825 after ten, 0.855 after twenty); the flows here run on seed 5.
The coordinator holds rows of its own that no client trains on, so the
aggregator scores every version of the global model on them (server_accuracy)
in either aggregation mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROWS = {"hospital-a": 1000, "hospital-b": 1000, "hospital-c": 1000}
SLOW = "hospital-c"
CPU_LIMITS = {"hospital-a": "500m", "hospital-b": "500m", "hospital-c": "100m"}
# For every service of the platform: the scheduler reads the limits, and forks executors from a zygote.
PLATFORM_ENV = {"FERRY_SCHEDULER__LOCAL_CPU_LIMITS": json.dumps(CPU_LIMITS), "FERRY_SCHEDULER__ZYGOTE": "true"}
LOCAL_EPOCHS = 1
LR = 0.01
SERVER_ROWS = 1000
SOURCE = "synthetic:n_rows=5000,n_features=32,n_classes=10,seed=5,separation=0.5"


def prepare_straggler_parties(work_dir: Path) -> None:
    from services.executor.data.importers import load_source, put_table, with_test_split
    from services.scheduler.adapters.launchers import party_dirs

    table = with_test_split(load_source(SOURCE), 0.15, 7)
    order = np.random.default_rng(0).permutation(table.n_rows)  # which rows go where: test data, no secret
    start = 0
    for party, n in (*ROWS.items(), ("coordinator", SERVER_ROWS)):
        target = party_dirs(work_dir, party)["data"]
        target.parent.mkdir(parents=True, exist_ok=True)
        put_table(target, "synth", table.take(np.sort(order[start:start + n])))
        start += n


def straggler_flow(aggregation: str, rounds: int, *, buffer_size: int = 2, max_staleness: int = 12,
                   lr: float = LR, local_epochs: int = LOCAL_EPOCHS) -> dict:
    """max_staleness: while hospital-c trains one update (five fast updates' time) the two fast
    parties make about five versions; twelve leaves room for load without refusing its work."""
    params = {"model": "mlp", "hidden": 128, "rounds": rounds, "local_epochs": local_epochs, "batch_size": 16, "lr": lr,
              "optimizer": "sgd", "strategy": "fedavg", "min_clients": 3, "seed": 3, "aggregation": aggregation,
              "async_buffer_size": buffer_size, "async_max_staleness": max_staleness, "round_timeout_s": 300}
    return {"flow": f"straggler-{aggregation}",
            "parties": {**{p: {"data": "synth"} for p in ROWS}, "coordinator": {"data": "synth"}},
            "steps": [{"name": "train", "algorithm": "ferry.fedavg", "version": "1", "params": params,
                       "parties": {"client": list(ROWS), "aggregator": "coordinator"}}]}


def round_series(platform, flow_id: str) -> dict[str, list[dict]]:
    """party -> its round points (the aggregator's under 'coordinator') from the monitor's history."""
    rounds = platform.get(f"/tasks/{flow_id}.train/rounds")
    return {s["party"]: s["rounds"] for s in rounds["series"]}


def trained_versions(points: list[dict]) -> int:
    """Versions a client trained on (a client also scores each model it receives, under the
    previous round: those points carry no train_s)."""
    return sum("train_s" in p["metrics"] for p in points)


def accuracy_curve(series: dict[str, list[dict]]) -> list[tuple[int, float, float]]:
    """(version, seconds since the first version started, server_accuracy) from the aggregator's
    own round_s: the time the flow spent on versions, the same clock in both modes."""
    elapsed, curve = 0.0, []
    for p in series["coordinator"]:
        if "round_s" in p["metrics"]:
            elapsed += p["metrics"]["round_s"]
            curve.append((p["round"], round(elapsed, 3), p["metrics"]["server_accuracy"]))
    return curve


def time_to(curve, target: float, after_first: bool = False) -> float | None:
    """Seconds until the first version at or above target (from the end of version 1 if after_first);
    None if it never got there."""
    origin = curve[0][1] if after_first else 0.0
    return next((round(t - origin, 3) for _, t, acc in curve if acc >= target), None)
