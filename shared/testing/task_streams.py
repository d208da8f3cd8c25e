"""Synthetic but realistic task lifecycles, for monitor tests and benchmarks.

Each flow has one task with `parties` algorithm tasks; each goes planned ->
job created -> running -> `rounds` progress reports -> succeeded, published by
the producers that really publish them (splitter, scheduler, executor).
"""

from __future__ import annotations

from typing import Iterator

from shared import topics
from shared.clock import Clock
from shared.events import (AlgorithmTaskSpec, Envelope, ExecutorProgress, JobAction, JobEvent, Observation, Peer,
                           Phase, TaskPlanned)
from shared.messaging import EventPublisher


class _Stamp:
    """EventPublisher.wrap without a bus: numbering and envelopes only."""

    def __init__(self, service: str, clock: Clock):
        self._publisher = EventPublisher(None, service, clock, incarnation="synthetic")

    def __call__(self, topic: str, key: str, event) -> Envelope:
        return self._publisher.wrap(topic, key, event)


def lifecycle_events(n_flows: int, clock: Clock, *, parties: int = 2, rounds: int = 3,
                     prefix: str = "bench") -> Iterator[tuple[str, Envelope]]:
    """(topic, envelope) pairs; per task in causal order, flows one after another."""
    splitter, scheduler, executor = _Stamp("splitter", clock), _Stamp("scheduler", clock), _Stamp("executor", clock)
    for i in range(n_flows):
        flow_id = f"{prefix}-{i}"
        task_id = f"{flow_id}.train"
        names = [f"p{j}" for j in range(parties)]
        specs = tuple(AlgorithmTaskSpec(f"{task_id}.{p}", task_id, flow_id, "train", "ferry.noop", "1", {},
                                        p, "worker", tuple(Peer(q, "worker") for q in names)) for p in names)
        yield topics.TASKS_PLANNED.name, splitter(topics.TASKS_PLANNED.name, task_id, TaskPlanned(task_id, flow_id, "train", (), specs,
                                                                          (task_id,), 0))
        for spec in specs:
            a = spec.algo_task_id
            yield topics.JOBS.name, scheduler(topics.JOBS.name, task_id, JobEvent(a, task_id, flow_id, 1, JobAction.CREATED,
                                                                f"job-{a}", "local"))
            yield topics.OBSERVATIONS.name, scheduler(topics.OBSERVATIONS.name, task_id,
                                                      Observation(a, task_id, flow_id, 1, Phase.RUNNING))
            for r in range(1, rounds + 1):
                yield topics.PROGRESS.name, executor(topics.PROGRESS.name, task_id, ExecutorProgress(a, task_id, flow_id, 1, r, rounds,
                                                                               "training", {"loss": 1.0 / r}))
            yield topics.OBSERVATIONS.name, scheduler(topics.OBSERVATIONS.name, task_id,
                                                      Observation(a, task_id, flow_id, 1, Phase.SUCCEEDED))
