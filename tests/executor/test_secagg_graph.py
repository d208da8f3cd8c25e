"""SecAgg+ sparse graph: the pure graph, and the protocol run over it (Bell et al. 2020)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from services.executor.secagg import KeyRing, ProtocolViolation, Stage, TooFewClients, client_start, client_step
from services.executor.secagg.graph import harary, neighbourhoods, sparse_degree
from services.executor.secagg.messages import signed
from tests.executor.test_secagg_protocol import CTX, Sim

NAMES = tuple(f"c{i:02d}" for i in range(24))
K = sparse_degree(len(NAMES))


def test_the_graph_is_symmetric_k_regular_and_fixed_by_the_round():
    graph = neighbourhoods("sparse", NAMES, CTX.info("graph"))
    assert 2 <= K < len(NAMES) - 1
    assert all(len(nbrs) == K and p not in nbrs for p, nbrs in graph.items())
    assert all(p in graph[q] for p, nbrs in graph.items() for q in nbrs)
    assert neighbourhoods("sparse", tuple(reversed(NAMES)), CTX.info("graph")) == graph  # order-free
    other = dataclasses.replace(CTX, transcript="another setup")
    assert neighbourhoods("sparse", NAMES, other.info("graph")) != graph
    assert neighbourhoods("full", NAMES, CTX.info("graph"))["c00"] == frozenset(NAMES) - {"c00"}


def test_the_degree_grows_as_log_n_and_small_cohorts_get_the_full_graph():
    assert sparse_degree(3) == 2 and sparse_degree(10) == 9        # k >= n - 1: the full graph
    for n in (50, 100, 1000, 10_000):
        assert sparse_degree(n) <= 2 * math.ceil(1.5 * math.log2(n)) and sparse_degree(n) % 2 == 0
    assert sparse_degree(10_000) < 3 * sparse_degree(100)          # 100x the clients, < 3x the work
    with pytest.raises(ValueError, match="even degree"):
        harary(NAMES, 3, b"seed")


def test_the_sum_unmasks_exactly_with_dropouts_below_the_threshold():
    sim = Sim(NAMES, graph="sparse", drop={Stage.SHARES: {"c03"}, Stage.MASKED: {"c07", "c11"},
                                           Stage.UNMASK: {"c19"}})
    total, survivors = sim.run()
    assert set(survivors) == set(NAMES) - {"c03", "c07", "c11"}
    assert np.array_equal(total, sim.expected(survivors))
    assert sim.server.threshold == (K + 1) // 2 + 1 < len(NAMES) // 2 + 1   # relative to the neighbourhood


def test_each_client_deals_only_with_its_neighbours():
    sim = Sim(NAMES, graph="sparse", drop={Stage.MASKED: {"c05"}})
    sim.run()
    graph = sim.server.graph
    for n, m in sim.of_stage(Stage.SHARES).items():
        assert set(m.blobs) == graph[n]                   # k encrypted shares, not n - 1
    for n in set(NAMES) - {"c05"}:
        state = sim.clients[n]
        assert set(state.peers) == graph[n] | {n} and set(state.u2) <= graph[n] | {n}
        assert set(state.revealed) == graph[n] | {n}      # one share per neighbour, b or s, never both
        assert state.revealed.get("c05", "s") == "s" and all(v == "b" for p, v in state.revealed.items()
                                                             if p != "c05")


def test_share_count_per_client_grows_as_log_n_not_n():
    counts = {}
    for n in (16, 40):
        sim = Sim(tuple(f"p{i:02d}" for i in range(n)), graph="sparse")
        sim.run()
        counts[n] = {len(m.blobs) for m in sim.of_stage(Stage.SHARES).values()}
    assert counts == {16: {sparse_degree(16)}, 40: {sparse_degree(40)}}
    assert sparse_degree(40) / sparse_degree(16) < 1.4     # 2.5x the clients, 1.33x the shares


def test_too_few_neighbours_left_to_unmask_fails_the_round_with_a_reason():
    graph = neighbourhoods("sparse", NAMES, CTX.info("graph"))
    silent = set(sorted(graph["c05"])[:K - (K + 1) // 2 + 2])   # c05 keeps t - 1 share holders
    sim = Sim(NAMES, graph="sparse", drop={Stage.UNMASK: silent})
    with pytest.raises(TooFewClients, match="shares of c\\d\\d's secret came back, the threshold is"):
        sim.run()


def test_a_client_refuses_keys_of_a_party_outside_its_neighbourhood():
    sim = Sim(NAMES, graph="sparse")
    out = sim.advance()   # KEYS, one per client
    keys = next(m for m in out if m.recipient == "c00")
    stranger = next(p for p in NAMES if p not in sim.server.graph["c00"] and p != "c00")
    other = next(m for m in out if m.recipient == stranger)
    header = {**keys.header, "clients": {**keys.header["clients"], stranger: other.header["clients"][stranger]}}
    forged = signed(CTX, sim.server.keyring, Stage.KEYS, "c00", header)
    with pytest.raises(ProtocolViolation, match="not c00's neighbours"):
        client_step(sim.clients["c00"], forged)


def test_sparse_needs_the_signed_cohort_and_a_known_graph():
    ring = KeyRing.generate("c00")
    with pytest.raises(ValueError, match="signed cohort"):
        client_start(CTX, "c00", "agg", ring, np.zeros(4, np.uint32), graph="sparse")
    with pytest.raises(ValueError, match="secagg_graph must be one of"):
        client_start(CTX, "c00", "agg", ring, np.zeros(4, np.uint32), cohort=NAMES, graph="ring")


# --- the flow parameter and the signed setup ------------------------------------------------------

def _problems(params) -> dict[str, str]:
    from shared.algorithms import validate_params
    from shared.builtin_algorithms import FEDAVG

    return {e.path: e.reason for e in validate_params(FEDAVG, params, "steps[0].params")}


def test_the_splitter_checks_secagg_graph():
    assert _problems({"secure_aggregation": True, "secagg_graph": "sparse"}) == {}
    assert "must be one of" in _problems({"secure_aggregation": True, "secagg_graph": "ring"})["steps[0].params.secagg_graph"]
    assert "needs secure_aggregation" in _problems({"secagg_graph": "sparse"})["steps[0].params.secagg_graph"]


def test_a_client_refuses_a_setup_whose_graph_is_not_the_flows():
    from services.executor.federation.transcript import SetupRejected, check_setup, setup_for

    model = {"w": np.zeros(3, np.float32)}
    cohort = tuple(f"p{i:02d}" for i in range(40))
    params = {"secure_aggregation": True, "min_clients": 3, "secagg_graph": "sparse"}
    setup = setup_for(params, round=1, attempt=1, global_w=model, shape={"n_features": 3, "n_classes": 2},
                      cohort=cohort, clip=4.0, weight_scale=1.0)
    assert setup.graph == "sparse" and setup.threshold == (sparse_degree(40) + 1) // 2 + 1
    check_setup(setup, "p00", model, params, clip=4.0)
    full = {**params, "secagg_graph": "full"}   # the flow says full: a sparse setup would weaken t
    with pytest.raises(SetupRejected, match="wrong_mode: round 1: graph 'sparse'"):
        check_setup(setup, "p00", model, full, clip=4.0)
    with pytest.raises(SetupRejected, match="threshold"):
        check_setup(dataclasses.replace(setup, threshold=setup.threshold - 1), "p00", model, params, clip=4.0)
    with pytest.raises(SetupRejected, match="exceeds the 17 parties sharing each secret"):
        setup_for({**params, "secagg_threshold": 30}, round=1, attempt=1, global_w=model,
                  shape={"n_features": 3, "n_classes": 2}, cohort=cohort, clip=4.0, weight_scale=1.0)
