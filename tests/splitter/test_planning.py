from __future__ import annotations

import pytest

from services.splitter.core.planning import NotPlannable, plan_flow
from shared.events import Peer
from tests.splitter.builders import flow, parties, step

TRAIN_PARTIES = parties("client", "h-b", "h-a", data="bc") + parties("aggregator", "z-coord")


def test_one_task_per_step_one_algorithm_task_per_party(registry):
    (task,) = plan_flow(flow(step("train", algorithm="ferry.fedavg", parties=TRAIN_PARTIES,
                                  params={"rounds": 3})), registry, planned_at_ms=1234)
    assert (task.task_id, task.flow_id, task.step, task.index, task.planned_at_ms) == (
        "flow-1.train", "flow-1", "train", 0, 1234)
    assert task.flow_task_ids == ("flow-1.train",)
    assert [(a.party, a.role, a.data_ref) for a in task.algorithm_tasks] == [
        ("h-b", "client", "bc"), ("h-a", "client", "bc"), ("z-coord", "aggregator", "")]
    assert [a.algo_task_id for a in task.algorithm_tasks] == [
        "flow-1.train.h-b.client", "flow-1.train.h-a.client", "flow-1.train.z-coord.aggregator"]
    for algo in task.algorithm_tasks:
        assert (algo.task_id, algo.flow_id, algo.step, algo.algorithm, algo.version, algo.attempt) == (
            "flow-1.train", "flow-1", "train", "ferry.fedavg", "1", 1)


def test_peers_are_every_party_and_role_of_the_step_sorted(registry):
    (task,) = plan_flow(flow(step("train", algorithm="ferry.fedavg", parties=TRAIN_PARTIES)), registry, 0)
    expected = (Peer("h-a", "client"), Peer("h-b", "client"), Peer("z-coord", "aggregator"))
    assert all(algo.peers == expected for algo in task.algorithm_tasks)


def test_params_carry_the_algorithms_defaults_in_a_mapping_per_task(registry):
    (task,) = plan_flow(flow(step("train", algorithm="ferry.fedavg", parties=TRAIN_PARTIES,
                                  params={"rounds": 3, "lr": 0.5})), registry, 0)
    params = task.algorithm_tasks[0].params
    assert params["rounds"] == 3 and params["lr"] == 0.5
    assert params["strategy"] == "fedavg" and params["secure_aggregation"] is False and params["batch_size"] == 32
    assert task.algorithm_tasks[0].params is not task.algorithm_tasks[1].params


def test_tasks_come_in_dependency_order_ties_broken_by_position(registry):
    f = flow(step("evaluate", "train"), step("train", "prepare-b", "prepare-a"), step("prepare-b"),
             step("prepare-a"), step("report", "evaluate", "prepare-a"))
    tasks = plan_flow(f, registry, 0)
    assert [t.step for t in tasks] == ["prepare-b", "prepare-a", "train", "evaluate", "report"]
    assert [t.index for t in tasks] == [0, 1, 2, 3, 4]
    assert all(t.flow_task_ids == tuple(x.task_id for x in tasks) for t in tasks)


def test_depends_on_holds_the_task_ids_of_the_dependencies(registry):
    tasks = {t.step: t for t in plan_flow(flow(step("a"), step("b"), step("c", "b", "a")), registry, 0)}
    assert tasks["c"].depends_on == ("flow-1.b", "flow-1.a")
    assert tasks["a"].depends_on == ()


def test_the_same_flow_always_plans_the_same_way(registry):
    f = flow(step("a"), step("b", "a"), step("c", "a"))
    assert plan_flow(f, registry, 7) == plan_flow(f, registry, 7)


@pytest.mark.parametrize("bad", [
    flow(step("a", "b"), step("b", "a")),
    flow(step("a", "missing")),
    flow(step("a", algorithm="ferry.unknown")),
])
def test_planning_an_invalid_flow_fails_loudly(registry, bad):
    with pytest.raises(NotPlannable):
        plan_flow(bad, registry, 0)
