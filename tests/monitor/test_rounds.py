"""Per-round history: folded from progress behind the fold's guards, bounded, restart-proof, queryable."""

from __future__ import annotations

import json
import math

from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.monitor.core import restore, snapshot_all, snapshot_task
from services.monitor.core.query import task_rounds
from services.monitor.core.rounds import ROUNDS_LIMIT, RoundPoint, record_round
from services.monitor.rounds_api import build_rounds_router
from shared.events import JobAction, Phase

from tests.monitor.builders import Feed, algo_of, job, plan, progress, run, seen


def _running(feed: Feed, algos=("a1",)):
    events = [plan(algos=algos)]
    for a in algos:
        events += [job(JobAction.CREATED, a), seen(Phase.RUNNING, a)]
    return run(feed, events)


def _curve(state, algo="a1") -> list[tuple[int, dict]]:
    return [(p.round, dict(p.metrics)) for p in algo_of(state, algo).rounds]


def test_every_reported_round_is_kept_in_round_order():
    feed = Feed()
    state, _ = _running(feed)
    state, _ = run(feed, [progress(r, metrics={"train_loss": 1.0 / r}) for r in (1, 2, 3)], state)
    assert _curve(state) == [(1, {"train_loss": 1.0}), (2, {"train_loss": 0.5}), (3, {"train_loss": 1 / 3})]
    assert algo_of(state).round == 3  # the current-round view is unchanged


def test_a_later_report_of_a_round_adds_its_evaluation():
    feed = Feed()
    state, _ = _running(feed)
    state, _ = run(feed, [progress(1, metrics={"train_loss": 0.9}), progress(1, metrics={"accuracy": 0.8}),
                          progress(2, metrics={"train_loss": 0.7})], state)
    assert _curve(state) == [(1, {"train_loss": 0.9, "accuracy": 0.8}), (2, {"train_loss": 0.7})]


def test_a_duplicated_report_changes_nothing():
    feed = Feed()
    state, _ = _running(feed)
    env = feed(progress(1, metrics={"train_loss": 0.9}))
    state, _ = run(feed, [env], state)
    again, _ = run(feed, [env], state)
    assert again.tasks["t1"].algos == state.tasks["t1"].algos


def test_a_stale_attempt_never_rewrites_the_curve_and_a_retry_replaces_its_rounds():
    feed = Feed()
    state, _ = _running(feed)
    state, _ = run(feed, [progress(1, metrics={"train_loss": 0.9}), progress(2, metrics={"train_loss": 0.8}),
                          seen(Phase.FAILED, exit_code=1, retriable=True)], state)
    assert algo_of(state).attempt == 2
    state, _ = run(feed, [progress(3, attempt=1, metrics={"train_loss": 0.1}),      # the dead pod's late report
                          job(JobAction.CREATED, attempt=2), seen(Phase.RUNNING, attempt=2),
                          progress(2, attempt=2, metrics={"train_loss": 0.75})], state)  # retrained from round 1
    points = algo_of(state).rounds
    assert [(p.round, p.attempt, dict(p.metrics)) for p in points] == [
        (1, 1, {"train_loss": 0.9}), (2, 2, {"train_loss": 0.75})]


def test_a_final_report_after_the_exit_still_lands_and_reports_without_a_round_do_not():
    feed = Feed()
    state, _ = _running(feed)
    state, _ = run(feed, [progress(1, metrics={"train_loss": 0.9}), seen(Phase.SUCCEEDED),
                          progress(1, metrics={"accuracy": 0.93}), progress(0, metrics={"rows": 5.0})], state)
    assert _curve(state) == [(1, {"train_loss": 0.9, "accuracy": 0.93})]


def test_history_is_bounded_to_the_newest_rounds():
    rounds: tuple[RoundPoint, ...] = ()
    for r in range(1, 8):
        rounds = record_round(rounds, RoundPoint(r, 1, r, {"x": float(r)}), limit=5)
    assert [p.round for p in rounds] == [3, 4, 5, 6, 7]
    feed = Feed()
    state, _ = _running(feed)
    state, _ = run(feed, [progress(r, metrics={"x": 1.0}) for r in range(1, ROUNDS_LIMIT + 6)], state)
    points = algo_of(state).rounds
    assert len(points) == ROUNDS_LIMIT and points[0].round == 6 and points[-1].round == ROUNDS_LIMIT + 5


def test_rounds_survive_a_restart_from_snapshots_and_old_snapshots_still_load():
    feed = Feed()
    state, _ = _running(feed, ("a1", "a2"))
    state, _ = run(feed, [progress(1, "a1", metrics={"train_loss": 0.5}),
                          progress(1, "a2", metrics={"train_loss": 0.6, "accuracy": 0.7})], state)
    restored = restore(snapshot_all(state))
    assert restored == state and _curve(restored, "a2") == [(1, {"train_loss": 0.6, "accuracy": 0.7})]
    old = json.loads(snapshot_task(state, "t1"))
    for a in old["algos"]:
        del a["rounds"]
    assert algo_of(restore([json.dumps(old).encode()]), "a1").rounds == ()


def test_the_rounds_endpoint_names_party_and_role_and_reads_incrementally():
    feed = Feed()
    state, _ = _running(feed, ("a1", "a2"))
    state, _ = run(feed, [progress(r, a, metrics={"train_loss": 1.0 / r}) for r in (1, 2, 3) for a in ("a1", "a2")]
                   + [progress(4, "a2", metrics={"train_loss": math.nan})], state)
    app = FastAPI()
    app.include_router(build_rounds_router(lambda: state))
    client = TestClient(app)
    body = client.get("/tasks/t1/rounds").json()
    assert [(s["party"], s["role"], s["status"]) for s in body["series"]] == [
        ("party-a1", "client", "RUNNING"), ("party-a2", "client", "RUNNING")]
    assert body["total_rounds"] == 10 and body["step"] == "step-t1"
    later = client.get("/tasks/t1/rounds", params={"since": 2, "party": "party-a2"}).json()
    assert [(p["round"], p["metrics"]) for p in later["series"][0]["rounds"]] == [
        (3, {"train_loss": 1 / 3}), (4, {"train_loss": None})]  # JSON has no NaN
    assert client.get("/tasks/nope/rounds").status_code == 404
    assert client.get("/tasks/t1/rounds", params={"party": "nobody"}).status_code == 404
    assert client.get("/tasks/t1/rounds", params={"since": -1}).status_code == 422
    assert task_rounds(state, "t1", 3).series[1].rounds[0].round == 4


def test_a_report_without_round_numbers_keeps_the_last_round():
    feed = Feed()
    state, _ = _running(feed)
    finished = progress(0, metrics={"test_accuracy": 0.9})
    finished = type(finished)(finished.algo_task_id, finished.task_id, finished.flow_id, 1, 0, 0, "finished",
                              {"test_accuracy": 0.9})
    state, _ = run(feed, [progress(7), finished], state)
    algo = algo_of(state)
    assert (algo.round, algo.total_rounds, algo.stage, dict(algo.metrics)) == (7, 10, "finished", {"test_accuracy": 0.9})
