"""Deterministic local training, suspend/resume equivalence, FedProx, evaluation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from services.executor.ml.metrics import classification_metrics, metrics_from_confusion
from services.executor.ml.models import ModelSpec, build_model, get_weights, set_weights
from services.executor.ml.training import (TrainConfig, batch_order, eval_batch_rows, evaluate, train_centralized,
                                           train_local)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_data(n=50, n_features=16, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    y = (X[:, :n_classes].argmax(axis=1)).astype(np.int64)
    return X, y


def same(a, b):
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def npz_roundtrip(arrays):
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_batch_order_is_a_seeded_permutation_per_epoch():
    a = batch_order(10, seed=3, epoch=0)
    assert sorted(a.tolist()) == list(range(10))
    assert np.array_equal(a, batch_order(10, seed=3, epoch=0))
    assert not np.array_equal(a, batch_order(10, seed=3, epoch=1))
    assert not np.array_equal(a, batch_order(10, seed=4, epoch=0))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_is_bit_identical_and_another_seed_differs(optimizer):
    X, y = toy_data()
    spec = ModelSpec("mlp", 16, 3, hidden=8)
    cfg = TrainConfig(local_epochs=2, batch_size=8, lr=0.05, optimizer=optimizer)

    def run(seed):
        return train_local(build_model(spec, 0), X, y, cfg, epoch_offset=0, seed=seed)

    first, again, other = run(1), run(1), run(2)
    assert same(first.weights, again.weights) and first.loss == again.loss
    assert not same(first.weights, other.weights)
    assert first.num_examples == 50 and first.elapsed_s >= 0


CASES = [
    (ModelSpec("logreg", 16, 3), "sgd", 0.0),
    (ModelSpec("mlp", 16, 3, hidden=(8, 4)), "adam", 0.0),
    (ModelSpec("cnn", 16, 3, hidden=8), "adam", 0.5),  # 1x4x4 images, FedProx term on
]


@pytest.mark.parametrize("spec,optimizer,mu", CASES, ids=lambda c: getattr(c, "kind", str(c)))
def test_split_training_with_checkpoint_equals_uninterrupted(spec, optimizer, mu):
    """What suspend/resume relies on: epochs [0,4) == [0,2) + checkpoint + [2,4), bit for bit."""
    X, y = toy_data()
    anchor = get_weights(build_model(spec, 42))  # the round's global model (FedProx)
    whole_cfg = TrainConfig(local_epochs=4, batch_size=16, lr=0.05, optimizer=optimizer, mu=mu)
    whole = train_local(build_model(spec, 7), X, y, whole_cfg, epoch_offset=0, seed=3,
                        global_weights=anchor)

    half_cfg = TrainConfig(local_epochs=2, batch_size=16, lr=0.05, optimizer=optimizer, mu=mu)
    first = train_local(build_model(spec, 7), X, y, half_cfg, epoch_offset=0, seed=3,
                        global_weights=anchor)
    saved_weights, saved_opt = npz_roundtrip(first.weights), npz_roundtrip(first.optimizer_state)
    resumed_model = build_model(spec, 123)  # a fresh process: other init, then the checkpoint
    set_weights(resumed_model, saved_weights)
    second = train_local(resumed_model, X, y, half_cfg, epoch_offset=2, seed=3,
                         global_weights=anchor, optimizer_state=saved_opt)

    assert same(whole.weights, second.weights)
    assert same(whole.optimizer_state, second.optimizer_state)
    if optimizer == "adam":  # 50 rows / 16 = 4 batches per epoch, 4 epochs
        first_param = next(iter(whole.weights))
        assert whole.optimizer_state[f"{first_param}/step"] == 16
    else:
        assert whole.optimizer_state == {}
    # Without the optimizer state Adam restarts its moments: the result must differ.
    if optimizer == "adam":
        restarted = build_model(spec, 0)
        set_weights(restarted, saved_weights)
        fresh = train_local(restarted, X, y, half_cfg, epoch_offset=2, seed=3, global_weights=anchor)
        assert not same(whole.weights, fresh.weights)


def test_a_partial_or_foreign_optimizer_state_is_refused():
    X, y = toy_data()
    spec = ModelSpec("logreg", 16, 3)
    adam = TrainConfig(optimizer="adam")
    state = train_local(build_model(spec, 0), X, y, adam, epoch_offset=0, seed=0).optimizer_state
    assert sorted(state) == ["0.bias/exp_avg", "0.bias/exp_avg_sq", "0.bias/step",
                             "0.weight/exp_avg", "0.weight/exp_avg_sq", "0.weight/step"]
    partial = {k: v for k, v in state.items() if not k.startswith("0.bias/")}
    with pytest.raises(ValueError, match="missing"):
        train_local(build_model(spec, 0), X, y, adam, epoch_offset=1, seed=0, optimizer_state=partial)
    with pytest.raises(ValueError, match="sgd optimizer"):
        train_local(build_model(spec, 0), X, y, TrainConfig(), epoch_offset=1, seed=0,
                    optimizer_state=state)
    wrong = {**state, "0.bias/exp_avg": np.zeros(4, np.float32)}
    with pytest.raises(ValueError, match="shape"):
        train_local(build_model(spec, 0), X, y, adam, epoch_offset=1, seed=0, optimizer_state=wrong)


def test_fedprox_adds_mu_times_distance_to_the_gradient():
    # One full-batch SGD step: w_mu = w0 - lr (g + mu (w0 - wg)) and w_0 = w0 - lr g,
    # so w_mu - w_0 = -lr * mu * (w0 - wg), whatever g is.
    X, y = toy_data(n=20)
    spec = ModelSpec("logreg", 16, 3)
    glob = {k: v + 1.0 for k, v in get_weights(build_model(spec, 0)).items()}
    lr, mu = 0.1, 0.5

    def step(mu_value):
        model = build_model(spec, 0)
        cfg = TrainConfig(local_epochs=1, batch_size=20, lr=lr, mu=mu_value)
        return train_local(model, X, y, cfg, epoch_offset=0, seed=0, global_weights=glob).weights

    w0 = get_weights(build_model(spec, 0))
    with_mu, without = step(mu), step(0.0)
    for k in w0:
        np.testing.assert_allclose(with_mu[k] - without[k], -lr * mu * (w0[k] - glob[k]), atol=1e-6)
    with pytest.raises(ValueError, match="global_weights"):
        train_local(build_model(spec, 0), X, y, TrainConfig(mu=0.1), epoch_offset=0, seed=0)


def test_train_config_from_flow_params():
    params = {"local_epochs": 3, "batch_size": 16, "lr": 0.01, "optimizer": "adam", "mu": 0.2}
    assert TrainConfig.from_params({**params, "strategy": "fedprox"}) == TrainConfig(3, 16, 0.01, "adam", 0.2)
    assert TrainConfig.from_params({**params, "strategy": "fedavg"}).mu == 0.0
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")


def test_metrics_by_hand():
    # confusion (rows true, cols predicted): [[1,1,0],[0,2,0],[1,0,0]]
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["accuracy"] == pytest.approx(0.6) and m["n"] == 5
    assert m["precision"] == pytest.approx([0.5, 2 / 3, 0.0])  # class 2 never predicted: 0
    assert m["recall"] == pytest.approx([0.5, 1.0, 0.0])
    assert m["f1"] == pytest.approx([0.5, 0.8, 0.0])           # 2 * (2/3) * 1 / (5/3) = 0.8
    assert m["support"] == [2, 2, 1] and m["macro_f1"] == pytest.approx(1.3 / 3)
    # merging parties = summing confusions: the pooled numbers, not an average of ratios
    merged = metrics_from_confusion(np.array(m["confusion"]) * 2)
    assert merged["precision"] == m["precision"] and merged["n"] == 10


def test_evaluate_by_hand():
    # logits = [x, -x]: x > 0 predicts class 0. Rows (x, y): (1, 0) (-1, 1) (2, 1).
    # losses: log(1 + e^-2), log(1 + e^-2), -log softmax_1([2, -2]) = log(1 + e^4)
    model = build_model(ModelSpec("logreg", 1, 2), 0)
    set_weights(model, {"0.weight": np.array([[1.0], [-1.0]], np.float32),
                        "0.bias": np.zeros(2, np.float32)})
    out = evaluate(model, np.array([[1.0], [-1.0], [2.0]]), np.array([0, 1, 1]))
    expected_loss = (2 * math.log(1 + math.exp(-2)) + math.log(1 + math.exp(4))) / 3
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert out["accuracy"] == pytest.approx(2 / 3) and out["n"] == 3
    assert out["precision"] == pytest.approx([0.5, 1.0]) and out["recall"] == pytest.approx([1.0, 0.5])
    assert model.training  # evaluate restores the mode it found


def test_a_wide_model_is_scored_in_small_batches_with_the_same_scores():
    # 4,096 rows of a 65,536-unit layer would be a 1 GiB activation; 128 rows are 32 MiB.
    wide = build_model(ModelSpec("mlp", 100, 10, hidden=65536), 0)
    assert eval_batch_rows(wide, 100) == 128
    assert eval_batch_rows(build_model(ModelSpec("logreg", 64, 10), 0), 64) == 4096
    model = build_model(ModelSpec("mlp", 16, 3, hidden=8192), 0)  # 1,024 rows at a time: 3 batches
    X, y = toy_data(n=3000)
    assert eval_batch_rows(model, 16) == 1024
    small, whole = evaluate(model, X, y), evaluate(model, X, y, batch_size=4096)
    assert small["loss"] == pytest.approx(whole["loss"], rel=1e-6) and small["confusion"] == whole["confusion"]


def test_one_client_fedavg_is_centralized_training_bit_for_bit():
    """Same code path: FedAvg over a single client with 1 local epoch per round and plain SGD
    (stateless) walks exactly the epochs centralized training walks."""
    from services.executor.ml.strategies import make_strategy

    X, y = toy_data()
    spec, seed, rounds = ModelSpec("mlp", 16, 3, hidden=8), 11, 3
    cfg = TrainConfig(local_epochs=1, batch_size=8, lr=0.05)
    central = train_centralized(spec, X, y, cfg, epochs=rounds, seed=seed)

    model, strategy = build_model(spec, seed), make_strategy("fedavg", {})
    glob = get_weights(model)
    state = strategy.init_state(glob)
    for r in range(rounds):
        set_weights(model, glob)
        res = train_local(model, X, y, cfg, epoch_offset=r, seed=seed)
        state, glob = strategy.aggregate(state, glob, [(res.weights, res.num_examples)])
    assert same(glob, central.weights)
