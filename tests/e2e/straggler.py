"""A federation with one straggler: hospital-c holds five times the rows of the others.

Shared by tests/e2e/test_fedbuff_kafka.py and bench/fedbuff.py. Five times the rows
make each of its local epochs five times as long: the slow party of a real
federation (a big hospital), not an injected sleep. The coordinator holds rows of
its own that no client trains on, so the aggregator scores every version of the
global model on them (server_accuracy) in either aggregation mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS = {"hospital-a": 500, "hospital-b": 500, "hospital-c": 2500}
SLOW = "hospital-c"
# Local epochs per version: enough that training, not the model's round trip over Kafka (~0.1 s),
# is the bulk of a round, so hospital-c's rounds really take about five times as long. With one
# epoch the straggler was only ~2x slower in wall time (CI saw the fast parties train 1.4x as
# many versions as it).
LOCAL_EPOCHS = 4
SERVER_ROWS = 1000
SOURCE = "synthetic:n_rows=5000,n_features=16,n_classes=3,seed=5,separation=0.7"


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


def straggler_flow(aggregation: str, rounds: int, *, buffer_size: int = 2, max_staleness: int = 6,
                   lr: float = 0.05, local_epochs: int = LOCAL_EPOCHS) -> dict:
    params = {"model": "mlp", "hidden": 128, "rounds": rounds, "local_epochs": local_epochs, "batch_size": 16, "lr": lr,
              "optimizer": "sgd", "strategy": "fedavg", "min_clients": 3, "seed": 3, "aggregation": aggregation,
              "async_buffer_size": buffer_size, "async_max_staleness": max_staleness, "round_timeout_s": 120}
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
