"""How a task's status follows from its algorithm tasks, and a flow's from its tasks.

Task (first rule that matches wins):
  1. any FAILED                      -> FAILED   (it can no longer succeed; its
                                                  other members are being cancelled)
  2. all terminal                    -> CANCELLED if any CANCELLED, else SUCCEEDED
  3. any CANCELLING or CANCELLED     -> CANCELLING
  4. any RETRYING                    -> RETRYING
  5. any SUSPENDING                  -> SUSPENDING
  6. any RESUMING                    -> RESUMING
  7. any SUSPENDED                   -> SUSPENDED if every unfinished member is, else SUSPENDING
  8. any RUNNING or SUCCEEDED        -> RUNNING  (it has started)
  9. any SCHEDULED                   -> SCHEDULED
 10.                                 -> PENDING

Flow, over its tasks (a task not planned yet counts as PENDING, as SUSPENDED
under a flow-wide suspend, as CANCELLING under a flow-wide cancel):
  1. all terminal                    -> FAILED if any FAILED, else CANCELLED if any
                                        CANCELLED, else SUCCEEDED
  2. any CANCELLING                  -> CANCELLING
  3. any SUSPENDING                  -> SUSPENDING
  4. any RESUMING                    -> RESUMING
  5. every unfinished task SUSPENDED -> SUSPENDED
  6. any RUNNING, RETRYING or terminal -> RUNNING
  7. any SCHEDULED                   -> SCHEDULED
  8.                                 -> PENDING
A flow ends only when nothing in it runs any more: a failed task cancels its
dependants (they can never start) but not the independent tasks, which finish
on their own; so a FAILED flow never has executors left behind. A task, by
contrast, is decided by its first dead member, because its peers cannot
finish without it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection

from shared.events import Status

_TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})


def task_status(statuses: Collection[Status]) -> Status:
    """The rules above; remembered per tuple of member statuses (the fold derives a task's
    status at every transition of a member, and few combinations ever occur)."""
    return _task_status(tuple(statuses))


@functools.lru_cache(maxsize=4096)
def _task_status(statuses: tuple[Status, ...]) -> Status:
    present = set(statuses)
    if not present:
        return Status.PENDING
    if Status.FAILED in present:
        return Status.FAILED
    if present <= _TERMINAL:
        return Status.CANCELLED if Status.CANCELLED in present else Status.SUCCEEDED
    for trigger, result in _TASK_ORDER:
        if present & trigger:
            return result
    if Status.SUSPENDED in present:
        unfinished = present - _TERMINAL
        return Status.SUSPENDED if unfinished == {Status.SUSPENDED} else Status.SUSPENDING
    if present & {Status.RUNNING, Status.SUCCEEDED}:
        return Status.RUNNING
    if Status.SCHEDULED in present:
        return Status.SCHEDULED
    return Status.PENDING


_TASK_ORDER = (
    (frozenset({Status.CANCELLING, Status.CANCELLED}), Status.CANCELLING),
    (frozenset({Status.RETRYING}), Status.RETRYING),
    (frozenset({Status.SUSPENDING}), Status.SUSPENDING),
    (frozenset({Status.RESUMING}), Status.RESUMING),
)


def flow_status(statuses: Collection[Status]) -> Status:
    present = set(statuses)
    if not present:
        return Status.PENDING
    if present <= _TERMINAL:
        for result in (Status.FAILED, Status.CANCELLED):
            if result in present:
                return result
        return Status.SUCCEEDED
    for result in (Status.CANCELLING, Status.SUSPENDING, Status.RESUMING):
        if result in present:
            return result
    if present - _TERMINAL == {Status.SUSPENDED}:
        return Status.SUSPENDED
    if present & (_TERMINAL | {Status.RUNNING, Status.RETRYING}):
        return Status.RUNNING
    if Status.SCHEDULED in present:
        return Status.SCHEDULED
    return Status.PENDING
