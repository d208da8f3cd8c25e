"""The transition table of one algorithm task.

Facts from the scheduler (JobEvent), the watcher (Observation) and the
executor (ExecutorProgress) and the user's commands all become a Fact; the
table says what each Fact means in each non-terminal status. decide.py is its
only reader and adds what a table cannot say: terminal statuses absorb every
fact and reject every command, and facts of another attempt are fenced off.

Why some cells are what they are:
- Facts are applied even when they skip a step: the scheduler publishes on
  two topics the monitor reads at independent speeds, and the local runner
  reports "running" before the scheduler reports "job created" (PENDING +
  observed running -> RUNNING; RUNNING + job created -> keep).
- A resumed executor may be seen running before the resume is read
  (SUSPENDED + observed running -> RUNNING; RUNNING + job resumed -> keep).
- A stopped executor exits 143 (SUSPENDING + observed failed by a signal ->
  SUSPENDED); while RESUMING, that old executor's signal exit is a leftover,
  not a failure.
- JobAction.DISPATCH_FAILED is any failed runner action. While RUNNING or
  SUSPENDING it is a failed suspend/resume attempt, not proof that nothing
  runs: an anomaly. While CANCELLING nothing will run any more: CANCELLED.
- A deleted job, reported by the scheduler or observed by the watcher (which
  reports the Job's deletion, never a Pod's), is CANCELLED anywhere: nothing
  will run that job again, and it is the scheduler acting on a cancel (a
  user's, or CancelSiblings) this monitor may not have read yet, or an
  operator deleting the Job by hand.
- Progress proves an executor runs (SCHEDULED/RESUMING/RETRYING -> RUNNING),
  but late progress from a stopping executor changes nothing (keep).
- Observed succeeded is final in every unfinished status, even CANCELLING:
  the work is done.
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

    # Enum's own __hash__ hashes the member's name in Python; the fold looks facts up in TABLE
    # and in sets several times per event. Members are singletons compared by identity.
    __hash__ = object.__hash__


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
        F.SEEN_FAILED: R.FAIL, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: S.CANCELLED,
        F.PROGRESS: S.RUNNING,
        F.SUSPEND: S.SUSPENDED, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLED,
    },
    S.SCHEDULED: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: R.KEEP,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.FAIL,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: S.RUNNING, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.FAIL, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: S.CANCELLED,
        F.PROGRESS: S.RUNNING,
        F.SUSPEND: S.SUSPENDING, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
    S.RUNNING: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: R.KEEP,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.ANOMALY,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: R.KEEP, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.FAIL, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: S.CANCELLED,
        F.PROGRESS: R.KEEP,
        F.SUSPEND: S.SUSPENDING, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
    S.SUSPENDING: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: R.ANOMALY,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.ANOMALY,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: R.KEEP, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.STOPPED_EXIT, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: S.CANCELLED,
        F.PROGRESS: R.KEEP,
        F.SUSPEND: R.REJECT, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
    S.SUSPENDED: {
        F.JOB_CREATED: R.KEEP, F.JOB_SUSPENDED: R.KEEP, F.JOB_RESUMED: S.RESUMING,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.ANOMALY,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: S.RUNNING, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.KEEP, F.SEEN_SUSPENDED: R.KEEP, F.SEEN_DELETED: S.CANCELLED,
        F.PROGRESS: R.KEEP,
        F.SUSPEND: R.REJECT, F.RESUME: ByDispatch(S.RESUMING, S.PENDING),
        F.CANCEL: ByDispatch(S.CANCELLING, S.CANCELLED),
    },
    S.RESUMING: {
        F.JOB_CREATED: S.SCHEDULED, F.JOB_SUSPENDED: S.SUSPENDED, F.JOB_RESUMED: S.SCHEDULED,
        F.JOB_DELETED: S.CANCELLED, F.JOB_DISPATCH_FAILED: R.FAIL,
        F.SEEN_PENDING: R.KEEP, F.SEEN_RUNNING: S.RUNNING, F.SEEN_SUCCEEDED: S.SUCCEEDED,
        F.SEEN_FAILED: R.LEFTOVER_EXIT, F.SEEN_SUSPENDED: R.KEEP, F.SEEN_DELETED: S.CANCELLED,
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
        F.SEEN_FAILED: R.FAIL, F.SEEN_SUSPENDED: S.SUSPENDED, F.SEEN_DELETED: S.CANCELLED,
        F.PROGRESS: S.RUNNING,
        F.SUSPEND: S.SUSPENDING, F.RESUME: R.REJECT, F.CANCEL: S.CANCELLING,
    },
}
del S, R, F

