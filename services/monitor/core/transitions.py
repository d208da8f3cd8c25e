"""The transition table of one algorithm task, and decide() that reads it.

Facts from the scheduler (JobEvent), the watcher (Observation) and the
executor (ExecutorProgress) and the user's commands all become a Fact; the
table says what each Fact means in each non-terminal status. Terminal
statuses absorb every fact and reject every command. Attempt fencing and
duplicate dropping happen before the table is consulted (fold.py).

Facts are applied even when they skip a step, because the scheduler publishes
on three topics that the monitor reads at independent speeds: the local
runner reports "running" before the scheduler reports "job created", and a
resumed executor can be seen running before the resume command is read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shared.errors import Suspended
from shared.events import (CommandKind, ExecutorProgress, JobAction, JobEvent, Observation, Phase,
                           Status, TaskCommand)

# Exits of an executor stopped by a signal: SIGTERM (the polite stop of a
# suspend or cancel), SIGKILL (after the grace period), as code or negative signal.
SIGNAL_EXITS = frozenset({Suspended.exit_code, 137, -15, -9})


class Fact(enum.Enum):
    JOB_CREATED = "job created"
    JOB_SUSPENDED = "job suspended"
    JOB_RESUMED = "job resumed"
    JOB_DELETED = "job deleted"
    JOB_DISPATCH_FAILED = "runner action failed"
    SEEN_PENDING = "observed pending"
    SEEN_RUNNING = "observed running"
    SEEN_SUCCEEDED = "observed succeeded"
    SEEN_FAILED = "observed failed"
    SEEN_SUSPENDED = "observed suspended"
    SEEN_DELETED = "observed deleted"
    PROGRESS = "progress"
    SUSPEND = "suspend"
    RESUME = "resume"
    CANCEL = "cancel"


PAST_TENSE = {Fact.SUSPEND: "suspended", Fact.RESUME: "resumed", Fact.CANCEL: "cancelled"}
COMMAND_FACTS = {CommandKind.SUSPEND: Fact.SUSPEND, CommandKind.RESUME: Fact.RESUME,
                 CommandKind.CANCEL: Fact.CANCEL}
_JOB_FACTS = {JobAction.CREATED: Fact.JOB_CREATED, JobAction.SUSPENDED: Fact.JOB_SUSPENDED,
              JobAction.RESUMED: Fact.JOB_RESUMED, JobAction.DELETED: Fact.JOB_DELETED,
              JobAction.DISPATCH_FAILED: Fact.JOB_DISPATCH_FAILED}
_SEEN_FACTS = {Phase.PENDING: Fact.SEEN_PENDING, Phase.RUNNING: Fact.SEEN_RUNNING,
               Phase.SUCCEEDED: Fact.SEEN_SUCCEEDED, Phase.FAILED: Fact.SEEN_FAILED,
               Phase.SUSPENDED: Fact.SEEN_SUSPENDED, Phase.DELETED: Fact.SEEN_DELETED}


def classify(event: JobEvent | Observation | ExecutorProgress | TaskCommand) -> Fact:
    if type(event) is ExecutorProgress:
        return Fact.PROGRESS
    if type(event) is Observation:
        return _SEEN_FACTS[event.phase]
    if type(event) is JobEvent:
        return _JOB_FACTS[event.action]
    return COMMAND_FACTS[event.kind]


class Rule(enum.Enum):
    KEEP = "keep"                  # consistent with the status: update data, not the status
    FAIL = "fail"                  # RETRYING if retriable and attempts remain, else FAILED
    STOPPED_EXIT = "stopped exit"  # exit while suspending: signal/retriable -> SUSPENDED, else FAIL
    LEFTOVER_EXIT = "leftover"     # exit while resuming: a signal exit is the old executor's, else FAIL
    ANOMALY = "anomaly"            # forbidden here: recorded with its reason, not applied
    REJECT = "reject"              # a command that makes no sense here


@dataclass(frozen=True)
class ByDispatch:
    """A command whose outcome depends on whether the algorithm task ever had a job."""

    had_job: Status
    never_had_job: Status


S, R, F = Status, Rule, Fact
# Rows: the current status. Every non-terminal (status, fact) pair is listed;
# a test checks the table is complete and another spells out the outcomes.
TABLE: dict[Status, dict[Fact, Status | Rule | ByDispatch]] = {
    S.PENDING: {
        F.JOB_CREATED: S.SCHEDULED, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: R.ANOMALY,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.FAIL,
        F.SEEN_PENDING: S.SCHEDULED, F.SEEN_RUNNING: S.RUNNING, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.FAIL, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: R.ANOMALY,
        F.PROGRESS: S.RUNNING,
        F.SUSPEND: S.SUSPENDED, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLED,
    },
    S.SCHEDULED: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: R.KEEP,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.FAIL,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: S.RUNNING, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.FAIL, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: R.ANOMALY,
        F.PROGRESS: S.RUNNING,
        F.SUSPEND: S.SUSPENDING, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
    S.RUNNING: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: R.KEEP,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.ANOMALY,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: R.KEEP, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.FAIL, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: R.ANOMALY,
        F.PROGRESS: R.KEEP,
        F.SUSPEND: S.SUSPENDING, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
    S.SUSPENDING: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: R.ANOMALY,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.ANOMALY,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: R.KEEP, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.STOPPED_EXIT, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: S.SUSPENDED,
        F.PROGRESS: R.KEEP,
        F.SUSPEND: R.REJECT, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
    S.SUSPENDED: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: R.KEEP, F.JOB_RESUMED: S.RESUMING,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.ANOMALY,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: S.RUNNING, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.KEEP, F.SEEN_SUSPENDED: R.KEEP, F.SEEN_DELETED: R.KEEP,
        F.PROGRESS: R.KEEP,
        F.SUSPEND: R.REJECT, F.RESUME: ByDispatch(S.RESUMING, S.PENDING),
        F.CANCEL: ByDispatch(S.CANCELLING, S.CANCELLED),
    },
    S.RESUMING: {
        F.JOB_CREATED: S.SCHEDULED, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: S.SCHEDULED,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.FAIL,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: S.RUNNING, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.LEFTOVER_EXIT, F.SEEN_SUSPENDED: R.KEEP, F.SEEN_DELETED: R.KEEP,
        F.PROGRESS: S.RUNNING,
        F.SUSPEND: S.SUSPENDING, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
    S.CANCELLING: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: R.KEEP, F.JOB_RESUMED: R.KEEP,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: S.CANCELLED,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: R.KEEP, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: S.CANCELLED, F.SEEN_SUSPENDED: R.KEEP, F.SEEN_DELETED: S.CANCELLED,
        F.PROGRESS: R.KEEP,
        F.SUSPEND: R.REJECT, F.RESUME: R.REJECT, F.CANCEL: R.REJECT,
    },
    S.RETRYING: {
        F.JOB_CREATED: S.SCHEDULED, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: R.ANOMALY,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.FAIL,
        F.SEEN_PENDING: S.SCHEDULED, F.SEEN_RUNNING: S.RUNNING, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.FAIL, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: R.ANOMALY,
        F.PROGRESS: S.RUNNING,
        F.SUSPEND: S.SUSPENDING, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
}
del S, R, F

