"""Helpers shared by the benchmarks: data preparation for N parties, flow documents, statistics.

`prepare_parties` generalises services.demo.prepare_parties: any dataset source
(sklearn:NAME, synthetic:SPEC, ...), any party names and count, IID or Dirichlet
label skew, and an optional pooled party holding every row. The `split` column
(1 = held-out test row) is chosen before partitioning, so every party and the
pooled baseline evaluate on the same rows; the union of the parties' test rows
is exactly the pooled test set.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------- data


@lru_cache(maxsize=8)
def load_table(source: str):
    """The Table of a dataset source, loaded once per process."""
    from services.executor.data.importers import load_source

    return load_source(source)


@dataclass(frozen=True)
class PartitionInfo:
    scheme: str
    alpha: float
    seed: int                       # the partition seed actually used (see prepare_parties)
    train_rows: tuple[int, ...]     # per party
    test_rows: tuple[int, ...]
    label_skew: float               # mean TV distance of party label mix vs pooled (0 = IID)

    def as_json(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "alpha": self.alpha, "seed": self.seed,
                "train_rows": list(self.train_rows), "test_rows": list(self.test_rows),
                "label_skew": round(self.label_skew, 4)}


def split_parties(table, n_parties: int, *, scheme: str, alpha: float, seed: int,
                  min_train_rows: int = 8, max_tries: int = 100) -> tuple[list[np.ndarray], int]:
    """Row indices per party, and the seed that produced them.

    Dirichlet draws can leave a party with (almost) no *training* rows once the
    test rows are set aside (services' split_rows only guarantees one row in
    total, and exposes no min_size), and a client without training rows fails
    its step. So: redraw with seed, seed+1, ... until every party has at least
    `min_train_rows` training rows; deterministic for a given seed.
    """
    from services.executor.data import partition

    labels = np.asarray(table.columns[table.schema.label])
    is_test = np.asarray(table.columns["split"]) == 1
    for s in range(seed, seed + max_tries):
        if scheme == "iid":
            parts = partition.iid(table.n_rows, n_parties, s)
        elif scheme == "dirichlet":
            parts = partition.dirichlet(labels, n_parties, alpha, s, min_size=min_train_rows)
        else:
            raise ValueError(f"unknown scheme {scheme!r}")
        if min(int((~is_test[p]).sum()) for p in parts) >= min_train_rows:
            partition.check_partition(parts, table.n_rows)
            return parts, s
    raise RuntimeError(f"{scheme}: no partition with {min_train_rows} training rows per party "
                       f"in {max_tries} seeds from {seed}")


def prepare_parties(work_dir: Path, parties: Sequence[str], dataset: str, source: str, *,
                    scheme: str = "iid", alpha: float = 0.5, seed: int = 7, test_fraction: float = 0.2,
                    pooled: str | None = None, min_train_rows: int = 8, table=None) -> PartitionInfo:
    """Write each party's share of `source` (as dataset `dataset`) into its store under work_dir,
    and, when `pooled` names a party, every row into that party's store. `table`, when given, is
    the source already loaded with its `split` column (e.g. validation rows held out as well)."""
    from services.executor.data import partition
    from services.executor.data.importers import put_table, with_test_split
    from services.scheduler.adapters.launchers import party_dirs

    if table is None:
        table = with_test_split(load_table(source), test_fraction, seed)
    labels = np.asarray(table.columns[table.schema.label])
    is_test = np.asarray(table.columns["split"]) == 1
    parts: list[np.ndarray] = []
    used_seed = seed
    if parties:
        parts, used_seed = split_parties(table, len(parties), scheme=scheme, alpha=alpha, seed=seed,
                                         min_train_rows=min_train_rows)
        for i, (party, rows) in enumerate(zip(parties, parts)):
            info = {"source": source, "partition": {"scheme": scheme, "alpha": alpha, "seed": used_seed,
                                                    "party": party, "index": i, "of": len(parties)}}
            put_table(party_dirs(work_dir, party)["data"], dataset, table.take(rows), attrs=info)
    if pooled:
        put_table(party_dirs(work_dir, pooled)["data"], dataset, table, attrs={"source": source})
    return PartitionInfo(scheme, alpha, used_seed,
                         tuple(int((~is_test[p]).sum()) for p in parts),
                         tuple(int(is_test[p].sum()) for p in parts),
                         partition.label_skew(labels, parts) if parts else 0.0)


# --------------------------------------------------------------------------------------- flows

TRAIN_KEYS = ("model", "hidden", "rounds", "local_epochs", "batch_size", "lr", "optimizer", "seed")


def training_params(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The shared hyper-parameters both ferry.fedavg and ferry.centralized take."""
    return {k: hp[k] for k in TRAIN_KEYS if k in hp}


def federated_steps(name: str, clients: Sequence[str], aggregator: str, hp: Mapping[str, Any], *,
                    strategy: str = "fedavg", mu: float = 0.0, depends_on: Sequence[str] = ()) -> dict:
    params = {**training_params(hp), "strategy": strategy, "min_clients": len(clients)}
    if strategy == "fedprox":
        params["mu"] = mu
    step = {"name": name, "algorithm": "ferry.fedavg", "version": "1", "params": params,
            "parties": {"client": list(clients), "aggregator": aggregator}}
    if depends_on:
        step["depends_on"] = list(depends_on)
    return step


def standardise_step(name: str, clients: Sequence[str], aggregator: str) -> dict:
    return {"name": name, "algorithm": "ferry.standardise", "version": "1",
            "parties": {"client": list(clients), "aggregator": aggregator}}


def centralized_step(name: str, trainer: str, hp: Mapping[str, Any], depends_on: Sequence[str] = ()) -> dict:
    step = {"name": name, "algorithm": "ferry.centralized", "version": "1", "params": training_params(hp),
            "parties": {"trainer": trainer}}
    if depends_on:
        step["depends_on"] = list(depends_on)
    return step


async def run_flow(work_dir: Path, document: Mapping[str, Any], flow_id: str, timeout_s: float = 900.0) -> dict:
    """Runs one flow document on a fresh EmbeddedPlatform over work_dir; returns the monitor's view."""
    from services.embedded import EmbeddedPlatform
    from services.splitter.core.flow_document import parse_flow_document

    flow = parse_flow_document(dict(document), default_flow_id=flow_id)
    async with EmbeddedPlatform(work_dir) as platform:
        await platform.submit(flow)
        return await platform.wait_for(flow.flow_id, timeout_s=timeout_s)


def step_metrics(view: Mapping[str, Any], step: str, role: str) -> dict[str, float]:
    task = next(t for t in view["tasks"] if t["step"] == step)
    algo = next(a for a in task["algorithm_tasks"] if a["role"] == role)
    return dict(algo["metrics"])


# ---------------------------------------------------------------------------------- statistics


def two_proportion_p_value(acc_a: float, acc_b: float, n: int) -> float:
    """Two-sided p-value that two accuracies on n rows each differ (normal approximation);
    the same test services.demo reports. It treats the two samples as independent."""
    pooled = (acc_a + acc_b) / 2
    se = math.sqrt(max(pooled * (1 - pooled) * 2 / n, 1e-12))
    return math.erfc(abs(acc_a - acc_b) / se / math.sqrt(2))


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (b: only A right, c: only B right).
    The right test for two models scored on the *same* rows."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else float("nan")


# ------------------------------------------------------------------------------------- output


def provenance() -> dict[str, Any]:
    """Top-level `commit` and `clean_tree` of a result: a number from a dirty tree is not reproducible
    from its commit alone. bench/results/ itself is ignored (a bench rewrites its own JSON)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = [line for line in git("status", "--porcelain").splitlines() if "bench/results/" not in line]
    return {"commit": git("rev-parse", "HEAD").strip(), "clean_tree": not changed}


def machine() -> dict[str, Any]:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=5, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        clean_tree = not dirty
    except (OSError, subprocess.SubprocessError):
        commit, clean_tree = "", False
    return {"clean_tree": clean_tree, "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "cpus": os.cpu_count(), "platform": platform.platform(), "commit": commit,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
