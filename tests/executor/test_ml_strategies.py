"""Server strategies against values computed by hand (derivations in the comments)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from services.executor.ml import aggregation
from services.executor.ml.strategies import (FedAvg, FedAvgM, FedOpt, Krum, ServerState,
                                             make_strategy, state_from_arrays, state_to_arrays)
from services.executor.ml.weights import WeightsMismatch
from shared.errors import ConfigurationError


def w(**arrays):
    return {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}


def clients_averaging_to(target):
    """Two clients, n = 1 and 3, whose weighted mean is `target` but whose plain mean is not:
    (target + 3d) * 1/4 + (target - d) * 3/4 = target."""
    d = np.ones_like(target)
    return [(w(x=target + 3 * d), 1), (w(x=target - d), 3)]


def assert_weights(actual, expected, tol=1e-12):
    assert list(actual) == list(expected)
    for k in expected:
        np.testing.assert_allclose(actual[k], expected[k], rtol=0, atol=tol, err_msg=k)


# --- FedAvg / FedProx -------------------------------------------------------------

def test_fedavg_weights_by_num_examples():
    # w: (1*1 + 3*3)/4 = 2.5, (1*4 + 3*0)/4 = 1;  b: (1*0 + 3*2)/4 = 1.5
    updates = [(w(w=[1.0, 4.0], b=[0.0]), 1), (w(w=[3.0, 0.0], b=[2.0]), 3)]
    glob = w(w=[9.0, 9.0], b=[9.0])
    for name in ("fedavg", "fedprox"):
        s = make_strategy(name, {"mu": 0.1})
        state, new = s.aggregate(s.init_state(glob), glob, updates)
        assert_weights(new, w(w=[2.5, 1.0], b=[1.5]))
        assert state.step == 1 and state.strategy == name


def _float32_clients(seed: int, n: int = 5, size: int = 3 * aggregation.FOLD_SLICE + 7):
    rng = np.random.default_rng(seed)
    return {f"party-{i}": ({"w": rng.standard_normal(size).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)},
                           int(rng.integers(1, 5000))) for i in range(n)}


@pytest.mark.parametrize("arrival", [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]])
def test_ordered_fold_is_the_list_average_bit_for_bit_whatever_the_arrival_order(arrival):
    clients = _float32_clients(7)
    names = sorted(clients)
    fold = aggregation.OrderedFold(names)
    for i in arrival:
        fold.add(names[i], *clients[names[i]])
    expected = aggregation.weighted_average([clients[c] for c in names])
    got = fold.close()
    assert all(np.array_equal(got[k], expected[k]) for k in expected)
    # ... and within float64 rounding of sum_k (n_k / N) w_k
    total = sum(n for _, n in clients.values())
    for k in expected:
        np.testing.assert_allclose(got[k], sum(w[k].astype(np.float64) * n / total for w, n in clients.values()),
                                   rtol=1e-12, atol=1e-12)


def test_ordered_fold_holds_only_early_arrivals_and_skips_a_silent_client():
    clients = _float32_clients(8, n=4, size=10)
    names = sorted(clients)
    fold = aggregation.OrderedFold(names)
    fold.add(names[2], *clients[names[2]])
    fold.add(names[3], *clients[names[3]])
    assert fold.waiting == 2          # both wait for names[0] (names[1] never answers)
    fold.add(names[0], *clients[names[0]])
    assert fold.waiting == 2          # names[0] folded; names[2:] still wait behind the silent names[1]
    with pytest.raises(ValueError):
        fold.add(names[0], *clients[names[0]])  # one update per client
    got = fold.close()
    expected = aggregation.weighted_average([clients[c] for c in (names[0], names[2], names[3])])
    assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_new_global_keeps_the_global_dtype_and_order():
    glob = {"b": np.zeros(1, np.float32), "a": np.zeros(2, np.float32)}
    updates = [({"a": np.array([1.0, 2.0]), "b": np.array([3.0])}, 2)]
    _, new = FedAvg().aggregate(FedAvg().init_state(glob), glob, updates)
    assert list(new) == ["b", "a"] and all(v.dtype == np.float32 for v in new.values())


def test_updates_are_validated():
    glob = w(x=[0.0, 0.0])
    s = FedAvg()
    with pytest.raises(WeightsMismatch, match="update 1"):
        s.aggregate(s.init_state(glob), glob, [(w(x=[1.0, 2.0]), 1), (w(x=[1.0]), 1)])
    with pytest.raises(WeightsMismatch, match="NaN"):
        s.aggregate(s.init_state(glob), glob, [(w(x=[np.nan, 2.0]), 1)])
    with pytest.raises(ValueError, match="no training examples"):
        s.aggregate(s.init_state(glob), glob, [(w(x=[1.0, 2.0]), 0)])
    with pytest.raises(ValueError, match="no client updates"):
        s.aggregate(s.init_state(glob), glob, [])


# --- FedAvgM --------------------------------------------------------------------

def test_fedavgm_two_steps():
    s = FedAvgM(server_lr=0.5, momentum=0.9)
    x0 = w(x=[1.0, 0.0])
    # step 1: avg = [0, 1]; g = x0 - avg = [1, -1]; v = 0.9*0 + g = [1, -1]
    #         x1 = x0 - 0.5 v = [0.5, 0.5]
    state, x1 = s.aggregate(s.init_state(x0), x0, [(w(x=[0.0, 1.0]), 5)])
    assert_weights(x1, w(x=[0.5, 0.5]))
    assert_weights(state.slots["momentum"], w(x=[1.0, -1.0]))
    # step 2: avg of [0, 0] and [1, 0] (equal n) = [0.5, 0]; g = x1 - avg = [0, 0.5]
    #         v = 0.9*[1, -1] + [0, 0.5] = [0.9, -0.4];  x2 = x1 - 0.5 v = [0.05, 0.7]
    state, x2 = s.aggregate(state, x1, [(w(x=[0.0, 0.0]), 2), (w(x=[1.0, 0.0]), 2)])
    assert_weights(x2, w(x=[0.05, 0.7]))
    assert_weights(state.slots["momentum"], w(x=[0.9, -0.4]))
    assert state.step == 2


def test_fedavgm_without_momentum_and_unit_lr_is_fedavg():
    # x' = x - 1 * (x - avg) = avg, the weighted mean [1, 2]
    x0 = w(x=[5.0, -5.0])
    updates = [(w(x=[3.0, 0.0]), 1), (w(x=[0.0, 3.0]), 2)]
    s = FedAvgM(server_lr=1.0, momentum=0.0)
    _, new = s.aggregate(s.init_state(x0), x0, updates)
    assert_weights(new, w(x=[1.0, 2.0]))


# --- FedOpt (Reddi et al. 2021, Algorithm 2) ------------------------------------------

def test_fedadam_two_steps():
    s = FedOpt("adam", server_lr=1.0, beta1=0.5, beta2=0.5, tau=1.0)
    x0 = np.zeros(3)
    # step 1: d = [1, -7, 0]; m = 0.5 d = [0.5, -3.5, 0]
    #         v = 0.5*tau^2 + 0.5 d^2 = [1, 25, 0.5]
    #         x1 = m / (sqrt(v) + 1) = [0.5/2, -3.5/6, 0] = [0.25, -7/12, 0]
    state, x1 = s.aggregate(s.init_state(w(x=x0)), w(x=x0),
                            clients_averaging_to(x0 + [1.0, -7.0, 0.0]))
    assert_weights(x1, w(x=[0.25, -7 / 12, 0.0]))
    assert_weights(state.slots["v"], w(x=[1.0, 25.0, 0.5]))
    # step 2: d = [-1, 5, 0]; m = 0.5 m + 0.5 d = [-0.25, 0.75, 0]
    #         v = 0.5 v + 0.5 d^2 = [1, 25, 0.25]
    #         x2 = x1 + m / (sqrt(v) + 1) = x1 + [-0.125, 0.125, 0]
    state, x2 = s.aggregate(state, x1, clients_averaging_to(x1["x"] + [-1.0, 5.0, 0.0]))
    assert_weights(x2, w(x=[0.125, -7 / 12 + 0.125, 0.0]))
    assert_weights(state.slots["m"], w(x=[-0.25, 0.75, 0.0]))
    assert_weights(state.slots["v"], w(x=[1.0, 25.0, 0.25]))


def test_fedyogi_two_steps():
    s = FedOpt("yogi", server_lr=1.0, beta1=0.5, beta2=0.5, tau=1.0)
    x0 = np.zeros(3)
    # step 1: v0 = 1; d = [1, -4, 0]; d^2 = [1, 16, 0]; sign(v0 - d^2) = [0, -1, 1]
    #         v = v0 - 0.5 d^2 sign = [1, 1 + 8, 1] = [1, 9, 1];  m = [0.5, -2, 0]
    #         x1 = m / (sqrt(v) + 1) = [0.25, -0.5, 0]
    state, x1 = s.aggregate(s.init_state(w(x=x0)), w(x=x0),
                            clients_averaging_to(x0 + [1.0, -4.0, 0.0]))
    assert_weights(x1, w(x=[0.25, -0.5, 0.0]))
    assert_weights(state.slots["v"], w(x=[1.0, 9.0, 1.0]))
    # step 2: d = [4, 0, 0.5]; m = 0.5 m + 0.5 d = [2.25, -1, 0.25]
    #         v: [1 + 0.5*16 (sign -1), 9 - 0 , 1 - 0.5*0.25 (sign +1)] = [9, 9, 0.875]
    #         x2 = x1 + [2.25/4, -1/4, 0.25/(sqrt(0.875) + 1)]
    state, x2 = s.aggregate(state, x1, clients_averaging_to(x1["x"] + [4.0, 0.0, 0.5]))
    assert_weights(state.slots["v"], w(x=[9.0, 9.0, 0.875]))
    assert_weights(x2, w(x=[0.25 + 0.5625, -0.5 - 0.25, 0.25 / (math.sqrt(0.875) + 1)]))


def test_fedadagrad_two_steps():
    s = FedOpt("adagrad", server_lr=1.0, beta1=0.5, beta2=0.99, tau=3.0)
    x0 = np.zeros(2)
    # step 1: v0 = 9; d = [4, 0]; v = v0 + d^2 = [25, 9]; m = [2, 0]
    #         x1 = m / (sqrt(v) + 3) = [2/8, 0] = [0.25, 0]
    state, x1 = s.aggregate(s.init_state(w(x=x0)), w(x=x0), clients_averaging_to(x0 + [4.0, 0.0]))
    assert_weights(x1, w(x=[0.25, 0.0]))
    # step 2: d = [0, 4]; v = [25, 25] (adagrad never forgets: beta2 unused); m = [1, 2]
    #         x2 = x1 + [1/8, 2/8]
    state, x2 = s.aggregate(state, x1, clients_averaging_to(x1["x"] + [0.0, 4.0]))
    assert_weights(state.slots["v"], w(x=[25.0, 25.0]))
    assert_weights(x2, w(x=[0.375, 0.25]))


def test_server_lr_scales_the_fedopt_step():
    # Same first Adam step as above, server_lr 0.1: x1 = 0.1 * [0.25, -7/12, 0].
    s = FedOpt("adam", server_lr=0.1, beta1=0.5, beta2=0.5, tau=1.0)
    x0 = w(x=np.zeros(3))
    _, x1 = s.aggregate(s.init_state(x0), x0, clients_averaging_to(np.array([1.0, -7.0, 0.0])))
    assert_weights(x1, w(x=[0.025, -0.7 / 12, 0.0]))


# --- robust rules ------------------------------------------------------------------

def test_median_ignores_one_outlier():
    glob = w(x=[0.0, 0.0])
    updates = [(w(x=[1.0, 10.0]), 1), (w(x=[2.0, 20.0]), 1), (w(x=[100.0, -50.0]), 10**6)]
    s = make_strategy("median", {})
    _, new = s.aggregate(s.init_state(glob), glob, updates)
    assert_weights(new, w(x=[2.0, 10.0]))  # per coordinate: median(1,2,100), median(10,20,-50)
    even = updates + [(w(x=[3.0, 0.0]), 1)]  # even count: mean of the middle two
    _, new = s.aggregate(s.init_state(glob), glob, even)
    assert_weights(new, w(x=[2.5, 5.0]))   # (2+3)/2, (0+10)/2


def test_trimmed_mean_drops_the_extremes_of_each_coordinate():
    glob = w(a=[0.0], b=[0.0])
    cols = [(1, -100), (2, 0), (3, 1), (4, 2), (100, 3)]
    updates = [(w(a=[a], b=[b]), 1) for a, b in cols]
    s = make_strategy("trimmed_mean", {"trim_fraction": 0.2})  # floor(0.2*5) = 1 per end
    _, new = s.aggregate(s.init_state(glob), glob, updates)
    assert_weights(new, w(a=[3.0], b=[1.0]))  # mean(2,3,4), mean(0,1,2)
    s = make_strategy("trimmed_mean", {"trim_fraction": 0.19})  # floor(0.95) = 0: plain mean
    _, new = s.aggregate(s.init_state(glob), glob, updates)
    assert_weights(new, w(a=[22.0], b=[-94 / 5]))


def test_krum_picks_the_client_closest_to_its_neighbours():
    # Points A(0,0) B(1,0) C(0,2) D(1,1) E(10,10, the outlier); n = 5, f = 1: 2 neighbours.
    # Squared distances: AB 1, AC 4, AD 2, AE 200, BC 5, BD 1, BE 181, CD 2, CE 164, DE 162.
    # Scores: A 1+2=3, B 1+1=2, C 2+4=6, D 1+2=3, E 162+164=326 -> B.
    # The coordinates sit in two arrays, so the distance must span both.
    points = [(0, 0), (1, 0), (0, 2), (1, 1), (10, 10)]
    updates = [(w(a=[p[0]], b=[[p[1]]]), 1) for p in points]
    updates[4] = (updates[4][0], 10**9)  # a huge claimed count must not matter
    vectors = np.array(points, dtype=np.float64)
    np.testing.assert_allclose(aggregation.krum_scores(vectors, 1), [3, 2, 6, 3, 326])
    assert aggregation.krum_select(updates, 1) == 1
    glob = w(a=[0.0], b=[[0.0]])
    s = make_strategy("krum", {"krum_f": 1})
    _, new = s.aggregate(s.init_state(glob), glob, updates)
    assert_weights(new, w(a=[1.0], b=[[0.0]]))


def test_krum_default_f_and_too_few_clients():
    assert Krum(trim_fraction=0.2).byzantine_count(5) == 1
    assert Krum(f=2).byzantine_count(100) == 2
    glob = w(x=[0.0])
    updates = [(w(x=[1.0]), 1), (w(x=[2.0]), 1), (w(x=[3.0]), 1)]
    s = Krum(f=1)  # needs f + 3 = 4 updates
    with pytest.raises(ValueError, match="at least f \\+ 3 = 4"):
        s.aggregate(s.init_state(glob), glob, updates)


# --- construction and checkpoints ---------------------------------------------------

def test_make_strategy_reads_the_flow_params():
    assert make_strategy("fedavgm", {"server_lr": 0.3, "server_momentum": 0.5, "lr": 9}) == \
        FedAvgM(0.3, 0.5)
    assert make_strategy("fedyogi", {"server_lr": 0.01, "tau": 1e-2}) == \
        FedOpt("yogi", 0.01, 0.9, 0.99, 1e-2)
    assert not make_strategy("krum", {}).supports_secure_aggregation
    assert make_strategy("fedadam", {}).supports_secure_aggregation
    with pytest.raises(ConfigurationError, match="unknown strategy"):
        make_strategy("fedsgd", {})
    with pytest.raises(ConfigurationError, match="trim_fraction"):
        make_strategy("trimmed_mean", {"trim_fraction": 0.5})
    with pytest.raises(ConfigurationError):
        make_strategy("fedadam", {"beta2": 1.0})


def test_state_of_another_strategy_is_refused():
    glob = w(x=[0.0])
    state = FedOpt("adam").init_state(glob)
    with pytest.raises(ValueError, match="belongs to strategy 'fedadam'"):
        FedOpt("yogi").aggregate(state, glob, [(w(x=[1.0]), 1)])


def checkpoint_roundtrip(state: ServerState) -> ServerState:
    arrays, meta = state_to_arrays(state)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as data:
        loaded = {k: data[k] for k in data.files}
    return state_from_arrays(loaded, json.loads(json.dumps(meta)))


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "median"])
def test_checkpointed_state_continues_identically(name):
    s = make_strategy(name, {"server_lr": 0.5})
    rng = np.random.default_rng(7)
    glob = {"w": rng.normal(size=(2, 3)).astype(np.float32), "b": np.zeros(2, np.float32)}
    rounds = [[({k: v + rng.normal(size=v.shape) for k, v in glob.items()}, i + 1) for i in range(3)]
              for _ in range(3)]
    state, g = s.init_state(glob), glob
    state, g = s.aggregate(state, g, rounds[0])
    resumed_state, resumed_g = checkpoint_roundtrip(state), {k: v.copy() for k, v in g.items()}
    for r in rounds[1:]:
        state, g = s.aggregate(state, g, r)
        resumed_state, resumed_g = s.aggregate(resumed_state, resumed_g, r)
    assert resumed_state.step == state.step == 3
    for k in g:
        assert np.array_equal(g[k], resumed_g[k])
    for slot in state.slots:
        for k in state.slots[slot]:
            assert np.array_equal(state.slots[slot][k], resumed_state.slots[slot][k])


def test_fedavg_sum_is_the_same_bits_whatever_its_block_size(monkeypatch):
    """The blocked float64 sum does per element exactly what a whole-array one does, in the same
    order: a resumed flow's aggregate cannot drift with how the work is cut."""
    rng = np.random.default_rng(5)
    updates = [({"w": rng.standard_normal((37, 11)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)},
                int(n)) for n in rng.integers(1, 1000, size=7)]
    total = sum(n for _, n in updates)
    expected = {}
    for k in ("w", "b"):
        acc = np.zeros(updates[0][0][k].shape, np.float64)
        for w, n in updates:
            acc += np.array(w[k], np.float64) * float(n)
        expected[k] = acc / total
    for block in (1, 3, 64, 1 << 15):
        monkeypatch.setattr(aggregation, "FOLD_SLICE", block)
        got = aggregation.weighted_average(updates)
        assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes() for k, v in expected.items()}
