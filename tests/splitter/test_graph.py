from __future__ import annotations

import pytest

from services.splitter.core.graph import CyclicGraph, find_cycles, publish_order


def test_ready_steps_go_in_flow_order():
    # 0 waits for 2; 1 and 2 are ready at once, 1 goes first being earlier; 0 becomes ready only after 2
    assert publish_order([[2], [], []]) == (1, 2, 0)


def test_a_cycle_has_no_publish_order():
    with pytest.raises(CyclicGraph, match="2 steps"):
        publish_order([[1], [0], []])


def test_the_shortest_cycle_through_the_earliest_step_is_named():
    # 0 -> 1 -> 2 -> 3 -> 0 and the shortcut 0 -> 3 -> 0
    assert find_cycles([[1, 3], [2], [3], [0]]) == [(0, 3, 0)]


def test_self_dependencies_and_acyclic_parts_give_no_cycles():
    assert find_cycles([[0], [0], [0, 1]]) == []


def test_long_chains_need_no_recursion():
    chain = [[i + 1] for i in range(5_000)] + [[0]]
    (cycle,) = find_cycles(chain)
    assert len(cycle) == 5_002 and cycle[0] == cycle[-1] == 0
    assert publish_order([[i - 1] if i else [] for i in range(5_000)]) == tuple(range(5_000))
