"""Random but scheduler-consistent flows, split into Kafka-like streams, and delivery orders.

A stream is what one topic partition gives for one key: its order is kept,
any two streams interleave freely, and a stream may be re-delivered from an
earlier offset (as after a rebalance). The plan of a task and its facts are
separate streams (separate topics), so facts may arrive before their plan.
Tasks whose dependencies do not all succeed get no facts at all, as the
scheduler never releases them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.monitor.core import MonitorState
from shared.events import Envelope, JobAction, Phase

from tests.monitor.builders import Feed, job, plan, progress, rejected, seen


@dataclass(frozen=True)
class Scenario:
    streams: dict[str, tuple[Envelope, ...]]

    def canonical(self) -> list[Envelope]:
        return [e for stream in self.streams.values() for e in stream]


def generate(rng: random.Random, flows: int = 2) -> Scenario:
    feed, streams = Feed(), {}
    for f in range(flows):
        if rng.random() < 0.15:
            streams[f"rejected:f{f}"] = (feed(rejected(f"f{f}")),)
            continue
        _flow(rng, feed, f"f{f}", streams)
    return Scenario(streams)


def _flow(rng: random.Random, feed: Feed, flow_id: str, streams: dict) -> None:
    task_ids = tuple(f"{flow_id}-t{i}" for i in range(rng.randint(1, 4)))
    succeeds: dict[str, bool] = {}
    for i, task_id in enumerate(task_ids):
        deps = tuple(t for t in task_ids[:i] if rng.random() < 0.5)
        members = tuple(f"{task_id}-a{j}" for j in range(rng.randint(1, 3)))
        streams[f"plan:{task_id}"] = (feed(plan(task_id, members, flow_id, deps, task_ids)),)
        if not all(succeeds[d] for d in deps):
            succeeds[task_id] = False
            continue
        fate = rng.choice(["success", "success", "retried", "fatal", "exhausted"])
        succeeds[task_id] = fate in ("success", "retried")
        streams[f"facts:{task_id}"] = tuple(feed(e, key=task_id) for e in _facts(rng, flow_id, task_id, members, fate))


def _facts(rng: random.Random, flow_id: str, task_id: str, members: tuple[str, ...], fate: str) -> list:
    doomed = rng.choice(members)
    scripts = []
    for member in members:
        kw = {"task_id": task_id, "flow_id": flow_id}
        failures = {"retried": rng.randint(0, 2), "exhausted": 3}.get(fate, 0) if member == doomed else 0
        script, attempt = [], 1
        for attempt in range(1, failures + 2):
            started = [job(JobAction.CREATED, member, attempt, **kw), seen(Phase.RUNNING, member, attempt, **kw)]
            rng.shuffle(started)  # the local runner reports running before the job event
            script += started + [progress(r, member, attempt, **kw) for r in range(1, rng.randint(1, 4))]
            if attempt <= failures:
                script.append(seen(Phase.FAILED, member, attempt, exit_code=137, retriable=True, **kw))
                if attempt == 3:
                    break
        if fate == "fatal" and member == doomed:
            script.append(seen(Phase.FAILED, member, attempt, exit_code=2, **kw))
        elif failures < 3 and not (fate in ("fatal", "exhausted")):
            script.append(seen(Phase.SUCCEEDED, member, attempt, **kw))
            if attempt > 1 and rng.random() < 0.5:
                script.append(seen(Phase.RUNNING, member, attempt - 1, **kw))  # a stale pod
        scripts.append(script)
    merged = _merge(rng, scripts)
    if fate in ("fatal", "exhausted"):  # the scheduler deletes the doomed task's other jobs
        merged += [job(JobAction.DELETED, m, 1, task_id=task_id, flow_id=flow_id) for m in members if m != doomed]
    return merged


def _merge(rng: random.Random, scripts: list[list]) -> list:
    queues = [list(s) for s in scripts if s]
    out = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return out


def deliver(rng: random.Random, scenario: Scenario, redeliver: float = 0.1) -> list[Envelope]:
    """One delivery: streams interleaved at random, each sometimes rewound a few offsets."""
    positions = {name: 0 for name in scenario.streams}
    out = []
    while positions:
        name = rng.choice(sorted(positions))
        stream, pos = scenario.streams[name], positions[name]
        if pos and rng.random() < redeliver:
            pos = positions[name] = max(0, pos - rng.randint(1, 3))
        out.append(stream[pos])
        positions[name] = pos + 1
        if positions[name] == len(stream):
            del positions[name]
    return out


def outcome(state: MonitorState):
    """What must not depend on delivery order: everything but the cause ids and times of
    changes that one task's events make to another task or to the flow."""
    tasks = {}
    for task_id, t in state.tasks.items():
        algos = tuple((a.algo_task_id, a.status, a.attempt, a.job_attempt, a.job_name, a.round, a.stage,
                       dict(a.metrics), tuple((r.outcome, r.from_status, r.to_status, r.attempt)
                                              for r in a.history)) for a in t.algos)
        tasks[task_id] = (t.status, dict(t.sequences), t.parked, algos,
                          tuple((r.outcome, r.from_status, r.to_status) for r in t.history))
    flows = {f: (flow.status, flow.task_ids, flow.hold) for f, flow in state.flows.items()}
    return tasks, flows
