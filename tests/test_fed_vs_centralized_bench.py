"""bench/fed_vs_centralized.py must choose on validation rows only and compare FedProx with the
FedAvg of the same seed: a bench that peeked at test rows would report flattering numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fed_vs_centralized.py"


def _bench():
    spec = importlib.util.spec_from_file_location("fed_vs_centralized_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_validation_rows_come_from_training_rows_and_nothing_trains_on_held_out_rows():
    bench = _bench()
    held_out, train, val, test = bench.split_rows("sklearn:digits", 7)
    assert not set(val) & set(test) and not set(train) & set(val) and not set(train) & set(test)
    assert len(train) + len(val) + len(test) == held_out.n_rows
    split = np.asarray(held_out.columns["split"])
    assert (split[train] == 0).all() and (split[val] == 1).all() and (split[test] == 1).all()


def _results(val_acc: float, test_right: list[bool]) -> dict[str, np.ndarray]:
    n_val = 10
    return {"val": np.arange(n_val) < round(val_acc * n_val), "test": np.asarray(test_right)}


def test_cells_pick_by_validation_and_count_test_rows_where_fedprox_differs_from_fedavg():
    bench = _bench()
    unit = next(u for u in bench.plan(True, ("digits_drift",)) if u["kind"] == "federated")
    (lr,), (mu,) = unit["lrs"], unit["mus"]
    done = []
    for seed in (7, 8):
        base = {**next(u for u in bench.plan(True, ("digits_drift",)) if u["kind"] == "baseline"), "seed": seed}
        base["results"] = {("mlp", "centralized", lr, 0.0): _results(1.0, [True] * 4)}
        fed = {**unit, "seed": seed, "label_skew": 0.7}
        # the only FedProx config, so it is chosen: it differs from FedAvg on 3 of 4 test rows, net +1
        fed["results"] = {("mlp", "fedavg", lr, 0.0): _results(0.9, [True, True, False, False]),
                          ("mlp", "fedprox", lr, mu): _results(0.5, [True, False, True, True])}
        done += [base, fed]
    rows = {(r["strategy"], r["mu"]): r for r in bench.cells(done)}
    assert set(rows) == {("fedavg", None), ("fedprox", "tuned"), ("fedprox", mu)}
    rows["fedavg"] = rows["fedavg", None]
    prox = rows["fedprox", "tuned"]
    assert rows["fedprox", mu]["per_seed"] == prox["per_seed"]  # a one-mu grid: fixed is tuned
    assert prox["per_seed"][0]["rows_differing_from_fedavg"] == 3
    assert prox["minus_fedavg_mean_pt"] == 25.0
    assert prox["p_paired_t_vs_fedavg"] is None  # identical differences: the t statistic is undefined
    assert prox["per_seed"][0]["by_mu_at_chosen_lr"] == [
        {"mu": mu, "val_acc": 0.5, "test_acc": 0.75, "rows_differing_from_fedavg_same_lr": 3}]
    assert rows["fedavg"]["mean_gap_pt"] == -50.0 and prox["mean_gap_pt"] == -25.0


def test_the_pick_ignores_test_accuracy():
    bench = _bench()
    results = {"a": _results(0.9, [False] * 4), "b": _results(0.8, [True] * 4)}
    assert bench._pick(results, ["a", "b"]) == "a"
