"""Validation and run time agree on every parameter's range.

For every numeric parameter of every installed algorithm (built-in and plug-in),
any value the splitter's validation accepts must be accepted by the executor code
that consumes it, and values just outside the declared range must be rejected
by validation. Each parameter is routed to a probe that runs the real runtime
code reading it; a new numeric parameter without a probe, or without a stated
reason why run time cannot reject it, fails this test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from services.executor.data.importers import load_source, put_table
from services.executor.data import PartyDataset
from services.executor.federation.rounds import sample_clients
from services.executor.ml.models import ModelSpec, build_model, get_weights
from services.executor.ml.quantize import quantize_weights
from services.executor.ml.strategies import make_strategy
from services.executor.ml.training import TrainConfig, train_local
from services.executor.secagg.encoding import quant_config
from services.executor.federation.transcript import cohort_threshold
from services.executor.federation.updates import clip_update
from services.executor.ml.compression import compress
from services.executor.ml.privacy import central_average, privatize_update, secagg_range
from services.executor.ml.privacy_accounting import PrivacyLedger, round_config
from services.executor.vertical import lr as hetero
from services.executor.vertical.paillier import PaillierBackend, PaillierDecryptor, PlainBackend
from services.executor.secagg.shell import clip_of, requested_threshold
from shared.algorithms import AlgorithmRegistry, ParamSpec, validate_params

X = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
Y = np.array([0, 1] * 6)


def _train(p) -> None:
    model = build_model(ModelSpec.from_params(p, 4, 2), int(p.get("seed", 0)))
    w = get_weights(model)
    train_local(model, X, Y, TrainConfig.from_params(p), epoch_offset=0, seed=int(p.get("seed", 0)),
                global_weights=w)


def _aggregate(p) -> None:
    strategy = make_strategy(p["strategy"], p)
    w = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    n = max(int(p.get("min_clients", 1)), 3)
    updates = [({k: v + i for k, v in w.items()}, 10 + i) for i in range(n)]
    state = strategy.init_state(w)
    strategy.aggregate(state, w, updates)


_STORE = {}


def _split(p) -> None:
    if "dataset" not in _STORE:
        import tempfile

        tmp = tempfile.mkdtemp(prefix="ferry-param-ranges-")
        put_table(tmp, "d", load_source("synthetic:n_rows=40,n_features=3,n_classes=2,seed=1"))
        _STORE["dataset"] = PartyDataset.open(tmp, "d")
    train, test = _STORE["dataset"].train_test_split(p["test_fraction"], int(p.get("seed", 0)))
    assert len(train) and len(test)


def _sample(p) -> None:
    chosen = sample_clients(["a", "b", "c"], float(p["fraction_fit"]), int(p["min_clients"]), 0, 1)
    assert chosen


def _secure(p) -> None:
    cfg = quant_config(clip_of(p), 3)
    quantize_weights({"w": np.linspace(-10, 10, 7)}, cfg)
    assert requested_threshold(p, 3) >= 1


def _cohort(p) -> None:
    t = cohort_threshold({**p, "secure_aggregation": True}, max(int(p.get("min_cohort") or 3), 3))
    assert t >= 2


def _clip_update(p) -> None:
    out = clip_update({"w": np.full(4, 3.0)}, {"w": np.zeros(4)}, float(p["update_clip_norm"]))
    assert np.all(np.isfinite(out["w"]))


def _topk(p) -> None:
    sent, residual = compress({"w": np.linspace(-1, 1, 64, dtype=np.float32)}, "topk",
                              rng=np.random.default_rng(0), fraction=float(p["topk_fraction"]))
    assert sent and residual


def _histogram(p) -> None:
    from ferry_example_histogram.roles import _bins, _edges

    low, high, bins = _bins(p)
    assert len(_edges(low, high, bins)) == bins + 1


def _dp(p) -> None:
    """A DP round as the aggregator and its clients compute it: the round's config (calibrated
    by the accountant when a target epsilon is given), the noised average, a client's noised
    share quantized for secure aggregation, and the epsilon spent."""
    cohort = 3
    cfg = round_config(p, cohort)
    w = {"w": np.zeros(4, np.float32)}
    updates = [{"w": np.full(4, float(i + 1), np.float32)} for i in range(cohort)]
    averaged = central_average(w, updates, cfg)
    share = privatize_update(updates[0], w, cfg, cohort)
    quantize_weights({"w": np.clip(share["w"], -1e30, 1e30)}, quant_config(secagg_range(4.0, cfg, cohort), cohort))
    spent = PrivacyLedger().record(cfg.noise_multiplier).epsilon(cfg.delta)
    assert np.all(np.isfinite(averaged["w"])) and spent > 0


def _hetero_lr(p) -> None:
    """Three epochs of hetero-LR's own math in the clear (one guest with the intercept, one host):
    the schedule's rate, the Taylor residual, the gradient and the L2 step."""
    be, y = PlainBackend(), np.where(Y > 0, 1.0, -1.0)
    x_g, x_h = hetero.with_intercept(X[:, :2].astype(np.float64)), X[:, 2:].astype(np.float64)
    w_g, w_h = np.zeros(3), np.zeros(2)
    for epoch in range(3):
        rate = hetero.learning_rate(p["lr_schedule"], float(p["lr"]), float(p["lr_decay"]), epoch)
        assert rate > 0 and np.isfinite(rate)
        for pos in hetero.batch_positions(len(y), int(p["batch_size"]), int(p["seed"]), epoch):
            u_h, enc_u_h, _ = hetero.host_forward(be, w_h, x_h[pos])
            _, enc_d = hetero.guest_residual(be, [enc_u_h], x_g[pos] @ w_g, y[pos])
            w_g = hetero.step(w_g, hetero.gradient_sum(be, enc_d, x_g[pos]), len(pos), rate, float(p["alpha"]), True)
            w_h = hetero.step(w_h, hetero.gradient_sum(be, enc_d, x_h[pos]), len(pos), rate, float(p["alpha"]), False)
    assert np.abs(np.concatenate([w_g, w_h])).max() < 100, (w_g, w_h)  # trained, not diverging


def _paillier(p) -> None:
    """The arbiter's key of key_bits, as guest and hosts receive and check it, and one value through it."""
    keys = PaillierDecryptor(int(p["key_bits"]))
    backend = PaillierBackend.from_key_wire(keys.backend.key_wire(), "arbiter", int(p["key_bits"]))
    assert keys.decrypt(backend.to_wire(backend.encrypt(np.array([1.5]))), "guest")[0] == 1.5


def _buffer(p) -> None:
    from services.executor.federation.buffered import BufferPolicy, too_stale

    policy = BufferPolicy(min(int(p["async_buffer_size"]), 3), int(p["async_max_staleness"]))
    assert too_stale(policy.max_staleness, 0, policy) is None


# parameter -> (probe, parameters it needs set to reach the code that reads it)
PROBES = {
    "hidden": (_train, {"model": "mlp"}), "local_epochs": (_train, {}), "batch_size": (_train, {}),
    "lr": (_train, {}), "seed": (_train, {}), "mu": (_train, {"strategy": "fedprox"}),
    "test_fraction": (_split, {}),
    "server_lr": (_aggregate, {"strategy": "fedadam"}), "server_momentum": (_aggregate, {"strategy": "fedavgm"}),
    "beta1": (_aggregate, {"strategy": "fedyogi"}), "beta2": (_aggregate, {"strategy": "fedadam"}),
    "tau": (_aggregate, {"strategy": "fedadagrad"}), "trim_fraction": (_aggregate, {"strategy": "trimmed_mean"}),
    "krum_f": (_aggregate, {"strategy": "krum"}),
    "fraction_fit": (_sample, {}), "min_clients": (_sample, {}),
    "secagg_clip": (_secure, {}), "secagg_threshold": (_secure, {}),
    "bins": (_histogram, {}), "low": (_histogram, {}), "high": (_histogram, {}),
    "min_cohort": (_cohort, {"secure_aggregation": True}), "secagg_threshold_fraction": (_cohort, {}),
    "update_clip_norm": (_clip_update, {}), "topk_fraction": (_topk, {"compression": "topk"}),
    "local_dp_clip": (_train, {"local_dp": True}), "local_dp_noise_multiplier": (_train, {"local_dp": True}),
    "async_buffer_size": (_buffer, {"aggregation": "async"}),
    "async_max_staleness": (_buffer, {"aggregation": "async"}),
    "dp_clip": (_dp, {"dp": "central", "dp_noise_multiplier": 1.0}),
    "dp_noise_multiplier": (_dp, {"dp": "distributed", "secure_aggregation": True}),
    # At the widest dp_delta every epsilon the spec allows is reachable; below it the splitter's
    # floor check takes over (test_target_epsilon_floor_is_the_accountants below).
    "dp_target_epsilon": (_dp, {"dp": "central", "dp_delta": 1e-3}),
    "dp_delta": (_dp, {"dp": "central", "dp_target_epsilon": 2.0}),
    "dp_honest_fraction": (_dp, {"dp": "distributed", "secure_aggregation": True, "dp_target_epsilon": 2.0}),
    "alpha": (_hetero_lr, {"lr": 1e-6}),  # lr x alpha < 2 is checked (test_a_diverging_l2_step_is_refused)
    "lr_decay": (_hetero_lr, {"lr_schedule": "inverse"}),
    "key_bits": (_paillier, {"insecure": True}),
}
# Parameters whose value run time only counts with or waits for: nothing there can reject them.
NO_RUNTIME_RANGE = {
    "rounds": "the number of iterations of the round loop",
    "round_timeout_s": "a deadline offset", "timeout_s": "a deadline offset", "sleep_s": "a sleep",
    "min_round_s": "a sleep (less the round's own time)",
    "min_rows": "compared with a row count", "feature_index": "an index checked against the data's width",
    "epochs": "the number of iterations of the epoch loop", "tol": "compared with the change in loss",
    "workers": "a thread-pool size", "threshold": "compared with a predicted probability",
}
CAP = {"min_cohort": 50, "krum_f": 6, "min_clients": 50, "secagg_threshold": 50, "hidden": 512, "local_epochs": 4,
       "batch_size": 100_000, "key_bits": 1024}  # keep probes cheap; their ranges are checked up to here
FLOAT_CAP = 1e6


def _numeric():
    """(spec, param) per distinct numeric ParamSpec: algorithms sharing a declaration are probed once."""
    out, seen = [], set()
    for spec in AlgorithmRegistry.from_entry_points():
        for p in spec.params:
            if p.type in ("int", "float") and not p.choices and p not in seen:
                seen.add(p)
                out.append((spec, p))
    return out


NUMERIC = _numeric()


def test_every_numeric_parameter_has_a_probe_or_a_reason():
    missing = sorted({p.name for _, p in NUMERIC} - set(PROBES) - set(NO_RUNTIME_RANGE))
    assert not missing, f"parameters without a run-time probe: {missing}"
    assert {"test_fraction", "lr", "beta2", "bins"} <= {p.name for _, p in NUMERIC}  # plug-ins are included


def _values(p: ParamSpec):
    low = p.minimum if p.minimum is not None else (0 if p.type == "int" else -FLOAT_CAP)
    high = p.maximum if p.maximum is not None else FLOAT_CAP
    if p.name in CAP:
        high = min(high, CAP[p.name])
    if p.name == "key_bits":  # odd sizes are refused (test_odd_key_bits_are_refused)
        return st.integers(int(low) // 2, int(high) // 2).map(lambda half: 2 * half)
    if p.type == "int":
        return st.integers(int(low), int(high))
    return st.sampled_from([float(low), float(high)]) | st.floats(float(low), float(high), allow_nan=False)


def _base(spec, p: ParamSpec, value) -> dict:
    params = {q.name: q.default for q in spec.params if q.default is not None}
    params.update({"low": 0.0, "high": 1.0, "feature_index": 0} if spec.name.startswith("example.") else {})
    params.update(PROBES.get(p.name, (None, {}))[1])
    params[p.name] = value
    if p.name == "low":  # the spec's own check wants high > low
        params["high"] = value + 1.0
    if p.name == "high":
        params["low"] = value - 1.0
    if p.name == "krum_f":
        params["min_clients"] = value + 3
    if p.name == "secagg_threshold":
        params["min_clients"] = max(params.get("min_clients", 1), 1)
    return {k: v for k, v in params.items() if k in {q.name for q in spec.params}}


@pytest.mark.parametrize("spec,param", [(s, p) for s, p in NUMERIC if p.name in PROBES],
                         ids=lambda x: getattr(x, "name", str(x)))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_values_validation_accepts_are_accepted_at_run_time(spec, param, data):
    value = data.draw(_values(param), label=param.name)
    params = _base(spec, param, value)
    assert validate_params(spec, params) == [], (param.name, value)
    probe, _ = PROBES[param.name]
    probe(spec.with_defaults(params))


@pytest.mark.parametrize("spec,param", [(s, p) for s, p in NUMERIC], ids=lambda x: getattr(x, "name", str(x)))
def test_values_outside_the_range_are_rejected_by_validation(spec, param):
    step = 1 if param.type == "int" else 1e-9
    for bad in ([param.minimum - step] if param.minimum is not None else []) + (
            [param.maximum + step] if param.maximum is not None else []):
        bad = int(bad) if param.type == "int" else bad
        errors = validate_params(spec, _base(spec, param, bad))
        assert any(e.path == f"params.{param.name}" for e in errors), (param.name, bad, errors)


def test_test_fraction_zero_is_refused_before_it_can_fail_every_client():
    from shared.builtin_algorithms import FEDAVG

    errors = validate_params(FEDAVG, {"test_fraction": 0.0})
    assert [e.path for e in errors] == ["params.test_fraction"]


def test_target_epsilon_floor_is_the_accountants():
    """Below the floor the splitter refuses the target, naming the field; at it the accountant
    calibrates even for the most rounds a flow may have."""
    from services.executor.ml.privacy_accounting import calibrate
    from shared.builtin_algorithms import FEDAVG
    from shared.dp_limits import RDP_ORDERS, smallest_target_epsilon
    from opacus.accountants import RDPAccountant

    assert list(RDP_ORDERS) == list(RDPAccountant.DEFAULT_ALPHAS)
    for delta in (1e-30, 1e-12, 1e-5, 1e-3):
        floor = smallest_target_epsilon(delta)
        base = {"dp": "central", "dp_delta": delta}
        low = max(0.03, floor * 0.999)
        if low < floor:
            errors = validate_params(FEDAVG, {**base, "dp_target_epsilon": low})
            assert [e.path for e in errors] == ["params.dp_target_epsilon"] and "dp_delta" in errors[0].reason
        target = max(0.03, floor)
        assert validate_params(FEDAVG, {**base, "dp_target_epsilon": target}) == []
        assert calibrate(target, delta, 10_000) > 0
    with pytest.raises(ValueError, match="too low"):  # what the floor check spares the clients
        calibrate(smallest_target_epsilon(1e-5) * 0.98, 1e-5, 10)


def test_odd_key_bits_are_refused():
    from services.executor.vertical.paillier import PaillierDecryptor
    from shared.builtin_algorithms import HETERO_LR
    from shared.errors import ConfigurationError

    errors = validate_params(HETERO_LR, {"key_bits": 2049})
    assert [e.path for e in errors] == ["params.key_bits"] and "even" in errors[0].reason
    with pytest.raises(ConfigurationError, match="even"):  # phe would search for such a key forever
        PaillierDecryptor(513)


def test_a_diverging_l2_step_is_refused():
    from shared.builtin_algorithms import HETERO_LR

    errors = validate_params(HETERO_LR, {"lr": 0.5, "alpha": 4.0})
    assert [e.path for e in errors] == ["params.alpha"] and "lr x alpha must be < 2" in errors[0].reason
    with pytest.raises(AssertionError):  # what it spares the parties: weights that blow up
        _hetero_lr(HETERO_LR.with_defaults({"lr": 0.5, "alpha": 400.0}))
    _hetero_lr(HETERO_LR.with_defaults({"lr": 0.5, "alpha": 3.9}))
