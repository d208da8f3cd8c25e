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


def test_the_changes_handed_to_evolve_as_dicts_name_real_fields():
    """facts._absorbed and changes.move_algo build evolve()'s keywords as dict literals."""
    checked = 0
    for path in Path(core.__file__).parent.glob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef) and fn.name in ("_absorbed", "move_algo"):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Dict):
                        names = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                        assert names <= FIELDS, (path.name, node.lineno, names - FIELDS)
                        checked += 1
    assert checked >= 5


def test_evolve_equals_dataclasses_replace_and_leaves_the_original_alone():
    algo = AlgoTask("a1", "p", "r", Status.RUNNING, 1)
    changed = evolve(algo, round=3, status=Status.SUCCEEDED)
    assert changed == dataclasses.replace(algo, round=3, status=Status.SUCCEEDED)
    assert (algo.round, algo.status) == (0, Status.RUNNING)


def test_slots_constructors_build_what_the_classes_build_and_stay_frozen():
    """The fold builds Records, Decisions and RoundPoints through slots_constructor: the same
    objects as the constructors (positional, keyword, defaults), and as frozen."""
    import pytest

    from services.monitor.core.decide import Decision, Verdict
    from services.monitor.core.rounds import RoundPoint
    from services.monitor.core.state import Outcome, Record
    from shared.plain import slots_constructor

    record = slots_constructor(Record)
    args = (Outcome.APPLIED, Status.RUNNING, Status.SUCCEEDED, 2, "e1", "ferry.v1.JobEvent", 17)
    assert record(*args) == Record(*args) and record(*args, reason="r") == Record(*args, "r")
    assert type(record(*args)) is Record and record(*args).reason == ""
    decision = slots_constructor(Decision)
    assert decision(Verdict.IGNORE, reason="why") == Decision(Verdict.IGNORE, None, 0, "why")
    assert slots_constructor(RoundPoint)(1, 1, 5, {"loss": 0.5}) == RoundPoint(1, 1, 5, {"loss": 0.5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        record(*args).attempt = 3
    with pytest.raises(TypeError):
        record(Outcome.APPLIED)  # a missing argument is refused as by the constructor
    assert slots_constructor(AlgoTask) is AlgoTask  # no slots: the class itself (see shared.plain.new)
