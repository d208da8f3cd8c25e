"""The read side the API will use."""

from __future__ import annotations

from services.monitor.core import Outcome
from services.monitor.core.query import get_algo_task, get_flow, get_task, history, list_flows, list_tasks
from shared.events import EntityKind, JobAction, Phase, Status

from tests.monitor.builders import Feed, job, plan, progress, run, seen


def _state():
    feed = Feed()
    ids = ("t1", "t2")
    return run(feed, [plan("t1", ("a1", "a2"), flow_task_ids=ids), job(JobAction.CREATED, "a1"),
                      seen(Phase.RUNNING, "a1"), progress(2, "a1", metrics={"loss": 0.5}),
                      plan("x1", ("xa",), flow_id="f2"), seen(Phase.SUCCEEDED, "xa", task_id="x1", flow_id="f2")])[0]


def test_flow_view_lists_task_statuses_including_unplanned():
    flow = get_flow(_state(), "f1")
    assert (flow.status, flow.task_statuses) == (Status.RUNNING, {"t1": Status.RUNNING, "t2": None})
    assert get_flow(_state(), "nope") is None


def test_task_and_algorithm_task_views():
    state = _state()
    task = get_task(state, "t1")
    assert [(a.algo_task_id, a.status) for a in task.algorithm_tasks] == [("a1", Status.RUNNING),
                                                                          ("a2", Status.PENDING)]
    algo = get_algo_task(state, "a1")
    assert (algo.task_id, algo.flow_id, algo.round, dict(algo.metrics)) == ("t1", "f1", 2, {"loss": 0.5})
    assert get_algo_task(state, "zz") is None and get_task(state, "zz") is None
    assert [t.task_id for t in list_tasks(state, "f1")] == ["t1"]


def test_list_flows_newest_first_and_by_status():
    state = _state()
    assert [f.flow_id for f in list_flows(state)] == ["f2", "f1"]
    assert [f.flow_id for f in list_flows(state, Status.SUCCEEDED)] == ["f2"]
    assert [f.flow_id for f in list_flows(state, limit=1, offset=1)] == ["f1"]


def test_history_of_each_kind_of_entity():
    state = _state()
    algo = history(state, EntityKind.ALGORITHM_TASK, "a1")
    assert [(r.from_status, r.to_status) for r in algo] == [
        (None, Status.PENDING), (Status.PENDING, Status.SCHEDULED), (Status.SCHEDULED, Status.RUNNING)]
    assert all(r.outcome is Outcome.APPLIED and r.cause_event_id for r in algo)
    assert history(state, EntityKind.TASK, "t1")[-1].to_status is Status.RUNNING
    assert history(state, EntityKind.FLOW, "f2")[-1].to_status is Status.SUCCEEDED
    assert history(state, EntityKind.FLOW, "zz") is None
