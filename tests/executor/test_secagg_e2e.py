"""Secure aggregation inside ferry.fedavg, end to end on the embedded platform.

One flow runs the demo (examples/flows/demo_breast_cancer.yaml) with
`secure_aggregation: true` on its train step, plus a plain copy of that step
(`train-plain`) on the same data and seeds, so both runs share one platform
start-up and their accuracies compare on the same held-out rows. The round
topic is then read back: it is everything the aggregator could ever see.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from services.executor.algorithms.federated import _Aggregation
from services.executor.secagg.encoding import DEFAULT_CLIP, client_weight, encode_update, quant_config
from services.executor.secagg.shell import masked_vectors
from services.executor.transport import from_tensors
from shared.errors import ConfigurationError
from shared.events import RoundKind
from tests.executor.demo_run import aggregator_of, demo_document, run_demo_variant


def _secure_demo_flow() -> dict:
    document = demo_document()
    steps = document["steps"]
    train = next(s for s in steps if s["name"] == "train")
    plain = copy.deepcopy(train)
    plain["name"] = "train-plain"
    train["params"]["secure_aggregation"] = True
    # The centralized baseline and its comparison are the demo test's business, not this one's.
    document["steps"] = [s for s in steps if s["name"] != "baseline"] + [plain]
    return document


@pytest.fixture(scope="module")
def secure_run(tmp_path_factory):
    demo = run_demo_variant(tmp_path_factory.mktemp("secagg-demo"), _secure_demo_flow(), "secagg", timeout_s=240)
    return demo.view, demo.rounds


def test_secure_fedavg_matches_the_plain_run_within_one_point(secure_run):
    view, _ = secure_run
    assert view["status"] == "SUCCEEDED", view
    _, secure = aggregator_of(view, "train")
    _, plain = aggregator_of(view, "train-plain")
    assert secure["metrics"]["test_n"] == plain["metrics"]["test_n"] > 100
    assert plain["metrics"]["test_accuracy"] > 0.9
    assert abs(secure["metrics"]["test_accuracy"] - plain["metrics"]["test_accuracy"]) <= 0.01
    evaluated = [a["metrics"]["test_accuracy"] for a in next(t for t in view["tasks"]
                                                             if t["step"] == "evaluate")["algorithm_tasks"]]
    assert all(acc > 0.85 for acc in evaluated)  # the securely trained model is the step's output


def test_the_aggregator_never_receives_an_unmasked_update(secure_run):
    view, messages = secure_run
    task, aggregator = aggregator_of(view, "train")
    secure = [m for m in messages if m.task_id == task["task_id"]]
    to_aggregator = [m for m in secure if m.recipient == aggregator["party"]]
    assert to_aggregator and not any(m.kind == RoundKind.UPDATE for m in secure)
    assert {m.kind for m in to_aggregator} <= {RoundKind.JOIN, RoundKind.SECAGG, RoundKind.EVALUATION}
    assert all(m.signature for m in secure if m.kind == RoundKind.SECAGG)
    masked = masked_vectors(to_aggregator)
    assert len(masked) == 3 * 20  # three clients, twenty rounds
    # Masked inputs are uniform on [0, 2^32): the unmasked codes all lie in [0, L], L = (2^32 - 1) // 3.
    words = np.concatenate(masked).astype(np.float64) / 2 ** 32
    assert stats.kstest(words, "uniform").pvalue > 1e-5
    assert np.mean(words > 1 / 3) > 0.6


def test_masked_inputs_differ_from_the_plain_updates(secure_run):
    """Round 1 trains alike in both steps (same model init, seeds, data): compare directly."""
    view, messages = secure_run
    plain_task, _ = aggregator_of(view, "train-plain")
    secure_task, _ = aggregator_of(view, "train")
    plain = [m for m in messages if m.task_id == plain_task["task_id"] and m.round == 1]
    announce = next(m for m in plain if m.kind == RoundKind.ANNOUNCE)
    global_w = from_tensors(announce.tensors)
    updates = {m.sender: m for m in plain if m.kind == RoundKind.UPDATE}
    scale = max(float(u.num_examples) for u in updates.values())
    cfg = quant_config(DEFAULT_CLIP, 3)  # what the aggregator announces when secagg_clip is not set
    secure_round1 = [m for m in messages if m.task_id == secure_task["task_id"] and m.round == 1
                     and m.kind == RoundKind.SECAGG and json.loads(m.body)["stage"] == "masked"]
    assert len(secure_round1) == 3
    for m in secure_round1:
        update = updates[m.sender]
        codes = encode_update(from_tensors(update.tensors), global_w, client_weight(update.num_examples, scale),
                              update.metrics["loss"], cfg)
        (y,) = masked_vectors([m])
        assert y.shape == codes.shape
        assert np.mean(y == codes) < 0.01
        assert abs(np.corrcoef(y.astype(np.float64), codes.astype(np.float64))[0, 1]) < 0.6


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean", "krum"])
def test_robust_strategies_are_refused_with_secure_aggregation(strategy):
    ctx = SimpleNamespace(params={"strategy": strategy, "secure_aggregation": True},
                          task=SimpleNamespace(peers=(), party="coordinator"))
    with pytest.raises(ConfigurationError, match=f"{strategy}.*cannot run with secure_aggregation"):
        _Aggregation(ctx, channel=None)
    # and the plain path keeps them
    _Aggregation(SimpleNamespace(params={"strategy": strategy}, task=ctx.task), channel=None)
