"""Example-level DP-SGD (Opacus) in a client's own training, and as an option of ferry.fedavg."""

from __future__ import annotations

import asyncio
import copy
import math
import time

import numpy as np
import pytest

from services.demo import DEMO_FLOW, prepare_parties
from services.embedded import EmbeddedPlatform
from services.executor.ml.local_dp import LocalDp
from services.executor.ml.models import ModelSpec, build_model, get_weights
from services.executor.ml.training import TrainConfig, train_local
from services.splitter.core.flow_document import load_document, parse_flow_document
from shared import topics
from shared.algorithms import validate_params
from shared.builtin_algorithms import FEDAVG
from shared.wire import codec


def _moved(dp, X, y, *, lr=0.1, batch=20):
    model = build_model(ModelSpec.from_params({"model": "logreg"}, X.shape[1], 2), 0)
    before = get_weights(model)
    result = train_local(model, X, y, TrainConfig(1, batch, lr, "sgd", 0.0, dp), epoch_offset=0, seed=1)
    return math.sqrt(sum(float(((result.weights[k] - before[k]) ** 2).sum()) for k in before)), result


def test_each_examples_gradient_is_clipped_and_noise_is_added():
    rng = np.random.default_rng(0)   # test data only
    X, y = rng.normal(size=(200, 5)) * 1000.0, rng.integers(0, 2, 200)   # huge gradients
    plain, _ = _moved(None, X, y)
    clipped, _ = _moved(LocalDp(0.0, max_grad_norm=0.1), X, y)
    noised, _ = _moved(LocalDp(1.0, max_grad_norm=0.1), X, y)
    steps = TrainConfig(1, 20).dp_steps(200)
    assert steps == 10
    assert clipped <= 0.1 * 0.1 * steps + 1e-6 < plain / 100   # lr * clip * steps bounds the move
    assert noised != pytest.approx(clipped, rel=1e-3)          # same batches, so the difference is noise


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    dp = LocalDp(1.0)
    assert dp.epsilon(0, 0.1) == 0.0
    assert 0 < dp.epsilon(10, 0.1) < dp.epsilon(100, 0.1) < dp.epsilon(1000, 0.1) < math.inf
    assert LocalDp(2.0).epsilon(100, 0.1) < dp.epsilon(100, 0.1)
    assert LocalDp(0.0).epsilon(1, 0.1) == math.inf


def _problems(params):
    return {e.path.rsplit(".", 1)[1]: e.reason for e in validate_params(FEDAVG, params, "steps[0].params")}


def test_the_splitter_checks_local_dp_params():
    assert _problems({"local_dp_noise_multiplier": 1.1, "local_dp_max_grad_norm": 0.5}) == {}
    assert ">=" in _problems({"local_dp_noise_multiplier": 0.0})["local_dp_noise_multiplier"]
    assert "fedprox" in _problems({"local_dp_noise_multiplier": 1.0, "strategy": "fedprox",
                                   "mu": 0.1})["local_dp_noise_multiplier"]
    assert "no effect" in _problems({"local_dp_max_grad_norm": 0.5})["local_dp_max_grad_norm"]


def test_fedavg_clients_train_with_dp_sgd_and_report_their_epsilon(tmp_path):
    document = copy.deepcopy(dict(load_document(DEMO_FLOW.read_text())))
    train = next(s for s in document["steps"] if s["name"] == "train")
    train["params"].update(rounds=3, local_dp_noise_multiplier=1.0, local_dp_max_grad_norm=1.0)
    document["steps"] = [s for s in document["steps"] if s["name"] in ("validate", "standardise", "train")]
    prepare_parties(tmp_path)
    flow = parse_flow_document(document, default_flow_id=f"local-dp-{int(time.time())}")

    async def run():
        async with EmbeddedPlatform(tmp_path) as platform:
            await platform.submit(flow)
            view = await platform.wait_for(flow.flow_id, timeout_s=600)
            return view, [codec.decode(r.value).event for r in platform.bus.records(topics.PROGRESS.name)]

    view, progress = asyncio.run(run())
    assert view["status"] == "SUCCEEDED", view
    reported = {}
    for p in progress:
        if ".train" in p.task_id and p.algo_task_id.endswith(".client") and "local_dp_epsilon" in p.metrics:
            reported.setdefault(p.algo_task_id, []).append((p.round, p.metrics["local_dp_epsilon"]))
    assert len(reported) == 3, reported   # every hospital
    for rounds in reported.values():
        eps = [e for _, e in sorted(rounds)]
        assert len(eps) == 3 and 0 < eps[0] < eps[1] < eps[2] < math.inf   # it accumulates over rounds
