"""End-to-end sanity on sklearn's breast_cancer: federated vs centralized, and a Byzantine client.

The round loop below is the in-process reference of what the client and
aggregator roles do over Kafka: announce global -> each client trains from it
-> aggregate -> next round.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from services.executor.ml.models import ModelSpec, build_model, get_weights, set_weights
from services.executor.ml.strategies import make_strategy
from services.executor.ml.training import TrainConfig, evaluate, train_centralized, train_local

SPEC = ModelSpec("logreg", 30, 2)
SEED = 0


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    test, train = order[: len(X) // 5], order[len(X) // 5:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)  # pooled stats = ferry.standardise
    Xs = ((X - mean) / std).astype(np.float32)
    return Xs[train], y[train], Xs[test], y[test]


def run_federated(strategy_name, params, clients, config, rounds, attacker=None):
    strategy = make_strategy(strategy_name, params)
    model = build_model(SPEC, SEED)
    glob = get_weights(model)
    state = strategy.init_state(glob)
    for r in range(rounds):
        updates = []
        for i, (X, y) in enumerate(clients):
            set_weights(model, glob)
            res = train_local(model, X, y, config, epoch_offset=r * config.local_epochs,
                              seed=SEED + 1 + i, global_weights=glob)
            weights = res.weights
            if i == attacker:  # a Byzantine client: flipped and blown-up model
                weights = {k: -50.0 * v for k, v in weights.items()}
            updates.append((weights, res.num_examples))
        state, glob = strategy.aggregate(state, glob, updates)
    set_weights(model, glob)
    return model


def test_fedavg_of_three_iid_clients_matches_centralized(data):
    Xtr, ytr, Xte, yte = data
    config = TrainConfig(local_epochs=1, batch_size=32, lr=0.05)
    rounds = 10
    central = build_model(SPEC, SEED)
    set_weights(central, train_centralized(SPEC, Xtr, ytr, config, epochs=rounds, seed=SEED).weights)
    central_acc = evaluate(central, Xte, yte)["accuracy"]

    clients = [(Xtr[i], ytr[i]) for i in np.array_split(np.arange(len(Xtr)), 3)]
    fed_acc = evaluate(run_federated("fedavg", {}, clients, config, rounds), Xte, yte)["accuracy"]
    print(f"breast_cancer test accuracy: centralized {central_acc:.4f}, fedavg {fed_acc:.4f}")
    assert central_acc >= 0.94
    # 113 test rows: allow at most 2 rows (~1.8 points) of difference.
    assert abs(fed_acc - central_acc) <= 2 / len(yte) + 1e-9


def attacked_accuracy(data, name, params):
    """Accuracy after 5 rounds with 5 clients, the last of them Byzantine."""
    Xtr, ytr, Xte, yte = data
    config = TrainConfig(local_epochs=1, batch_size=32, lr=0.05)
    clients = [(Xtr[i], ytr[i]) for i in np.array_split(np.arange(len(Xtr)), 5)]
    model = run_federated(name, params, clients, config, rounds=5, attacker=4)
    return evaluate(model, Xte, yte)["accuracy"]


def test_the_attack_ruins_fedavg(data):
    assert attacked_accuracy(data, "fedavg", {}) <= 0.6


@pytest.mark.parametrize("name,params", [
    ("median", {}), ("trimmed_mean", {"trim_fraction": 0.2}), ("krum", {"krum_f": 1})])
def test_robust_rules_survive_the_attack(data, name, params):
    assert attacked_accuracy(data, name, params) >= 0.88
