"""Model specs, deterministic initialisation and the weights round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.executor.ml.models import (ModelSpec, build_model, count_parameters, get_weights, weight_views,
                                         set_weights)
from services.executor.ml.weights import WeightsMismatch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SPECS = [
    ModelSpec("logreg", 30, 2),
    ModelSpec("mlp", 30, 3, hidden=16),
    ModelSpec("mlp", 30, 3, hidden=(16, 8)),
    ModelSpec("cnn", 64, 10, hidden=32),                       # 8x8 digits, shape inferred
    ModelSpec("cnn", 2 * 28 * 28, 10, hidden=32, image_shape=(2, 28, 28)),
]


def test_parameter_counts_by_hand():
    assert count_parameters(build_model(SPECS[0], 0)) == 30 * 2 + 2
    assert count_parameters(build_model(SPECS[1], 0)) == (30 * 16 + 16) + (16 * 3 + 3)
    assert count_parameters(build_model(SPECS[2], 0)) == (30 * 16 + 16) + (16 * 8 + 8) + (8 * 3 + 3)
    # cnn on 1x8x8: conv 1->8 (72+8), conv 8->16 (1152+16), 8x8 pooled twice = 2x2: 64 -> 32, 32 -> 10
    assert SPECS[3].image_shape == (1, 8, 8)
    assert count_parameters(build_model(SPECS[3], 0)) == 80 + 1168 + (64 * 32 + 32) + (32 * 10 + 10)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.hidden}")
def test_forward_shape_and_weights_roundtrip(spec):
    model = build_model(spec, seed=1)
    out = model(torch.zeros(5, spec.n_features))
    assert out.shape == (5, spec.n_classes)
    weights = get_weights(model)
    assert list(weights) == list(model.state_dict())
    assert all(v.dtype == np.float32 for v in weights.values())
    other = build_model(spec, seed=2)
    assert any(not np.array_equal(weights[k], v) for k, v in get_weights(other).items())
    set_weights(other, weights)
    assert all(np.array_equal(weights[k], v) for k, v in get_weights(other).items())
    x = torch.randn(3, spec.n_features, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), other(x))


def test_get_weights_returns_copies():
    model = build_model(SPECS[0], 0)
    weights = get_weights(model)
    weights["0.bias"][:] = 123.0
    assert not np.any(get_weights(model)["0.bias"] == 123.0)
    set_weights(model, weights)
    weights["0.bias"][:] = 7.0  # set_weights copied too
    assert np.all(get_weights(model)["0.bias"] == 123.0)


def test_weight_views_share_the_parameters_read_only():
    model = build_model(SPECS[0], 0)
    views = weight_views(model)
    assert all(np.array_equal(views[k], v) for k, v in get_weights(model).items())
    with pytest.raises(ValueError):
        views["0.bias"][:] = 1.0  # the model is not writable through them
    set_weights(model, {k: np.full_like(v, 2.0) for k, v in get_weights(model).items()})
    assert np.all(views["0.bias"] == 2.0)  # views, not copies: they follow the model


def test_same_seed_same_init_and_global_rng_untouched():
    torch.manual_seed(99)
    expected_next = torch.rand(1)
    torch.manual_seed(99)
    a = get_weights(build_model(SPECS[2], seed=5))
    assert torch.equal(torch.rand(1), expected_next)
    b = get_weights(build_model(SPECS[2], seed=5))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_set_weights_names_the_mismatch():
    model = build_model(SPECS[0], 0)
    weights = get_weights(model)
    with pytest.raises(WeightsMismatch, match=r"missing \['0.bias'\]"):
        set_weights(model, {"0.weight": weights["0.weight"]})
    with pytest.raises(WeightsMismatch, match=r"unexpected \['extra'\]"):
        set_weights(model, {**weights, "extra": np.zeros(1, np.float32)})
    with pytest.raises(WeightsMismatch, match=r"'0.weight' has shape \(2, 29\)"):
        set_weights(model, {**weights, "0.weight": np.zeros((2, 29), np.float32)})


def test_invalid_specs():
    with pytest.raises(ValueError, match="kind"):
        ModelSpec("resnet", 4, 2)
    with pytest.raises(ValueError, match="1 or 2"):
        ModelSpec("mlp", 4, 2, hidden=(4, 4, 4))
    with pytest.raises(ValueError, match="not a square"):
        ModelSpec("cnn", 30, 2)
    with pytest.raises(ValueError, match="C\\*H\\*W"):
        ModelSpec("cnn", 64, 2, image_shape=(1, 8, 4))
    spec = ModelSpec.from_params({"model": "mlp", "hidden": 12}, n_features=4, n_classes=3)
    assert spec == ModelSpec("mlp", 4, 3, (12,))
