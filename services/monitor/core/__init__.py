"""The monitor's pure core: an event-sourced state machine over flows, tasks and algorithm tasks.

    state, effects = step(state, envelope)

No I/O and no clock: time comes from envelopes. The Kafka loop, snapshot
storage and the HTTP API live outside this package and call these functions.
"""

from services.monitor.core.commands import check_command
from services.monitor.core.effects import Anomaly, CancelSiblings, CommandRejected, DuplicateDropped, Effect
from services.monitor.core.fold import Batch, fold, step
from services.monitor.core.snapshot import (restore, snapshot_all, snapshot_flow, snapshot_task, touched,
                                            touched_since)
from services.monitor.core.state import AlgoTask, Flow, MonitorState, Outcome, Record, Task

__all__ = [
    "step", "fold", "Batch", "check_command", "MonitorState", "Flow", "Task", "AlgoTask", "Record", "Outcome",
    "Effect", "Anomaly", "CommandRejected", "CancelSiblings", "DuplicateDropped",
    "snapshot_task", "snapshot_flow", "snapshot_all", "restore", "touched", "touched_since",
]
