"""docs/flow-reference.md is generated from the algorithm specs and must be fresh."""

from shared.builtin_algorithms import BUILTIN, FEDAVG
from shared.devtools.flow_reference import TARGET, main, render


def test_the_flow_reference_is_fresh():
    assert main(["--check"]) == 0, "docs/flow-reference.md is stale: python -m shared.devtools.flow_reference"


def test_it_documents_every_builtin_parameter_and_server_side_evaluation():
    text = TARGET.read_text()
    for spec in BUILTIN:
        assert f"### `{spec.name}` version {spec.version}" in text
        for p in spec.params:
            assert f"| `{p.name}` |" in text
    assert "Server-side" in text and "server_accuracy" in text
    assert "| `test_fraction` | float | `0.2` | 0.01 .. 0.9 |" in render([FEDAVG])
