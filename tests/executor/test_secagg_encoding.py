"""Weighted, clipped, quantized deltas: the decoded sum is FedAvg's average within the documented bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.executor.ml import aggregation
from services.executor.ml.quantize import sum_mod
from services.executor.ml.strategies import make_strategy
from services.executor.secagg.encoding import (client_weight, decode_sum, encode_update, error_bound,
                                               quant_config, vector_length)


def _model(rng, scale=1.0):
    return {"w": (rng.standard_normal((3, 4)) * scale).astype(np.float32),
            "b": (rng.standard_normal(3) * scale).astype(np.float32)}


def _clients(rng, global_w, n, spread):
    return [({k: v + rng.uniform(-spread, spread, v.shape).astype(np.float32) for k, v in global_w.items()},
             int(rng.integers(10, 500)), float(rng.uniform(0, 2))) for _ in range(n)]


def _secure_average(global_w, clients, clip=4.0):
    cfg = quant_config(clip, len(clients))
    scale = max(n for _, n, _ in clients)
    codes = [encode_update(w, global_w, client_weight(n, scale), loss, cfg) for w, n, loss in clients]
    return decode_sum(sum_mod(codes, cfg), len(clients), global_w, cfg), cfg


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 12), spread=st.floats(1e-4, 3.9))
def test_decoded_average_is_fedavg_within_the_documented_bound(seed, n, spread):
    rng = np.random.default_rng(seed)
    global_w = _model(rng)
    clients = _clients(rng, global_w, n, spread)
    decoded, cfg = _secure_average(global_w, clients)
    exact = aggregation.weighted_average([(w, k) for w, k, _ in clients])
    max_delta = max(float(np.max(np.abs(exact[k] - global_w[k]))) for k in global_w)
    bound = error_bound(cfg, n, decoded.total_weight, max_delta)
    for k in global_w:
        assert np.max(np.abs(decoded.average[k] - exact[k])) <= bound
    assert decoded.clients == n and decoded.clipped == pytest.approx(0.0, abs=1e-6)


def test_the_bound_is_tight_enough_to_matter():
    cfg = quant_config(4.0, 3)
    assert cfg.step < 6e-9
    assert error_bound(cfg, 3, 3.0, 1.0) < 1e-8


def test_loss_and_clipping_come_out_as_weighted_aggregates():
    rng = np.random.default_rng(1)
    global_w = _model(rng)
    big = {k: v + 10.0 for k, v in global_w.items()}            # every coordinate clipped at 4
    small = {k: v + 0.5 for k, v in global_w.items()}
    decoded, _ = _secure_average(global_w, [(big, 100, 0.3), (small, 300, 0.7)])
    assert decoded.loss == pytest.approx((100 / 300 * 0.3 + 1.0 * 0.7) / (100 / 300 + 1.0), abs=1e-6)
    assert decoded.clipped == pytest.approx(0.5, abs=1e-6)          # one of two clients fully clipped
    expected = (100 / 300 * 4.0 + 1.0 * 0.5) / (100 / 300 + 1.0)    # the clipped delta counts as 4
    assert np.allclose(decoded.average["w"] - global_w["w"], expected, atol=1e-6)


def test_secure_average_drives_every_averaging_strategy_like_the_plain_path():
    rng = np.random.default_rng(2)
    global_w = _model(rng)
    clients = _clients(rng, global_w, 4, 0.2)
    decoded, _ = _secure_average(global_w, clients)
    for name in ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"):
        strategy = make_strategy(name, {})
        state = strategy.init_state(global_w)
        _, plain = strategy.aggregate(state, global_w, [(w, k) for w, k, _ in clients])
        _, secure = strategy.server_step(state, global_w, decoded.average)
        for k in global_w:
            assert np.allclose(plain[k], secure[k], atol=1e-5), name


def test_layout_and_refusals():
    rng = np.random.default_rng(3)
    global_w = _model(rng)
    cfg = quant_config(4.0, 2)
    codes = encode_update(global_w, global_w, 0.5, 0.1, cfg)
    assert codes.dtype == np.uint32 and codes.shape == (vector_length(global_w),) == (12 + 3 + 3,)
    assert client_weight(50, 100) == 0.5 and client_weight(500, 100) == 1.0
    with pytest.raises(ValueError, match="not finite"):
        encode_update({**global_w, "b": global_w["b"] * np.nan}, global_w, 1.0, 0.1, cfg)
    with pytest.raises(ValueError, match="do not match"):
        encode_update({"w": global_w["w"]}, global_w, 1.0, 0.1, cfg)
    with pytest.raises(ValueError, match="weight"):
        encode_update(global_w, global_w, 0.0, 0.1, cfg)
