"""Throughput of the monitor's pure fold: codec decode + step() per event.

Builds a synthetic day of flows (plans, job events, observations, progress,
retries, duplicates), pre-encodes every envelope with the wire codec, then
times decode alone, step() alone and decode+step together on one core, on
top of a state that already holds many finished tasks. Times are CPU seconds
of this process, best of --repeat runs. Writes bench/results/monitor_fold.json;
`events_per_s` is decode+step.

    python bench/monitor_fold.py [--quick] [--flows N] [--resident TASKS] [--repeat R] [--seed S]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from pathlib import Path


def _provenance() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import provenance  # noqa: E402  (bench/ is not a package)

    return provenance()

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.monitor.core import MonitorState, fold, step  # noqa: E402
from services.monitor.core.pmap import PMap  # noqa: E402
from services.monitor.core.state import evolve  # noqa: E402
from shared.events import (AlgorithmTaskSpec, Envelope, ExecutorProgress, JobAction, JobEvent,  # noqa: E402
                           Observation, Phase, TaskPlanned)
from shared.wire import codec  # noqa: E402

TASKS_PER_FLOW = 4
ALGOS_PER_TASK = 3
ROUNDS = 10


class Producer:
    def __init__(self, name: str):
        self.name = name
        self.sequences: dict[str, int] = {}

    def envelope(self, event, key: str, at_ms: int) -> Envelope:
        seq = self.sequences[key] = self.sequences.get(key, 0) + 1
        return Envelope(event, f"{self.name}-{key}-{seq}", key, seq, self.name, at_ms)


def flow_events(rng: random.Random, flow_no: int, start_ms: int) -> list[Envelope]:
    """One flow's envelopes in a plausible order: a chain of tasks, each with its members."""
    splitter, scheduler, watcher = Producer("splitter/0"), Producer("scheduler/0"), Producer("watcher/0")
    flow_id = f"flow-{flow_no:06d}"
    task_ids = [f"{flow_id}-t{i}" for i in range(TASKS_PER_FLOW)]
    out, now = [], start_ms
    for i, task_id in enumerate(task_ids):
        specs = tuple(AlgorithmTaskSpec(f"{task_id}-a{j}", task_id, flow_id, f"step{i}", "fedavg", "1",
                                        {"lr": 0.1}, f"party{j}", "client" if j else "server", ())
                      for j in range(ALGOS_PER_TASK))
        plan = TaskPlanned(task_id, flow_id, f"step{i}", tuple(task_ids[:i][-1:]), specs, tuple(task_ids), i)
        out.append(splitter.envelope(plan, task_id, now))
    for task_id in task_ids:
        executor = Producer(f"executor/{task_id}")
        for j in range(ALGOS_PER_TASK):
            algo = f"{task_id}-a{j}"
            attempts = 2 if rng.random() < 0.1 else 1
            for attempt in range(1, attempts + 1):
                now += 5
                out.append(scheduler.envelope(JobEvent(algo, task_id, flow_id, attempt, JobAction.CREATED,
                                                       f"job-{algo}-{attempt}"), task_id, now))
                out.append(watcher.envelope(Observation(algo, task_id, flow_id, attempt, Phase.RUNNING,
                                                        f"pod-{algo}"), task_id, now))
                for r in range(1, ROUNDS + 1):
                    now += 50
                    metrics = {"loss": 1.0 / r, "accuracy": 1 - 1.0 / (r + 1)}
                    out.append(executor.envelope(ExecutorProgress(algo, task_id, flow_id, attempt, r, ROUNDS,
                                                                  "training", metrics), task_id, now))
                if attempt < attempts:
                    out.append(watcher.envelope(Observation(algo, task_id, flow_id, attempt, Phase.FAILED,
                                                            f"pod-{algo}", 137, "Evicted", retriable=True),
                                                task_id, now))
            out.append(watcher.envelope(Observation(algo, task_id, flow_id, attempts, Phase.SUCCEEDED,
                                                    f"pod-{algo}"), task_id, now))
    redelivered = rng.sample(out, k=len(out) // 20)  # ~5% duplicates, as after a rebalance
    return out + redelivered


def workload(flows: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    per_flow = [flow_events(rng, n, 1_700_000_000_000 + n * 1000) for n in range(flows)]
    # Interleave flows in windows, as concurrent flows reach the monitor.
    window, merged = 50, []
    for start in range(0, flows, window):
        queues = [q for q in per_flow[start:start + window]]
        while queues:
            q = rng.choice(queues)
            merged.append(q.pop(0))
            if not q:
                queues.remove(q)
    return [codec.encode(e) for e in merged]


def resident(tasks: int) -> MonitorState:
    """A state already holding `tasks` finished tasks, as a monitor does after weeks of work:
    one folded flow copied under new ids (entries and members are distinct objects)."""
    template, _ = fold(MonitorState(), [codec.decode(b) for b in workload(1, 0)])
    copies_t, copies_f = [], []
    for n in range(tasks // TASKS_PER_FLOW):
        prefix = f"old{n}-"
        for flow in template.flows.values():
            copies_f.append((prefix + flow.flow_id, evolve(flow, flow_id=prefix + flow.flow_id,
                                                           task_ids=tuple(prefix + t for t in flow.task_ids))))
        for task in template.tasks.values():
            algos = tuple(evolve(a, algo_task_id=prefix + a.algo_task_id) for a in task.algos)
            copies_t.append((prefix + task.task_id, evolve(task, task_id=prefix + task.task_id,
                                                           flow_id=prefix + task.flow_id, algos=algos)))
    return MonitorState(PMap.from_items(copies_t), PMap.from_items(copies_f))


def cpu_seconds(fn, repeat: int) -> float:
    """Best of `repeat` runs, in CPU seconds of this process: the machine is shared, and
    other tenants' load would otherwise show up as a slower fold."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small workload for CI")
    parser.add_argument("--flows", type=int, help="flows to simulate (default 2000, quick 150)")
    parser.add_argument("--repeat", type=int, help="runs per phase, best counts (default 3, quick 2)")
    parser.add_argument("--resident", type=int, help="finished tasks already in the state when the clock "
                        "starts (default 100000, quick 0)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    flows = args.flows or (150 if args.quick else 2000)
    repeat = args.repeat or (2 if args.quick else 3)
    initial = resident(args.resident if args.resident is not None else (0 if args.quick else 100_000))
    blobs = workload(flows, args.seed)
    decode = codec.decode
    final: list[MonitorState] = []

    def decode_only():
        for blob in blobs:
            decode(blob)

    def step_only() -> float:
        decoded = [decode(b) for b in blobs]  # decoded up front, outside the clock
        gc.collect()
        start = time.process_time()
        state = initial
        for env in decoded:
            state, _ = step(state, env)
        return time.process_time() - start

    def end_to_end():
        state = initial
        for blob in blobs:
            state, _ = step(state, decode(blob))
        final[:] = [state]

    n = len(blobs)
    decode_s = cpu_seconds(decode_only, repeat)
    step_s = min(step_only() for _ in range(repeat))
    total_s = cpu_seconds(end_to_end, repeat)
    state = final[0]
    rows = [("decode only", decode_s), ("step only", step_s), ("decode + step", total_s)]
    print(f"monitor fold: {n} events, {flows} flows, {len(state.tasks)} tasks ({len(initial.tasks)} resident), "
          f"python {platform.python_version()}, CPU seconds, best of {repeat}")
    print(f"{'phase':<16}{'seconds':>10}{'events/s':>12}{'us/event':>10}")
    for name, secs in rows:
        print(f"{name:<16}{secs:>10.3f}{n / secs:>12,.0f}{secs / n * 1e6:>10.1f}")
    result = {
        "events": n, "flows": flows, "tasks": len(state.tasks), "resident_tasks": len(initial.tasks),
        "quick": args.quick, "repeat": repeat,
        "clock": "process CPU time, best of repeat",
        "events_per_s": round(n / total_s),
        "decode_events_per_s": round(n / decode_s), "step_events_per_s": round(n / step_s),
        "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
        **_provenance(),
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitor_fold.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
