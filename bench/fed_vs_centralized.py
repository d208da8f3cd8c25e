"""Federated (ferry.fedavg) vs centralized (ferry.centralized) accuracy, tuned on validation rows only.

    python bench/fed_vs_centralized.py [--quick] [--jobs N] [--out PATH]

Every number comes from real flows on services.embedded.EmbeddedPlatform (in-process bus,
inline executors, LMDB party stores): the flows are built here as documents for
services.splitter.core.flow_document.parse_flow_document.

Protocol, for each of SPLIT_SEEDS (>= 5) separately:
  1. hold out TEST_FRACTION of the rows as test rows (services' with_test_split, seeded);
  2. carve VAL_FRACTION of the remaining training rows as validation rows;
  3. train every configuration of the grid on the rest (validation and test rows are both
     marked held out, so no step trains or standardises on them);
  4. per cell, pick the configuration with the best validation accuracy (ties: the first in
     grid order), then report that model's accuracy on the test rows, which took no part in
     any choice.
The final models are scored here from their artifacts on the validation and test rows
separately (`_correct`). Federated and centralized sides are tuned the same way,
independently. A cell's gap (federated - centralized test accuracy, in points) is then
summarised over the split seeds: mean, standard deviation, min/max, and the paired t-test of
the two sides' accuracies across seeds (scipy.stats.ttest_rel; p = 1 when all gaps are 0).

Settings (SETTINGS), each its own question:
  breast_cancer  sklearn breast_cancer (2 classes), 3 parties, logreg, 10 rounds of 1 local epoch,
                 IID and Dirichlet(0.5) partitions; lr in (0.03, 0.1, 0.3). How far does FedAvg
                 fall from pooled training? The IID rows give max_abs_mean_gap_iid_pt. FedProx on
                 the Dirichlet rows with mu in (1, 10): mild skew, 3 parties and one local epoch
                 leave little drift to correct (an earlier run: mu 1 changed the correctness of
                 0.2 of 114 test rows per seed), the contrast to the next setting.
  digits_drift   sklearn digits (10 classes, 1,797 rows), 10 parties, Dirichlet(0.1) label skew
                 (on the five split seeds each party's training rows hold 1 to 5 digits with a
                 share of 10% or more), MLP (one hidden layer of 64), 10 rounds of
                 5 local epochs: the client-drift regime of Li et al. 2020, where FedProx's
                 proximal term is meant to help. lr in (0.03, 0.1, 0.3) (a run with (0.03, 0.1)
                 chose 0.1, the edge, on every seed); FedProx tunes lr and mu in (0.01, 0.1, 1)
                 jointly (Li et al.'s grid was 0.001..1).
FedProx gets one row with mu tuned on validation rows (`mu`: "tuned") and one row per mu of the
grid fixed in advance, lr still tuned (`mu`: the value): validation tends to pick the smallest mu,
which moves nothing, so the fixed-mu rows show what a mu that does move the model does. Each
FedProx row reports FedProx - FedAvg (both tuned on validation rows, same seed): mean, spread,
its own paired t-test, the number of test rows whose correctness differs, and per seed every mu
of the grid at the chosen lr (`by_mu_at_chosen_lr`), so a reader sees whether and in which
direction the term moves the model. Rounds, local epochs, batch sizes and hidden sizes
are fixed in advance (not tuned).

Shrunk to fit the shared 2-core machine (SHRUNK; quotes must say so): no IID or synthetic rows
for digits, no 10-party breast cancer, one model per setting, 10 rounds.
--quick: 2 split seeds, lr 0.1, mu 1.0 only (~2.5 min for both settings at load average ~7).

Flows run in `--jobs` worker processes (default 2). Results go to
bench/results/fed_vs_centralized.json (full run; --quick writes only with --out) with
top-level `split_seeds` (count), `max_abs_mean_gap_iid_pt`, `commit`, `clean_tree`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
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
    centralized_step,
    federated_steps,
    load_table,
    machine,
    prepare_parties,
    provenance,
    run_flow,
    standardise_step,
    table,
    write_json,
)

OUT = RESULTS / "fed_vs_centralized.json"
SPLIT_SEEDS = (7, 8, 9, 10, 11)
TEST_FRACTION, VAL_FRACTION = 0.2, 0.2
LRS = (0.03, 0.1, 0.3)
COMMON_HP = {"hidden": 64, "optimizer": "sgd"}

# One setting per question. "breast_cancer" asks how far FedAvg falls from pooled training (IID
# and mild label skew); "digits_drift" asks whether FedProx's proximal term changes anything
# where client drift is real (Li et al. 2020): strong label skew over 10 parties, 5 local
# epochs per round, an MLP.
SETTINGS: dict[str, dict[str, Any]] = {
    "breast_cancer": {"dataset": "breast_cancer", "source": "sklearn:breast_cancer", "parties": 3,
                      "alpha": 0.5, "models": ("logreg",), "schemes": ("iid", "dirichlet"),
                      "fedprox_schemes": ("dirichlet",), "lrs": LRS, "mus": (1.0, 10.0),
                      "hp": {"rounds": 10, "local_epochs": 1, "batch_size": 32}},
    "digits_drift": {"dataset": "digits", "source": "sklearn:digits", "parties": 10,
                     "alpha": 0.1, "models": ("mlp",), "schemes": ("dirichlet",),
                     "fedprox_schemes": ("dirichlet",), "lrs": LRS, "mus": (0.01, 0.1, 1.0),
                     "hp": {"rounds": 10, "local_epochs": 5, "batch_size": 32}},
}
SHRUNK = ("to fit the shared 2-core machine: breast_cancer 3 parties logreg only; digits 10 parties "
          "Dirichlet(0.1) MLP only (no digits IID, no synthetic, no 10-party breast cancer); 10 rounds")
QUICK = {"seeds": 2, "lrs": (0.1,), "mus": (1.0,)}


def _hp(unit: dict[str, Any], model: str, lr: float) -> dict[str, Any]:
    return {**unit["hp"], "model": model, "lr": lr, "seed": unit["seed"]}


def _step_name(model: str, strategy: str, lr: float, mu: float = 0.0) -> str:
    return f"{model}-{strategy}-lr{lr:g}-mu{mu:g}".replace(".", "p")


# ------------------------------------------------------------------------- worker side


def _worker_init() -> None:
    import torch

    from shared.logging import configure_logging

    configure_logging("WARNING", json=True)
    torch.set_num_threads(1)  # tiny models; one process per core


def split_rows(source: str, seed: int):
    """The table with `split` = 1 on validation and test rows (nothing trains on either), and the
    row indices of train, validation and test. Validation rows come from the training rows only."""
    from services.executor.data.importers import Table, with_test_split

    tested = with_test_split(load_table(source), TEST_FRACTION, seed)
    test = np.flatnonzero(np.asarray(tested.columns["split"]) == 1)
    train_all = np.flatnonzero(np.asarray(tested.columns["split"]) == 0)
    shuffled = np.random.default_rng([seed, 0x7A1]).permutation(train_all)
    n_val = int(round(VAL_FRACTION * train_all.size))
    val, train = np.sort(shuffled[:n_val]), np.sort(shuffled[n_val:])
    split = np.asarray(tested.columns["split"]).copy()
    split[val] = 1
    held_out = Table({**tested.columns, "split": split}, tested.schema,
                     {**tested.attrs, "val_fraction": VAL_FRACTION})
    return held_out, train, val, test


def _correct(artifact_dir: Path, step: str, x: np.ndarray, y: np.ndarray,
             mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per row: does the final model of `step` (its artifact) predict the label?"""
    import json

    import torch

    from services.executor.ml.models import ModelSpec, build_model, set_weights

    with np.load(artifact_dir / f"model-{step}.npz", allow_pickle=False) as z:
        weights = {k: z[k] for k in z.files}
    meta = json.loads((artifact_dir / f"model-{step}.json").read_text())
    model = build_model(ModelSpec.from_params(meta, int(meta["n_features"]), int(meta["n_classes"])), 0)
    set_weights(model, weights)
    xs = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    with torch.no_grad():
        predicted = model(torch.from_numpy(np.ascontiguousarray(xs, np.float32))).argmax(dim=1).numpy()
    return predicted == y


def _configs(unit: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """(model, strategy, lr, mu) of every step of a unit's flow."""
    out = []
    for model, strategy in unit["trainings"]:
        mus = unit["mus"] if strategy == "fedprox" else (0.0,)
        out += [(model, strategy, lr, mu) for lr in unit["lrs"] for mu in mus]
    return out


def run_unit(unit: dict[str, Any]) -> dict[str, Any]:
    """One flow on a fresh embedded platform: per step, correctness on validation and test rows."""
    from services.scheduler.adapters.launchers import party_dirs

    dataset, seed, flow_id = unit["dataset"], unit["seed"], unit["flow_id"]
    source = unit["source"]
    started = time.perf_counter()
    held_out, train, val, test = split_rows(source, seed)
    x = np.asarray(held_out.columns["X"], np.float32)
    y = np.asarray(held_out.columns["y"], np.int64)
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        work = Path(tmp)
        configs = _configs(unit)
        if unit["kind"] == "baseline":
            prepare_parties(work, [], dataset, source, seed=seed, pooled="pooled", table=held_out)
            steps = [centralized_step(_step_name(m, s, lr, mu), "pooled", _hp(unit, m, lr))
                     for m, s, lr, mu in configs]
            parties = {"pooled": {"data": dataset}}
            owner = "pooled"
        else:
            names = [f"p{i}" for i in range(unit["parties"])]
            info = prepare_parties(work, names, dataset, source, scheme=unit["scheme"], alpha=unit["alpha"], seed=seed,
                                   table=held_out)
            steps = [standardise_step("standardise", names, "coordinator")]
            for m, s, lr, mu in configs:
                steps.append(federated_steps(_step_name(m, s, lr, mu), names, "coordinator",
                                             _hp(unit, m, lr), strategy=s, mu=mu,
                                             depends_on=["standardise"]))
            parties = {**{p: {"data": dataset} for p in names}, "coordinator": {}}
            owner = "coordinator"
        document = {"flow": flow_id, "parties": parties, "steps": steps}
        view = asyncio.run(run_flow(work, document, flow_id))
        if view["status"] != "SUCCEEDED":
            raise RuntimeError(f"{flow_id}: {view['status']}: {view.get('reason')}")
        if unit["kind"] == "baseline":  # ferry.centralized's own standardisation: the training rows' moments
            mean, std = x[train].mean(axis=0), x[train].std(axis=0)
            std = np.where(std > 0, std, 1.0)
        else:
            with np.load(party_dirs(work, names[0])["artifacts"] / flow_id / "standardisation.npz") as z:
                mean, std = z["mean"], z["std"]
        artifacts = party_dirs(work, owner)["artifacts"] / flow_id
        results = {}
        for config in configs:
            step = _step_name(*config)
            results[config] = {"val": _correct(artifacts, step, x[val], y[val], mean, std),
                               "test": _correct(artifacts, step, x[test], y[test], mean, std)}
    out = {**unit, "results": results, "wall_s": time.perf_counter() - started}
    if unit["kind"] != "baseline":
        out["label_skew"] = info.label_skew
    return out


# ------------------------------------------------------------------------- driver side


def plan(quick: bool, settings: tuple[str, ...] = tuple(SETTINGS)) -> list[dict[str, Any]]:
    seeds = SPLIT_SEEDS[:QUICK["seeds"]] if quick else SPLIT_SEEDS
    units: list[dict[str, Any]] = []
    for seed, name in itertools.product(seeds, settings):
        cfg = SETTINGS[name]
        lrs = QUICK["lrs"] if quick else cfg["lrs"]
        mus = (QUICK["mus"] if quick else cfg["mus"]) if cfg["fedprox_schemes"] else ()
        common = {"setting": name, "dataset": cfg["dataset"], "seed": seed, "lrs": lrs, "mus": mus,
                  "source": cfg["source"], "hp": {**COMMON_HP, **cfg["hp"]}}
        tag = f"bench-{name.replace('_', '-')}-s{seed}"
        units.append({"kind": "baseline", **common,
                      "trainings": [(m, "centralized") for m in cfg["models"]], "flow_id": f"{tag}-baseline"})
        for scheme in cfg["schemes"]:
            strategies = ("fedavg", "fedprox") if scheme in cfg["fedprox_schemes"] else ("fedavg",)
            units.append({"kind": "federated", **common, "scheme": scheme, "parties": cfg["parties"],
                          "alpha": cfg["alpha"], "trainings": [(m, s) for m in cfg["models"] for s in strategies],
                          "flow_id": f"{tag}-{scheme}-{cfg['parties']}"})
    # longest first (training steps x parties x epochs), so the workers finish together
    units.sort(key=lambda u: -len(_configs(u)) * u.get("parties", 1) * u["hp"]["local_epochs"])
    return units


def _pick(results: dict, configs) -> tuple:
    """The configuration with the best validation accuracy; ties go to the first in grid order."""
    return max(configs, key=lambda c: (float(results[c]["val"].mean()), -configs.index(c)))


def _paired_p(a: list[float], b: list[float]) -> float | None:
    """Paired t-test p-value across split seeds; None when the differences have no spread (the
    statistic is undefined), 1.0 when they are all zero."""
    from scipy import stats

    diff = np.asarray(a) - np.asarray(b)
    if np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):
        return 1.0 if abs(diff[0]) < 1e-12 else None
    return float(stats.ttest_rel(a, b).pvalue)


def _round(p: float | None) -> float | None:
    return None if p is None else round(p, 4)


def _fmt(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3f}"


def cells(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (setting, partition, model, strategy): chosen configs and test accuracies per seed."""
    rows = []
    for name in SETTINGS:
        base = {u["seed"]: u for u in done if u["setting"] == name and u["kind"] == "baseline"}
        if not base:
            continue
        seeds = sorted(base)
        for scheme in SETTINGS[name]["schemes"]:
            fed = {u["seed"]: u for u in done if u["setting"] == name and u.get("scheme") == scheme}
            for model, strategy in fed[seeds[0]]["trainings"]:
                # FedProx: once with mu tuned on validation rows, then once per mu of the grid held
                # fixed in advance (lr still tuned): the rows at a mu that moves the model
                for mu_fixed in ([None, *fed[seeds[0]]["mus"]] if strategy == "fedprox" else [None]):
                    per_seed = [_seed_entry(fed[seed], base[seed], model, strategy, mu_fixed) for seed in seeds]
                    rows.append(_summarise(name, fed[seeds[0]], scheme, model, strategy, per_seed, mu_fixed))
    return rows


def _seed_entry(u: dict[str, Any], b: dict[str, Any], model: str, strategy: str,
                mu_fixed: float | None) -> dict[str, Any]:
    """One seed of a cell: the validation-chosen config's test accuracy, and the baseline's."""
    mine = [c for c in _configs(u) if c[0] == model and c[1] == strategy and mu_fixed in (None, c[3])]
    theirs = [c for c in _configs(b) if c[0] == model]
    chosen, chosen_cen = _pick(u["results"], mine), _pick(b["results"], theirs)
    f, c = u["results"][chosen], b["results"][chosen_cen]
    entry = {"seed": u["seed"], "lr": chosen[2], "mu": chosen[3], "centralized_lr": chosen_cen[2],
             "federated_val_acc": float(f["val"].mean()), "federated_acc": float(f["test"].mean()),
             "centralized_acc": float(c["test"].mean()), "test_n": int(f["test"].size),
             "label_skew": round(u["label_skew"], 4)}
    if strategy == "fedprox":  # against the tuned FedAvg of the same seed
        avg = _pick(u["results"], [c for c in _configs(u) if c[0] == model and c[1] == "fedavg"])
        entry["fedavg_acc"] = float(u["results"][avg]["test"].mean())
        entry["rows_differing_from_fedavg"] = int(np.sum(f["test"] != u["results"][avg]["test"]))
        # every mu of the grid at the chosen lr: does the term move the model at all?
        entry["by_mu_at_chosen_lr"] = [
            {"mu": mu, "val_acc": float(r["val"].mean()), "test_acc": float(r["test"].mean()),
             "rows_differing_from_fedavg_same_lr": int(np.sum(
                 r["test"] != u["results"][(model, "fedavg", chosen[2], 0.0)]["test"]))}
            for mu in u["mus"] for r in [u["results"][(model, strategy, chosen[2], mu)]]]
    return entry


def _summarise(setting, unit, scheme, model, strategy, per_seed, mu_fixed=None) -> dict[str, Any]:
    fed = [e["federated_acc"] for e in per_seed]
    cen = [e["centralized_acc"] for e in per_seed]
    gaps = 100 * (np.asarray(fed) - np.asarray(cen))
    row = {"setting": setting, "dataset": unit["dataset"], "partition": scheme, "parties": unit["parties"],
           "dirichlet_alpha": unit["alpha"] if scheme == "dirichlet" else None,
           "local_epochs": unit["hp"]["local_epochs"], "rounds": unit["hp"]["rounds"],
           "model": model, "strategy": strategy,
           "mu": None if strategy != "fedprox" else ("tuned" if mu_fixed is None else mu_fixed),
           "federated_acc_mean": round(float(np.mean(fed)), 6), "centralized_acc_mean": round(float(np.mean(cen)), 6),
           "mean_gap_pt": round(float(gaps.mean()), 3), "std_gap_pt": round(float(gaps.std(ddof=1)), 3),
           "min_gap_pt": round(float(gaps.min()), 3), "max_gap_pt": round(float(gaps.max()), 3),
           "p_paired_t": _round(_paired_p(fed, cen)), "split_seeds": len(per_seed), "per_seed": per_seed}
    if strategy == "fedprox":
        avg = [e["fedavg_acc"] for e in per_seed]
        diff = 100 * (np.asarray(fed) - np.asarray(avg))
        row["minus_fedavg_mean_pt"] = round(float(diff.mean()), 3)
        row["minus_fedavg_std_pt"] = round(float(diff.std(ddof=1)), 3)
        row["minus_fedavg_min_pt"] = round(float(diff.min()), 3)
        row["minus_fedavg_max_pt"] = round(float(diff.max()), 3)
        row["p_paired_t_vs_fedavg"] = _round(_paired_p(fed, avg))
        row["mean_rows_differing_from_fedavg"] = round(float(np.mean([e["rows_differing_from_fedavg"]
                                                                      for e in per_seed])), 2)
        row["mus_chosen"] = sorted({e["mu"] for e in per_seed})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 split seeds, one lr, one mu")
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=tuple(SETTINGS),
                        help="which settings to run (default all; a subset writes only with --out)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", type=Path, help=f"results JSON (default {OUT.relative_to(RESULTS.parents[1])} "
                                                  "for a full run; --quick writes only when given)")
    args = parser.parse_args(argv)
    partial = args.quick or tuple(args.settings) != tuple(SETTINGS)
    out = args.out or (None if partial else OUT)
    source = provenance()
    started = time.perf_counter()
    units = plan(args.quick, tuple(args.settings))
    print(f"{len(units)} flows ({sum(len(_configs(u)) for u in units)} training steps) on the embedded "
          f"platform, {args.jobs} worker process(es)", flush=True)
    done: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx, initializer=_worker_init) as pool:
        for result in pool.map(run_unit, units):
            done.append(result)
            print(f"  {result['flow_id']:<36} {result['wall_s']:6.1f} s", flush=True)
    rows = cells(done)
    iid = [r for r in rows if r["partition"] == "iid"]
    max_gap = max((abs(r["mean_gap_pt"]) for r in iid), default=None)
    elapsed = time.perf_counter() - started
    print()
    print(table(("setting", "partition", "parties", "model", "strategy", "mu", "fed acc", "cen acc", "mean gap", "sd",
                 "min..max", "p paired"),
                [(r["setting"], r["partition"], r["parties"], r["model"], r["strategy"],
                  "" if r["mu"] is None else str(r["mu"]), f"{r['federated_acc_mean']:.4f}", f"{r['centralized_acc_mean']:.4f}", f"{r['mean_gap_pt']:+.2f}",
                  f"{r['std_gap_pt']:.2f}", f"{r['min_gap_pt']:+.2f}..{r['max_gap_pt']:+.2f}",
                  _fmt(r["p_paired_t"])) for r in rows]))
    for r in rows:
        if r["strategy"] == "fedprox":
            print(f"fedprox (mu {r['mu']}) - fedavg {r['setting']} {r['model']}: {r['minus_fedavg_mean_pt']:+.2f} pt "
                  f"(sd {r['minus_fedavg_std_pt']:.2f}, p {_fmt(r['p_paired_t_vs_fedavg'])}), "
                  f"{r['mean_rows_differing_from_fedavg']} of {r['per_seed'][0]['test_n']} test rows differ "
                  f"on average, mu chosen {r['mus_chosen']}")
    if max_gap is not None:
        print(f"\nIID: max |mean gap| {max_gap:.3f} points over {len(iid)} rows, "
              f"{len({u['seed'] for u in done})} split seeds")
    print(f"total {elapsed:.1f} s")
    if out is not None:
        write_json(out, {
            "benchmark": "fed_vs_centralized", **source, "quick": args.quick,
            "split_seeds": len({u["seed"] for u in done}),
            "max_abs_mean_gap_iid_pt": None if max_gap is None else round(max_gap, 3),
            "elapsed_s": round(elapsed, 1), "jobs": args.jobs, "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(),
            "setup": {"split_seeds": list(sorted({u["seed"] for u in done})), "test_fraction": TEST_FRACTION,
                      "val_fraction_of_training_rows": VAL_FRACTION,
                      "settings": {name: {**{k: v for k, v in cfg.items() if k != "hp"},
                                          "lrs": list(QUICK["lrs"] if args.quick else cfg["lrs"]),
                                          "mus": list((QUICK["mus"] if args.quick else cfg["mus"])
                                                      if cfg["fedprox_schemes"] else ()),
                                          "hp": {**COMMON_HP, **cfg["hp"]}}
                                   for name, cfg in SETTINGS.items() if name in args.settings},
                      "selection": "best validation accuracy per cell and seed, ties to the first in grid order; "
                                   "FedProx tunes lr and mu jointly",
                      "shrunk": SHRUNK,
                      "platform": "services.embedded.EmbeddedPlatform (in-process bus, inline executors)"},
            "rows": rows,
            "flows": [{"flow_id": u["flow_id"], "wall_s": round(u["wall_s"], 2)} for u in done],
        })
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
