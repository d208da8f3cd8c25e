"""Every example flow parses, validates and plans, against the specs these tests pin down
and against the algorithms Ferry actually ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.splitter.core.decide import Accepted, decide
from services.splitter.core.flow_document import parse_flow_document
from shared.algorithms import AlgorithmRegistry
from shared.builtin_algorithms import BUILTIN

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "flows").glob("*.yaml"))


def test_the_expected_examples_exist():
    assert {"demo_breast_cancer.yaml", "noop.yaml"} <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("which", ["test-specs", "shipped"])
def test_every_example_is_a_valid_flow(path, which, registry, limits):
    algorithms = registry if which == "test-specs" else AlgorithmRegistry(BUILTIN)
    flow = parse_flow_document(path.read_text(), default_flow_id="flow-0123456789ab")
    outcome = decide(flow, algorithms, None, limits, now_ms=0)
    assert isinstance(outcome, Accepted), outcome
    assert len(outcome.tasks) == len(flow.steps)


def test_the_demo_runs_training_after_preparation_and_the_baseline_beside_it(registry, limits):
    text = next(p for p in EXAMPLES if p.name == "demo_breast_cancer.yaml").read_text()
    outcome = decide(parse_flow_document(text, default_flow_id="demo"), registry, None, limits, 0)
    assert [(t.step, t.depends_on) for t in outcome.tasks] == [
        ("validate", ()), ("standardise", ("demo.validate",)), ("train", ("demo.standardise",)),
        ("evaluate", ("demo.train",)), ("baseline", ("demo.validate",))]
    algorithms = {t.step: {a.algorithm for a in t.algorithm_tasks} for t in outcome.tasks}
    assert algorithms["baseline"] == {"ferry.centralized"} and algorithms["train"] == {"ferry.fedavg"}
