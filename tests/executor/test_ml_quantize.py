"""Fixed-point quantization for secure aggregation: exact codes and the documented error bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.executor.ml.quantize import (QuantConfig, dequantize_sum, dequantize_weights_sum,
                                           quantize, quantize_weights, sum_mod)


def test_codes_by_hand_with_8_bits():
    cfg = QuantConfig(clip=1.0, max_clients=3, bits=8)
    # L = floor(255 / 3) = 85 levels per client, step = 2/85
    assert cfg.levels == 85 and cfg.step == pytest.approx(2 / 85, abs=1e-15)
    x = np.array([0.0, 1.0, -1.0, 0.5, 2.0, -7.0])
    # (x + 1) * 85/2 = 42.5 -> 42 (half to even), 85, 0, 63.75 -> 64, clipped 85, clipped 0
    assert quantize(x, cfg).tolist() == [42, 85, 0, 64, 85, 0]
    assert quantize(x, cfg).dtype == np.uint32


def test_sum_of_three_clients_decodes_within_the_bound():
    cfg = QuantConfig(clip=1.0, max_clients=3, bits=8)
    x = np.array([0.0, 1.0, -1.0, 0.5])
    total = sum_mod([quantize(x, cfg)] * 3, cfg)
    assert total.tolist() == [126, 255, 0, 192]  # 3 * [42, 85, 0, 64]: the top fits in 8 bits
    # decoded = S * 2/85 - 3: [-3/85, 3, -3, 129/85]; true sums [0, 3, -3, 1.5]
    decoded = dequantize_sum(total, 3, cfg)
    np.testing.assert_allclose(decoded, [-3 / 85, 3.0, -3.0, 129 / 85], atol=1e-12)
    # the worst case (every client half a level off, as at x = 0) meets the bound 3 * step / 2
    assert cfg.max_abs_error(3) == pytest.approx(3 / 85)
    assert np.all(np.abs(decoded - 3 * x) <= cfg.max_abs_error(3) + 1e-12)


def test_pairwise_masks_cancel_mod_2_32():
    cfg = QuantConfig(clip=4.0, max_clients=3)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-4, 4, size=5) for _ in range(3)]
    codes = [quantize(x, cfg) for x in xs]
    r01, r02, r12 = (rng.integers(0, 2**32, size=5, dtype=np.uint64) for _ in range(3))
    neg = lambda r: (np.uint64(2**32) - r) % np.uint64(2**32)  # noqa: E731
    masked = [sum_mod([codes[0], r01, r02], cfg),
              sum_mod([codes[1], neg(r01), r12], cfg),
              sum_mod([codes[2], neg(r02), neg(r12)], cfg)]
    assert not np.array_equal(masked[0], codes[0])
    assert np.array_equal(sum_mod(masked, cfg), sum_mod(codes, cfg))
    decoded = dequantize_sum(sum_mod(masked, cfg), 3, cfg)
    assert np.all(np.abs(decoded - sum(xs)) <= cfg.max_abs_error(3) + 1e-12)


def test_max_clients_at_the_top_of_the_range_do_not_wrap():
    cfg = QuantConfig(clip=1.0, max_clients=5)
    top = [quantize(np.array([1.0]), cfg)] * 5
    assert int(top[0][0]) == cfg.levels == (2**32 - 1) // 5
    assert dequantize_sum(sum_mod(top, cfg), 5, cfg)[0] == pytest.approx(5.0, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20), clip=st.floats(1e-3, 1e3), bits=st.sampled_from([16, 24, 32]),
       seed=st.integers(0, 2**32 - 1))
def test_error_bound_holds(n, clip, bits, seed):
    cfg = QuantConfig(clip=clip, max_clients=20, bits=bits)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-clip, clip, size=(n, 16))
    decoded = dequantize_sum(sum_mod([quantize(x, cfg) for x in xs], cfg), n, cfg)
    slack = 1e-9 * n * clip  # float64 rounding of the encode/decode arithmetic
    assert np.all(np.abs(decoded - xs.sum(axis=0)) <= cfg.max_abs_error(n) + slack)


def test_weights_helpers_and_validation():
    cfg = QuantConfig(clip=1.0, max_clients=2)
    a = {"w": np.array([[0.25, -0.5]], np.float32)}
    b = {"w": np.array([[0.25, 1.0]], np.float32)}
    qa, qb = quantize_weights(a, cfg), quantize_weights(b, cfg)
    out = dequantize_weights_sum({"w": sum_mod([qa["w"], qb["w"]], cfg)}, 2, cfg)
    np.testing.assert_allclose(out["w"], [[0.5, 0.5]], atol=cfg.max_abs_error(2))
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan]), cfg)
    with pytest.raises(ValueError, match="n_clients"):
        dequantize_sum(np.zeros(1, np.uint32), 3, cfg)
    with pytest.raises(ValueError):
        QuantConfig(clip=0.0, max_clients=2)
    with pytest.raises(ValueError):
        QuantConfig(clip=1.0, max_clients=256, bits=8)


def test_secure_path_sum_then_server_step_matches_plain_aggregation():
    """Clients quantize their deltas to the global model; the server decodes the sum,
    divides by the count and runs the strategy's server step (equal num_examples here)."""
    from services.executor.ml.strategies import make_strategy

    cfg = QuantConfig(clip=1.0, max_clients=4)
    rng = np.random.default_rng(1)
    glob = {"w": rng.normal(size=(3, 2)).astype(np.float32)}
    clients = [{"w": glob["w"] + rng.uniform(-0.5, 0.5, size=(3, 2))} for _ in range(3)]
    strategy = make_strategy("fedavgm", {"server_lr": 0.7, "server_momentum": 0.9})

    _, plain = strategy.aggregate(strategy.init_state(glob), glob, [(c, 10) for c in clients])
    codes = [quantize_weights({"w": c["w"] - glob["w"]}, cfg) for c in clients]
    total = dequantize_weights_sum({"w": sum_mod([c["w"] for c in codes], cfg)}, 3, cfg)
    average = {"w": glob["w"] + total["w"] / 3}
    _, secure = strategy.server_step(strategy.init_state(glob), glob, average)
    # server_lr scales the averaging error; float32 storage adds ~1e-7
    np.testing.assert_allclose(secure["w"], plain["w"], atol=0.7 * cfg.max_abs_error(3) / 3 + 1e-6)
    assert not np.array_equal(secure["w"], glob["w"])
