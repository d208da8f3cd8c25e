"""Update compression: fewer bytes, unbiased quantisation, nothing lost by top-k with error feedback."""

from __future__ import annotations

import numpy as np
import pytest

from services.executor.ml.compression import compress, decompress
from services.executor.transport import to_tensors

SHAPES = {"w": (64, 10), "b": (10,)}


def _delta(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in SHAPES.items()}


def _bytes(arrays) -> int:
    return sum(len(t.data) for t in to_tensors(arrays))


@pytest.mark.parametrize("method,at_least", [("fp16", 2.0), ("bf16", 2.0), ("int8", 3.9), ("int4", 7.5),
                                             ("topk", 4.0)])
def test_each_method_sends_fewer_bytes(method, at_least):
    big = {"w": np.random.default_rng(1).standard_normal((300, 100)).astype(np.float32)}
    sent, _ = compress(big, method, rng=np.random.default_rng(0), fraction=0.1)
    assert _bytes(big) / _bytes(sent) >= at_least


@pytest.mark.parametrize("method,tolerance", [("fp16", 1e-3), ("bf16", 4e-3)])
def test_half_precision_round_trips_within_its_relative_precision(method, tolerance):
    delta = _delta()
    back = decompress(compress(delta, method, rng=np.random.default_rng(0))[0], method, SHAPES)
    for k in delta:
        np.testing.assert_allclose(back[k], delta[k], rtol=tolerance, atol=1e-8)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_stochastic_quantisation_is_unbiased(method):
    delta = _delta()
    rng = np.random.default_rng(42)
    mean = {k: np.zeros(s, np.float64) for k, s in SHAPES.items()}
    trials = 2000
    for _ in range(trials):
        back = decompress(compress(delta, method, rng=rng)[0], method, SHAPES)
        for k in mean:
            mean[k] += back[k] / trials
    for k in delta:
        scale = np.abs(delta[k]).max()
        levels = 127 if method == "int8" else 7
        # standard error of the mean of a {0, step} rounding is at most step / 2 / sqrt(trials)
        assert np.abs(mean[k] - delta[k]).max() < 5 * scale / levels / 2 / np.sqrt(trials)
        one = decompress(compress(delta, method, rng=rng)[0], method, SHAPES)[k]
        assert np.abs(one - delta[k]).max() <= scale / levels + 1e-7  # one draw is off by < one level


def test_topk_with_error_feedback_delivers_every_value_eventually():
    deltas = [_delta(seed) for seed in range(30)]
    residual, delivered = None, {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    for d in deltas:
        sent, residual = compress(d, "topk", rng=np.random.default_rng(0), residual=residual, fraction=0.2)
        for k, v in decompress(sent, "topk", SHAPES).items():
            delivered[k] += v
    for k in SHAPES:  # what was sent plus what is still held back is exactly what was produced
        np.testing.assert_allclose(delivered[k] + residual[k], sum(d[k] for d in deltas), atol=1e-5)


def test_a_corrupt_topk_update_is_refused():
    sent, _ = compress(_delta(), "topk", rng=np.random.default_rng(0))
    sent["w/idx"] = sent["w/idx"] + 10_000
    with pytest.raises(ValueError, match="outside"):
        decompress(sent, "topk", SHAPES)
