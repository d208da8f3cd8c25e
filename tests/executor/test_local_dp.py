"""Example-level local DP (DP-SGD in a client's own training), unit level and end to end.

Unit: per-row clipping bounds what a client's rows can move its model; the
noise is really there, of the declared size, and fresh on every run; the
accountant's epsilon grows with the steps taken. End to end: the demo's
federated logistic regression with local_dp on every client, on the embedded
platform: each client reports its epsilon every round, its loss never leaves
it, and a usable model remains.
"""

from __future__ import annotations


import numpy as np
import pytest

from services.executor.ml.local_dp import LocalDp, local_epsilon
from services.executor.ml.models import ModelSpec, build_model, get_weights, set_weights
from services.executor.ml.training import TrainConfig, train_local
from tests.executor.demo_run import aggregator_of, demo_document, run_demo_variant

N, FEATURES, BATCH, LR = 400, 8, 40, 0.5


def _data():
    rng = np.random.default_rng(3)  # test data, not a secret
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


def _delta(config: TrainConfig, model_kind: str = "logreg") -> np.ndarray:
    x, y = _data()
    spec = ModelSpec(model_kind, FEATURES, 2, hidden=32)
    model = build_model(spec, 0)
    start = get_weights(model)
    set_weights(model, start)
    after = train_local(model, x, y, config, epoch_offset=0, seed=1).weights
    return np.concatenate([np.ravel(after[k] - start[k]) for k in start])


def test_per_row_clipping_bounds_how_far_the_rows_move_the_model():
    clip = 1e-3
    dp = _delta(TrainConfig(batch_size=BATCH, lr=LR, local_dp=LocalDp(clip, 1e-6)))
    plain = _delta(TrainConfig(batch_size=BATCH, lr=LR))
    steps, expected_batch = N // BATCH, BATCH
    # Each step's gradient is (sum of <= N clipped rows + noise) / expected batch size.
    bound = LR * steps * N * clip / expected_batch
    assert np.linalg.norm(dp) <= bound * 1.01
    assert np.linalg.norm(plain) > 10 * bound  # without DP the same rows move it much further


def test_the_noise_is_fresh_every_run_and_of_the_declared_size():
    clip, sigma = 1e-3, 50.0
    config = TrainConfig(batch_size=BATCH, lr=LR, local_dp=LocalDp(clip, sigma))
    a, b = _delta(config, "mlp"), _delta(config, "mlp")
    assert not np.array_equal(a, b)  # same model, data and seed: only the OS's randomness differs
    steps = N // BATCH
    # SGD adds -lr * noise / expected_batch each step; two independent runs differ by sqrt(2) of that.
    expected_std = LR * np.sqrt(steps) * sigma * clip / BATCH * np.sqrt(2)
    assert 0.8 < np.std(a - b) / expected_std < 1.25


def test_the_accountant_charges_every_step_and_more_noise_costs_less():
    dp, q, delta = LocalDp(1.0, 1.0), BATCH / N, 1e-5
    assert local_epsilon(dp, q, 0, delta) == 0.0
    spent = [local_epsilon(dp, q, steps, delta) for steps in (10, 100, 1000)]
    assert spent[0] < spent[1] < spent[2]
    assert local_epsilon(LocalDp(1.0, 4.0), q, 1000, delta) < spent[2]


def test_local_dp_params_are_validated_at_submission():
    from shared.algorithms import AlgorithmRegistry, validate_params

    spec = AlgorithmRegistry.from_entry_points().get("ferry.fedavg", "1")
    errors = validate_params(spec, {"local_dp": True, "local_dp_noise_multiplier": 0.0}, "steps.train.params")
    assert [e.path for e in errors] == ["steps.train.params.local_dp_noise_multiplier"]


ROUNDS = 6


def _local_dp_flow() -> dict:
    document = demo_document()
    train = next(s for s in document["steps"] if s["name"] == "train")
    train["params"].update(rounds=ROUNDS, local_dp=True, local_dp_clip=1.0, local_dp_noise_multiplier=1.0)
    document["steps"] = [s for s in document["steps"] if s["name"] in ("validate", "standardise", "train")]
    return document


def test_a_federation_with_local_dp_reports_each_clients_epsilon_and_keeps_losses_home(tmp_path):
    demo = run_demo_variant(tmp_path, _local_dp_flow(), "local-dp")
    view, progress = demo.view, demo.progress
    assert view["status"] == "SUCCEEDED", view
    train, aggregator = aggregator_of(view, "train")
    clients = [a for a in train["algorithm_tasks"] if a["role"] == "client"]
    assert len(clients) == 3
    for client in clients:
        reports = [p for p in progress if p.algo_task_id == client["algo_task_id"] and p.stage == "training"]
        assert [p.round for p in reports] == list(range(1, ROUNDS + 1))
        spent = [p.metrics["local_dp_epsilon"] for p in reports]
        assert all(0 < a < b for a, b in zip(spent, spent[1:])), spent  # the budget is spent round by round
        assert client["metrics"]["local_dp_epsilon"] == pytest.approx(spent[-1])
        assert all("train_loss" not in p.metrics for p in reports)
    aggregator_reports = [p for p in progress if p.algo_task_id == aggregator["algo_task_id"]
                          and p.stage == "training"]
    assert aggregator_reports and all("train_loss" not in p.metrics for p in aggregator_reports)
    # Far above the 63 % of always answering the majority class (breast cancer).
    assert aggregator["metrics"]["test_accuracy"] > 0.8
