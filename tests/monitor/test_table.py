"""Every (status, fact) pair of an algorithm task, against a grid written out by hand.

Grid cells: a Status name (the new status), "=" (valid fact, status unchanged,
nothing recorded), "anomaly" (recorded and reported, not applied), "ignored"
(terminal: recorded as ignored), "rejected" (a command answered with a rejection).
A terminal task keeps the numbers of its executor's late final report ("=" under PR).
Failure facts are retriable with attempts left, so FAIL reads as RETRYING.
"""

from __future__ import annotations

import pytest

from services.monitor.core import Anomaly, CommandRejected, MonitorState, Outcome
from services.monitor.core.transitions import TABLE, Fact
from shared.events import CommandKind, EntityKind, JobAction, Phase, StateChanged, Status

from tests.monitor.builders import Feed, algo_of, command, forced, job, of_type, plan, progress, run, seen

COLUMNS = {
    "JC": lambda a: job(JobAction.CREATED, attempt=a),
    "JS": lambda a: job(JobAction.SUSPENDED, attempt=a),
    "JR": lambda a: job(JobAction.RESUMED, attempt=a),
    "JD": lambda a: job(JobAction.DELETED, attempt=a),
    "JF": lambda a: job(JobAction.DISPATCH_FAILED, attempt=a, retriable=True, reason="quota"),
    "OP": lambda a: seen(Phase.PENDING, attempt=a),
    "OR": lambda a: seen(Phase.RUNNING, attempt=a),
    "OS": lambda a: seen(Phase.SUCCEEDED, attempt=a),
    "OF": lambda a: seen(Phase.FAILED, attempt=a, exit_code=1, retriable=True),
    "OSU": lambda a: seen(Phase.SUSPENDED, attempt=a),
    "OD": lambda a: seen(Phase.DELETED, attempt=a),
    "PR": lambda a: progress(3, attempt=a),
    "SUS": lambda a: command(CommandKind.SUSPEND, task_id="t1"),
    "RES": lambda a: command(CommandKind.RESUME, task_id="t1"),
    "CAN": lambda a: command(CommandKind.CANCEL, task_id="t1"),
}

GRID = """
            JC        JS        JR        JD        JF        OP        OR        OS        OF        OSU       OD        PR        SUS        RES       CAN
PENDING     SCHEDULED SUSPENDED anomaly   CANCELLED RETRYING  SCHEDULED RUNNING   SUCCEEDED RETRYING  SUSPENDED CANCELLED RUNNING   SUSPENDED  rejected  CANCELLED
SCHEDULED   =         SUSPENDED =         CANCELLED RETRYING  =         RUNNING   SUCCEEDED RETRYING  SUSPENDED CANCELLED RUNNING   SUSPENDING rejected  CANCELLING
RUNNING     =         SUSPENDED =         CANCELLED anomaly   =         =         SUCCEEDED RETRYING  SUSPENDED CANCELLED =         SUSPENDING rejected  CANCELLING
SUSPENDING  =         SUSPENDED anomaly   CANCELLED anomaly   =         =         SUCCEEDED SUSPENDED SUSPENDED CANCELLED =         rejected   rejected  CANCELLING
SUSPENDED   =         =         RESUMING  CANCELLED anomaly   =         RUNNING   SUCCEEDED =         =         CANCELLED =         rejected   RESUMING  CANCELLING
RESUMING    SCHEDULED SUSPENDED SCHEDULED CANCELLED RETRYING  =         RUNNING   SUCCEEDED RETRYING  =         CANCELLED RUNNING   SUSPENDING rejected  CANCELLING
CANCELLING  =         =         =         CANCELLED CANCELLED =         =         SUCCEEDED CANCELLED =         CANCELLED =         rejected   rejected  rejected
RETRYING    SCHEDULED SUSPENDED anomaly   CANCELLED RETRYING  SCHEDULED RUNNING   SUCCEEDED RETRYING  SUSPENDED CANCELLED RUNNING   SUSPENDING rejected  CANCELLING
SUCCEEDED   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   =         rejected   rejected  rejected
FAILED      ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   =         rejected   rejected  rejected
CANCELLED   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   ignored   =         rejected   rejected  rejected
"""


def _cases():
    header, *rows = [line.split() for line in GRID.strip().splitlines()]
    assert header == list(COLUMNS)
    for status, *cells in rows:
        assert len(cells) == len(header), status
        for column, expected in zip(header, cells):
            yield pytest.param(Status[status], column, expected, id=f"{status}-{column}")


def _start(status: Status) -> tuple[Feed, MonitorState, int]:
    """A one-member task whose member is in `status`; RETRYING waits for attempt 2."""
    feed = Feed()
    state, _ = run(feed, [plan()])
    attempt = 2 if status is Status.RETRYING else 1
    job_attempt = 0 if status is Status.PENDING else 1
    return feed, forced(state, "a1", status, attempt, job_attempt), attempt


@pytest.mark.parametrize("status, column, expected", list(_cases()))
def test_transition_grid(status: Status, column: str, expected: str):
    feed, state, attempt = _start(status)
    envelope = feed(COLUMNS[column](attempt))
    after, effects = run(feed, [envelope], state)
    algo = algo_of(after)
    changes = [e for e in of_type(effects, StateChanged) if e.entity is EntityKind.ALGORITHM_TASK]
    if expected in ("=", "anomaly", "ignored", "rejected"):
        assert algo.status is status
        assert changes == []
        assert bool(of_type(effects, Anomaly)) == (expected == "anomaly")
        assert bool(of_type(effects, CommandRejected)) == (expected == "rejected")
        last = algo.history[-1].outcome
        if expected == "anomaly":
            assert last is Outcome.ANOMALY
        if expected == "ignored":
            assert last is Outcome.IGNORED
        if expected == "=":
            assert algo.history == algo_of(state).history
        return
    assert algo.status is Status[expected]
    assert [(c.from_status, c.to_status) for c in changes] == [(status, Status[expected])]
    change = changes[0]
    assert (change.cause_event_id, change.at_ms, change.cause_type) == (
        envelope.event_id, envelope.timestamp_ms, envelope.type_name)
    assert algo.history[-1].to_status is Status[expected]
    assert not of_type(effects, Anomaly)


def test_table_lists_every_fact_for_every_unfinished_status():
    unfinished = {s for s in Status if not s.terminal}
    assert set(TABLE) == unfinished
    for status, row in TABLE.items():
        assert set(row) == set(Fact), status


def test_grid_covers_every_status():
    assert {p.values[0] for p in _cases()} == set(Status)
