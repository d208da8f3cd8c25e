"""The step graph: nodes are step positions, edges point from a step to the steps it depends on.

Positions rather than names keep these functions independent of naming
problems (validation reports those separately) and give a natural,
deterministic tie-break: the order steps appear in the flow.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Sequence

Dependencies = Sequence[Sequence[int]]  # dependencies[i]: positions step i depends on


class CyclicGraph(ValueError):
    """The graph has a cycle, so it has no topological order."""


def publish_order(dependencies: Dependencies) -> tuple[int, ...]:
    """Kahn's algorithm; among steps that are ready, the earliest in the flow goes first."""
    dependants: list[list[int]] = [[] for _ in dependencies]
    waiting_on = [0] * len(dependencies)
    for step, deps in enumerate(dependencies):
        for dep in set(deps):
            dependants[dep].append(step)
            waiting_on[step] += 1
    ready = [step for step, count in enumerate(waiting_on) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        step = heapq.heappop(ready)
        order.append(step)
        for dependant in dependants[step]:
            waiting_on[dependant] -= 1
            if waiting_on[dependant] == 0:
                heapq.heappush(ready, dependant)
    if len(order) < len(dependencies):
        raise CyclicGraph(f"{len(dependencies) - len(order)} steps are on or behind a cycle")
    return tuple(order)


def find_cycles(dependencies: Dependencies) -> list[tuple[int, ...]]:
    """One concrete cycle per strongly connected component with more than one step.

    Each cycle starts and ends at the component's earliest step and is a
    shortest one through it, e.g. (0, 2, 1, 0): step 0 depends on 2, 2 on 1,
    1 on 0. Self-dependencies are ignored here; validation reports them on
    their own. Cycles are listed in the order of their first step.
    """
    edges = [sorted({d for d in deps if d != step}) for step, deps in enumerate(dependencies)]
    components = [c for c in _strongly_connected(edges) if len(c) > 1]
    return sorted((_shortest_cycle(edges, set(c), min(c)) for c in components), key=lambda c: c[0])


def _shortest_cycle(edges: list[list[int]], component: set[int], start: int) -> tuple[int, ...]:
    came_from: dict[int, int] = {}
    queue = deque([start])
    while queue:
        step = queue.popleft()
        for dep in edges[step]:
            if dep == start:
                path = [step]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return (start, *reversed(path[:-1]), start)
            if dep in component and dep not in came_from:
                came_from[dep] = step
                queue.append(dep)
    raise AssertionError("a strongly connected component always has a cycle through each member")


def _strongly_connected(edges: list[list[int]]) -> list[list[int]]:
    """Tarjan's algorithm without recursion, so deep chains cannot hit the recursion limit."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    components: list[list[int]] = []
    for root in range(len(edges)):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, next_edge = work.pop()
            if next_edge == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            descended = False
            for position in range(next_edge, len(edges[node])):
                dep = edges[node][position]
                if dep not in index:
                    work.append((node, position + 1))
                    work.append((dep, 0))
                    descended = True
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            if descended:
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components
