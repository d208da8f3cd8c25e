"""How big flows and planned tasks are on the wire, estimated by their compact JSON.

JSON is larger than the protobuf the bus carries, so the estimate errs on the
safe side, and it needs no wire code in the core. A planned task lists every
peer of its step in each of its algorithm tasks, so its size grows with the
square of the step's parties; that is why planned tasks are measured too.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from shared.events import TaskPlanned


def json_size(value: Any) -> int:
    plain = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return len(json.dumps(plain, separators=(",", ":"), default=str).encode())


def planned_task_size(task: TaskPlanned) -> int:
    """json_size(task) without building it: the algorithm tasks of a step share one peers
    tuple, which is measured once rather than once per algorithm task."""
    total = json_size(dataclasses.replace(task, algorithm_tasks=()))
    total += max(len(task.algorithm_tasks) - 1, 0)  # the commas between algorithm tasks
    peer_sizes: dict[int, int] = {}
    for algo in task.algorithm_tasks:
        if id(algo.peers) not in peer_sizes:
            peer_sizes[id(algo.peers)] = json_size([dataclasses.asdict(p) for p in algo.peers])
        # minus the "[]" that stood for the peers when they were left out
        total += json_size(dataclasses.replace(algo, peers=())) - 2 + peer_sizes[id(algo.peers)]
    return total
