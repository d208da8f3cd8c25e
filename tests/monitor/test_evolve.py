"""evolve() trades a runtime field check for speed; this checks its call sites instead."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import services.monitor.core as core
from services.monitor.core.state import AlgoTask, Flow, MonitorState, Task, evolve
from shared.events import Status

FIELDS = {f.name for cls in (AlgoTask, Task, Flow, MonitorState) for f in dataclasses.fields(cls)}


def test_every_evolve_call_names_real_fields():
    calls = 0
    for path in Path(core.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "evolve":
                calls += 1
                names = {k.arg for k in node.keywords if k.arg is not None}
                assert names <= FIELDS, (path.name, node.lineno, names - FIELDS)
    assert calls > 10


def test_evolve_equals_dataclasses_replace_and_leaves_the_original_alone():
    algo = AlgoTask("a1", "p", "r", Status.RUNNING, 1)
    changed = evolve(algo, round=3, status=Status.SUCCEEDED)
    assert changed == dataclasses.replace(algo, round=3, status=Status.SUCCEEDED)
    assert (algo.round, algo.status) == (0, Status.RUNNING)
