"""The topic catalogue: every topic Ferry uses, its key, layout and users.

This table is the truth; docs and deploy manifests are derived from it
(`ferry topics` prints it, `ferry kafka create-topics` creates it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str                      # what the record key is
    payload: str                  # ferry.v1 message(s) carried
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    partitions: int = 3
    compacted: bool = False
    retention_ms: int = 7 * 24 * 3600 * 1000  # ignored when compacted

    def config(self) -> dict[str, str]:
        if self.compacted:
            return {"cleanup.policy": "compact"}
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}


FLOWS = TopicSpec("ferry.flows", "flow_id", "FlowSubmitted",
                  ("upstream", "cli", "monitor-api"), ("splitter",))
FLOWS_REJECTED = TopicSpec("ferry.flows.rejected", "flow_id", "FlowRejected",
                           ("splitter",), ("monitor", "upstream"))
TASKS_PLANNED = TopicSpec("ferry.tasks.planned", "task_id", "TaskPlanned",
                          ("splitter",), ("scheduler", "monitor"))
COMMANDS = TopicSpec("ferry.commands", "flow_id", "TaskCommand",
                     ("monitor-api", "cli"), ("scheduler", "monitor"))
JOBS = TopicSpec("ferry.jobs", "task_id", "JobEvent", ("scheduler",), ("monitor",))
OBSERVATIONS = TopicSpec("ferry.observations", "task_id", "Observation",
                         # scheduler: runner facts; executor: its own exit report, its last act;
                         # monitor: an executor declared lost after its heartbeats stopped
                         ("scheduler", "executor", "monitor"), ("monitor",))
PROGRESS = TopicSpec("ferry.progress", "task_id", "ExecutorProgress", ("executor",), ("monitor",))
TASK_EVENTS = TopicSpec("ferry.task-events", "task_id (flow_id for flow changes)", "StateChanged",
                        ("monitor",), ("scheduler", "upstream"))
TASK_STATE = TopicSpec("ferry.task-state", "task_id", "monitor snapshot", ("monitor",), ("monitor",),
                       compacted=True)
# Partitions are placed explicitly per step and party (services/executor/round_layout.py):
# 2 per party, so 64 keeps every stream of a step up to 32 parties on its own partition.
ROUNDS = TopicSpec("ferry.rounds", "task_id (partition: recipient's inbox / sender's outbox)", "RoundMessage",
                   ("executor",), ("executor",), partitions=64, retention_ms=24 * 3600 * 1000)
DEAD_LETTERS = TopicSpec("ferry.dead-letters", "original key", "DeadLetter",
                         ("splitter", "scheduler", "monitor", "executor"), ("operators",),
                         partitions=1, retention_ms=30 * 24 * 3600 * 1000)

CATALOGUE: tuple[TopicSpec, ...] = (
    FLOWS, FLOWS_REJECTED, TASKS_PLANNED, COMMANDS, JOBS, OBSERVATIONS, PROGRESS,
    TASK_EVENTS, TASK_STATE, ROUNDS, DEAD_LETTERS,
)
BY_NAME = {t.name: t for t in CATALOGUE}
