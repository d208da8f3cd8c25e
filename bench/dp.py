"""Accuracy vs epsilon of DP-FedAvg (ferry.fedavg with dp=central), 3 parties, on the embedded platform.

    python bench/dp.py [--quick] [--jobs N] [--out PATH]

For digits and breast_cancer, split IID over three parties (held-out rows chosen
before partitioning, as in bench/fed_vs_centralized.py), one flow holds:
standardise -> one ferry.fedavg step per target epsilon, plus the same step without
DP. Every DP step names dp_target_epsilon; the executor's accountant (Opacus RDP,
services/executor/ml/privacy_accounting.py) picks the noise multiplier and reports
the epsilon actually spent, which is the `epsilon` of each row (never the target).
Accuracy is the global model's on the parties' held-out rows (their union is the
pooled test set).

Hyper-parameters are fixed in advance (DP_HP below; not tuned on anything, and
certainly not on the reported rows): the fed-vs-centralized bench's per-dataset
batch size and learning rate, but few rounds of long local training (5 rounds x 5
local epochs: every round is one more Gaussian mechanism to pay for, while local
epochs are free) and clip C = 1.

Noise is drawn from the OS CSPRNG, so reruns differ: each flow is repeated
`repeats` times (3 full, 1 quick) and rows report the median accuracy (and the
spread). The guarantee is party-level (zero-out neighbouring) and covers the
training step only: ferry.standardise releases per-feature moments without noise.

Writes bench/results/dp.json: `rows` (dataset, mode, target_epsilon, epsilon, delta,
noise_multiplier, accuracy, accuracy_no_dp, ...), `commit`, `clean_tree`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    RESULTS,
    federated_steps,
    machine,
    prepare_parties,
    provenance,
    run_flow,
    standardise_step,
    step_metrics,
    table,
    write_json,
)

OUT = RESULTS / "dp.json"
SEED, TEST_FRACTION, DELTA, CLIP = 7, 0.2, 1e-5, 1.0
PARTIES = ("party-a", "party-b", "party-c")
DATASETS = {
    "breast_cancer": {"source": "sklearn:breast_cancer", "hp": {"local_epochs": 5, "batch_size": 32, "lr": 0.1}},
    "digits": {"source": "sklearn:digits", "hp": {"local_epochs": 5, "batch_size": 16, "lr": 0.1}},
}
DP_HP = {"model": "logreg", "hidden": 64, "optimizer": "sgd", "seed": SEED, "rounds": 5}
EPSILONS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
QUICK_EPSILONS = (1.0, 8.0)


def _worker_init() -> None:
    import torch

    from shared.logging import configure_logging

    configure_logging("WARNING", json=True)
    torch.set_num_threads(1)


def _name(eps: float | None) -> str:
    return "train-nodp" if eps is None else f"train-eps{eps:g}".replace(".", "p")


def run_unit(unit: dict[str, Any]) -> dict[str, Any]:
    dataset, hp = unit["dataset"], {**DP_HP, **DATASETS[unit["dataset"]]["hp"], "rounds": unit["rounds"]}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-dp-") as tmp:
        work = Path(tmp)
        prepare_parties(work, PARTIES, dataset, DATASETS[dataset]["source"], seed=SEED, test_fraction=TEST_FRACTION)
        steps = [standardise_step("standardise", PARTIES, "coordinator")]
        for eps in [None, *unit["epsilons"]]:
            step = federated_steps(_name(eps), PARTIES, "coordinator", hp, depends_on=["standardise"])
            if eps is not None:
                step["params"].update(dp="central", dp_clip=CLIP, dp_target_epsilon=eps, dp_delta=DELTA)
            steps.append(step)
        document = {"flow": unit["flow_id"], "parties": {**{p: {"data": dataset} for p in PARTIES},
                                                         "coordinator": {}}, "steps": steps}
        view = asyncio.run(run_flow(work, document, unit["flow_id"]))
        if view["status"] != "SUCCEEDED":
            raise RuntimeError(f"{unit['flow_id']}: {view['status']}: {view.get('reason')}")
        results = {}
        for eps in [None, *unit["epsilons"]]:
            m = step_metrics(view, _name(eps), "aggregator")
            results[eps] = {"accuracy": m["test_accuracy"], "test_n": int(m["test_n"]),
                            "epsilon": m.get("dp_epsilon"), "delta": m.get("dp_delta"),
                            "noise_multiplier": m.get("dp_noise_multiplier")}
    return {**unit, "results": results, "wall_s": time.perf_counter() - started}


def plan(quick: bool) -> list[dict[str, Any]]:
    epsilons, repeats, rounds = (QUICK_EPSILONS, 1, 3) if quick else (EPSILONS, 3, DP_HP["rounds"])
    return [{"dataset": d, "repeat": r, "epsilons": list(epsilons), "rounds": rounds,
             "flow_id": f"bench-dp-{d.replace('_', '-')}-{r}"} for d in DATASETS for r in range(repeats)]


def rows_of(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for dataset in DATASETS:
        units = [u for u in done if u["dataset"] == dataset]
        if not units:
            continue
        no_dp = [u["results"][None]["accuracy"] for u in units]
        for eps in units[0]["epsilons"]:
            runs = [u["results"][eps] for u in units]
            accs = [r["accuracy"] for r in runs]
            spent = {round(r["epsilon"], 9) for r in runs}
            if len(spent) != 1:  # same params, same accountant: the spend cannot differ between repeats
                raise RuntimeError(f"{dataset} eps {eps}: repeats report different epsilons {spent}")
            rows.append({
                "dataset": dataset, "mode": "central", "target_epsilon": eps, "epsilon": runs[0]["epsilon"],
                "delta": runs[0]["delta"], "noise_multiplier": runs[0]["noise_multiplier"],
                "accuracy": float(np.median(accs)), "accuracy_runs": accs,
                "accuracy_no_dp": float(np.median(no_dp)), "accuracy_no_dp_runs": no_dp,
                "test_n": runs[0]["test_n"], "parties": len(PARTIES), "rounds": units[0]["rounds"], "clip": CLIP,
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epsilons, 3 rounds, 1 repeat")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/dp.json for a full run; "
                                                  "--quick writes only when given)")
    args = parser.parse_args(argv)
    out = args.out or (None if args.quick else OUT)
    source = provenance()  # the code that runs: taken before anything else can change the tree
    started = time.perf_counter()
    units = plan(args.quick)
    print(f"{len(units)} flows, {args.jobs} worker process(es)", flush=True)
    done = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init) as pool:
        for result in pool.map(run_unit, units):
            done.append(result)
            print(f"  {result['flow_id']:<32} {result['wall_s']:6.1f} s", flush=True)
    rows = rows_of(done)
    print()
    print(table(("dataset", "target eps", "eps (accountant)", "delta", "sigma", "accuracy", "no DP"),
                [(r["dataset"], f"{r['target_epsilon']:g}", f"{r['epsilon']:.3f}", f"{r['delta']:g}",
                  f"{r['noise_multiplier']:.3f}", f"{r['accuracy']:.4f}", f"{r['accuracy_no_dp']:.4f}")
                 for r in rows]))
    elapsed = time.perf_counter() - started
    print(f"total {elapsed:.1f} s")
    if out is not None:
        write_json(out, {
            "benchmark": "dp", **source, "quick": args.quick, "elapsed_s": round(elapsed, 1),
            "machine": machine(), "rows": rows,
            "setup": {"mode": "central", "accountant": "opacus RDP, no amplification by sampling",
                      "neighbouring": "zero-out of one party's update (party-level DP)",
                      "delta": DELTA, "clip": CLIP, "parties": list(PARTIES), "partition": "iid", "seed": SEED,
                      "test_fraction": TEST_FRACTION, "repeats": max(u["repeat"] for u in done) + 1,
                      "hp": {d: {**DP_HP, **v["hp"]} for d, v in DATASETS.items()},
                      "not_covered": "ferry.standardise releases per-feature moments without noise"},
        })
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
