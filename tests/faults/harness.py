"""What a fault trial needs: a seeded plan, a training flow, and the comparison with an uninterrupted run.

A trial runs one federated training flow on the platform (OS processes, real
broker), does one fault at a point drawn from its seed, lets the platform
recover, and compares the outcome with a reference run of the same flow that
nobody disturbed:
- the final status of the flow, its task and every algorithm task;
- their histories: the statuses each entity went through (applied records), with
  SCHEDULED left out because even an undisturbed run may skip it (the runner's
  "running" can overtake the scheduler's "job created"); an executor kill adds
  exactly the retry of the killed member (RETRYING, then RUNNING again);
- every party's model arrays, byte for byte (the .npz files differ in zip times);
- no transition applied twice: no entity has the same (from, to, attempt)
  applied twice, and no attempt was dispatched twice (ferry.jobs).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.e2e.platform import Platform

CLIENTS = ("hospital-a", "hospital-b", "hospital-c")
ROUNDS = 8
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def training_flow() -> dict:
    return {"flow": "faults",
            "parties": {**{h: {"data": "breast_cancer"} for h in CLIENTS}, "coordinator": {}},
            "steps": [{"name": "train", "algorithm": "ferry.fedavg", "version": "1",
                       "params": {"model": "logreg", "rounds": ROUNDS, "local_epochs": 1, "batch_size": 32,
                                  "lr": 0.01, "optimizer": "sgd", "strategy": "fedavg", "min_clients": 3,
                                  "seed": 7, "round_timeout_s": 60},
                       "parties": {"client": list(CLIENTS), "aggregator": "coordinator"}}]}


@dataclass
class Plan:
    """One trial's fault, drawn from its seed (printed with every failure)."""

    seed: int
    target: str
    kill_after_s: float
    down_s: float
    victim_index: int

    @classmethod
    def draw(cls, seed: int, target: str, window_s: float) -> "Plan":
        rng = random.Random(seed)
        return cls(seed, target, rng.uniform(0.0, window_s), rng.uniform(0.0, 1.5), rng.randrange(4))

    def describe(self) -> str:
        return (f"seed={self.seed} target={self.target} kill_after_s={self.kill_after_s:.2f} "
                f"down_s={self.down_s:.2f} victim_index={self.victim_index}; reproduce with "
                f"FERRY_FAULTS_SEED={self.seed} pytest tests/faults -k {self.target}")


@dataclass
class Outcome:
    flow_id: str
    statuses: dict[str, str]
    histories: dict[str, list[tuple]]
    models: dict[str, dict[str, bytes]] = field(default_factory=dict)


def models(work_dir: Path, flow_id: str) -> dict[str, dict[str, bytes]]:
    """party -> array name -> bytes (dtype and shape in the name), of every .npz the flow left."""
    out: dict[str, dict[str, bytes]] = {}
    for path in sorted((work_dir / "parties").glob(f"*/artifacts/{flow_id}/*.npz")):
        party = path.parts[-4]
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                array = npz[key]
                out.setdefault(party, {})[f"{path.name}:{key}:{array.dtype}:{array.shape}"] = array.tobytes()
    return out


def outcome(platform: Platform, flow_id: str) -> Outcome:
    view = platform.flow(flow_id)
    statuses = {"flow": view["status"]}
    histories = {"flow": _applied(platform.history("flows", flow_id))}
    for task in view["tasks"]:
        statuses[task["step"]] = task["status"]
        histories[task["step"]] = _applied(platform.history("tasks", task["task_id"]))
        for algo in task["algorithm_tasks"]:
            name = f"{algo['party']}/{algo['role']}"
            statuses[name] = algo["status"]
            histories[name] = _applied(platform.history("algorithm-tasks", algo["algo_task_id"]))
    return Outcome(flow_id, statuses, histories, models(platform.work_dir, flow_id))


def _applied(records: list[dict]) -> list[tuple]:
    return [(r["from_status"], r["to_status"], r["attempt"]) for r in records if r["outcome"] == "applied"]


def path_of(history: list[tuple]) -> list[str]:
    return [to for _, to, _ in history if to != "SCHEDULED"]


def without_one_retry(path: list[str]) -> list[str]:
    """The path with the retry of a killed executor taken out: ... RUNNING RETRYING (RUNNING) ..."""
    if "RETRYING" not in path:
        return path
    i = path.index("RETRYING")
    rest = path[i + 1:]
    if rest[:1] == ["RUNNING"] and path[i - 1:i] == ["RUNNING"]:
        rest = rest[1:]
    return path[:i] + rest


def compare(reference: Outcome, got: Outcome, plan: Plan, retried: str | None = None) -> list[str]:
    """What differs from the reference, as readable lines (empty: equal)."""
    problems = []
    if got.statuses != reference.statuses:
        problems.append(f"final statuses {got.statuses} != {reference.statuses}")
    for name, history in got.histories.items():
        seen = [h for h in history]
        if len(set(seen)) != len(seen):
            problems.append(f"{name}: a transition applied twice: {history}")
        expected = path_of(reference.histories.get(name, []))
        path = path_of(history)
        if name == retried:
            if path.count("RETRYING") != 1:
                problems.append(f"{name}: expected one retry after the kill, got {path}")
            path = without_one_retry(path)
        elif retried is not None and "/" not in name:  # the member's task and flow reflect its retry
            path = without_one_retry(path)
        if path != expected:
            problems.append(f"{name}: went through {path}, the uninterrupted run through {expected}")
    if got.models.keys() != reference.models.keys():
        problems.append(f"parties with models {sorted(got.models)} != {sorted(reference.models)}")
    for party, arrays in reference.models.items():
        mine = got.models.get(party, {})
        if {k.split(':', 1)[1] for k in mine} != {k.split(':', 1)[1] for k in arrays} or \
                sorted(mine.values()) != sorted(arrays.values()):
            problems.append(f"{party}: model bytes differ from the uninterrupted run")
    return [f"[{plan.describe()}] {p}" for p in problems]


def dispatched_twice(job_events: list[Any], flow_id: str) -> list[str]:
    """(algo task, attempt) pairs ferry.jobs says were created more than once."""
    from shared.events import JobAction

    counts: dict[tuple[str, int], int] = {}
    for event in job_events:
        if event.flow_id == flow_id and event.action == JobAction.CREATED:
            counts[(event.algo_task_id, event.attempt)] = counts.get((event.algo_task_id, event.attempt), 0) + 1
    return [f"{a} attempt {n} created {c} times" for (a, n), c in counts.items() if c > 1]
