"""A third-party algorithm plug-in, installed like any package, works end to end.

The plug-in is examples/plugins/ferry-example-histogram (`make install` pip-installs
every examples/plugins/*/ package into the venv; by hand:
`.venv/bin/pip install -e examples/plugins/ferry-example-histogram`). Ferry finds it
only through the ``ferry.algorithms`` entry point: the splitter validates flows
against its spec without importing its roles, and on the embedded platform a flow
using it runs with the demo's breast-cancer hospitals and yields exactly the
histogram numpy computes over the hospitals' rows together.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from services.splitter.core.decide import Accepted, decide
from services.splitter.core.flow_document import load_document, parse_flow_document
from services.splitter.core.validation import FlowLimits, validate_flow
from shared.algorithms import AlgorithmRegistry

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "plugins" / "ferry-example-histogram"
FLOW_FILE = PLUGIN / "flows" / "histogram.yaml"
NAME, VERSION = "example.federated_histogram", "1"
HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
NOT_INSTALLED = f"the example plug-in is not installed: .venv/bin/pip install -e {PLUGIN.relative_to(ROOT)}"


@pytest.fixture(scope="module")
def registry() -> AlgorithmRegistry:
    found = AlgorithmRegistry.from_entry_points()
    assert found.get(NAME, VERSION) is not None, NOT_INSTALLED
    return found


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """The demo's parties (services.demo.prepare_parties): hospital-a/b/c and pooled, breast_cancer."""
    from services.demo import prepare_parties

    path = tmp_path_factory.mktemp("plugin-work")
    prepare_parties(path)
    return path


def _hospital_rows(work_dir: Path, feature: int) -> np.ndarray:
    """One feature of every hospital's rows, read from their LMDB stores."""
    from services.executor.data import open_dataset
    from services.scheduler.adapters.launchers import party_dirs

    rows = []
    for hospital in HOSPITALS:
        with open_dataset(party_dirs(work_dir, hospital)["data"], "breast_cancer") as data:
            rows.append(np.array(data.features()[:, feature]))  # a copy: views die with the store
    return np.concatenate(rows)


def _document(**params) -> dict:
    """The example flow document, with some of its step's params replaced (None removes one)."""
    document = copy.deepcopy(dict(load_document(FLOW_FILE.read_text())))
    step_params = document["steps"][0]["params"]
    for key, value in params.items():
        if value is None:
            step_params.pop(key, None)
        else:
            step_params[key] = value
    return document


def test_the_plugin_is_installed_under_the_entry_point_group(registry):
    [ep] = [ep for ep in entry_points(group="ferry.algorithms") if ep.value.startswith("ferry_example_histogram.")]
    assert ep.dist is not None and ep.dist.name == "ferry-example-histogram"
    spec = registry.get(NAME, VERSION)
    assert {r.name: (r.needs_data, r.min_parties, r.max_parties) for r in spec.roles} == {
        "client": (True, 1, None), "aggregator": (False, 1, 1)}
    params = {p.name: p for p in spec.params}
    assert params["feature_index"].required and params["feature_index"].minimum == 0
    assert (params["bins"].default, params["bins"].minimum, params["bins"].maximum) == (10, 2, 1000)
    assert params["low"].required and params["high"].required
    assert NAME in registry.names() and "ferry.fedavg" in registry.names()  # beside the built-ins


def test_loading_the_spec_imports_neither_numpy_nor_the_roles():
    # What the splitter and `ferry flow validate` pay for an installed plug-in. In a fresh
    # interpreter, since this one has long imported numpy.
    probe = (
        "import sys\n"
        "from shared.algorithms import AlgorithmRegistry\n"
        "before = set(sys.modules)\n"
        "AlgorithmRegistry.from_entry_points()\n"
        "print(sorted(m for m in set(sys.modules) - before "
        "if m.split('.')[0] in ('numpy', 'torch', 'services') or m == 'ferry_example_histogram.roles'))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_splitter_accepts_the_example_flow(registry):
    flow = parse_flow_document(FLOW_FILE.read_text(), default_flow_id="plugin-valid")
    assert validate_flow(flow, registry, None, FlowLimits()) == []
    outcome = decide(flow, registry, frozenset(HOSPITALS + ("coordinator",)), FlowLimits(), now_ms=0)
    assert isinstance(outcome, Accepted), outcome
    [task] = outcome.tasks
    assert sorted((a.party, a.role, a.data_ref) for a in task.algorithm_tasks) == [
        ("coordinator", "aggregator", ""), *((h, "client", "breast_cancer") for h in HOSPITALS)]


def test_the_splitter_rejects_bad_params_naming_each_field(registry):
    flow = parse_flow_document(_document(bins=1, feature_index=-1, low=None, colour="red"),
                               default_flow_id="plugin-bad")
    errors = {e.path: e.reason for e in validate_flow(flow, registry, None, FlowLimits())}
    assert set(errors) == {"steps[0].params.bins", "steps[0].params.feature_index", "steps[0].params.low",
                           "steps[0].params.colour"}, errors
    assert "must be >= 2" in errors["steps[0].params.bins"]
    assert "must be >= 0" in errors["steps[0].params.feature_index"]
    assert "is required" in errors["steps[0].params.low"]
    assert "unknown parameter" in errors["steps[0].params.colour"]
    # The spec's rule across parameters, run once each parameter is fine alone.
    inverted = parse_flow_document(_document(low=30.0, high=5.0), default_flow_id="plugin-inverted")
    assert [(e.path, e.reason) for e in validate_flow(inverted, registry, None, FlowLimits())] == [
        ("steps[0].params.high", "must be greater than low (30.0), got 5.0")]


def test_ferry_flow_validate_reports_the_field_path(tmp_path, capsys):
    from services.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_document(bins=5000)))
    assert main(["flow", "validate", str(FLOW_FILE)]) == 0
    assert main(["flow", "validate", str(bad)]) == 1
    assert "steps[0].params.bins: must be <= 1000, got 5000" in capsys.readouterr().err


async def test_a_flow_using_it_runs_on_the_embedded_platform(work_dir, registry):
    from services.embedded import EmbeddedPlatform
    from services.executor.artifacts import ArtifactStore
    from services.scheduler.adapters.launchers import party_dirs

    # Feature 3 is the mean area (about 140..2500): this range leaves rows out on both sides,
    # which np.histogram does not count either.
    feature, bins, low, high = 3, 25, 300.0, 1800.0
    good = parse_flow_document(_document(feature_index=feature, bins=bins, low=low, high=high),
                               default_flow_id="plugin-histogram")
    # A feature the data does not have: no spec can know the parties' data, the role finds out.
    missing = parse_flow_document(_document(feature_index=30), default_flow_id="plugin-no-feature")
    with capture_logs() as logs:
        async with EmbeddedPlatform(work_dir, registry=registry) as platform:
            await platform.submit(good)
            await platform.submit(missing)
            view = await platform.wait_for(good.flow_id, timeout_s=60)
            failed = await platform.wait_for(missing.flow_id, timeout_s=60)

    assert view["status"] == "SUCCEEDED", view
    column = _hospital_rows(work_dir, feature)
    expected, edges = np.histogram(column, bins=bins, range=(low, high))
    assert 0 < expected.sum() < len(column) == 569  # some rows out of range: the test means something

    [step] = view["tasks"]
    [aggregator] = [a["metrics"] for a in step["algorithm_tasks"] if a["role"] == "aggregator"]
    clients = {a["party"]: a["metrics"] for a in step["algorithm_tasks"] if a["role"] == "client"}
    assert aggregator["total"] == expected.sum() and aggregator["clients"] == 3
    assert sum(m["rows"] for m in clients.values()) == len(column)
    assert sum(m["counted"] for m in clients.values()) == expected.sum()
    for party in ("coordinator", *HOSPITALS):  # the aggregator's result, and every client's copy of it
        arrays, meta = ArtifactStore(party_dirs(work_dir, party)["artifacts"], good.flow_id).load("histogram")
        np.testing.assert_array_equal(arrays["counts"], expected, err_msg=party)
        np.testing.assert_array_equal(arrays["edges"], edges, err_msg=party)
        assert meta["feature_index"] == feature and meta["total"] == expected.sum()

    # Not retried: the failure is a configuration error (exit code 2). The monitor shows only
    # that; the role's own message is in the executor's log.
    assert failed["status"] == "FAILED", failed
    assert "configuration error" in failed["reason"] and "not retriable" in failed["reason"], failed["reason"]
    assert all(a["attempt"] == 1 for a in failed["tasks"][0]["algorithm_tasks"])
    errors = [e for e in logs if e["event"] == "executor.failed" and e.get("flow") == missing.flow_id]
    assert errors and all(e["error_type"] == "ConfigurationError" and not e["retriable"] for e in errors)
    assert "params.feature_index is 30, but dataset 'breast_cancer' of hospital-" in errors[0]["error"]
    assert "has 30 features" in errors[0]["error"]


def _planned(flow, registry) -> dict:
    """The algorithm tasks the splitter plans for the flow's one step, by party."""
    outcome = decide(flow, registry, None, FlowLimits(), now_ms=0)
    assert isinstance(outcome, Accepted), outcome
    return {a.party: a for a in outcome.tasks[0].algorithm_tasks}


async def test_the_roles_check_the_range_themselves(work_dir, registry):
    # A task the splitter did not check (e.g. planned where an older spec was installed).
    import asyncio
    import dataclasses

    from services.executor.main import run_task
    from services.scheduler.adapters.launchers import party_dirs
    from shared import topics
    from shared.bus.memory import InMemoryBus
    from shared.clock import SystemClock
    from shared.errors import ConfigurationError

    specs = _planned(parse_flow_document(_document(), default_flow_id="plugin-unchecked"), registry)
    bus = InMemoryBus()
    await bus.ensure_topics(topics.CATALOGUE)
    with capture_logs() as logs:
        for party in ("coordinator", "hospital-a"):
            spec = dataclasses.replace(specs[party], params={**specs[party].params, "low": 5.0, "high": 5.0})
            code = await run_task(spec, party_dirs(work_dir, party), asyncio.Event(), bus=bus,
                                  clock=SystemClock(), registry=registry)
            assert code == ConfigurationError.exit_code
    errors = [e["error"] for e in logs if e["event"] == "executor.failed"]
    assert errors == ["example.federated_histogram: params.high must be greater than params.low, "
                      "got low=5.0, high=5.0"] * 2


async def test_suspended_roles_resume_from_their_checkpoints(work_dir, registry):
    """The executor's contract without the scheduler: run_task per party, as the inline runner calls it.

    A client stopped before it talks to anyone keeps its counts and never reads its data again;
    an aggregator stopped after one client's counts keeps them and still ends with all three.
    """
    import asyncio
    import dataclasses

    from services.executor.artifacts import ArtifactStore
    from services.executor.main import dev_trust, run_task
    from services.scheduler.adapters.launchers import party_dirs
    from shared import topics
    from shared.bus.memory import InMemoryBus
    from shared.clock import SystemClock
    from shared.errors import Suspended

    flow = parse_flow_document(_document(feature_index=0, bins=12, low=8.0, high=20.0),
                               default_flow_id="plugin-resume")
    specs = _planned(flow, registry)
    bus = InMemoryBus()
    await bus.ensure_topics(topics.CATALOGUE)

    def start(party: str, stop: asyncio.Event, *, attempt: int = 1, data: bool = True) -> asyncio.Task:
        dirs = party_dirs(work_dir, party)
        if not data:  # any read of the party's data now fails with DataError
            dirs = {**dirs, "data": work_dir / "no-such-store"}
        spec = dataclasses.replace(specs[party], attempt=attempt)
        return asyncio.create_task(run_task(spec, dirs, stop, bus=bus, clock=SystemClock(), registry=registry,
                                            trust=lambda: dev_trust(work_dir / "keys", spec)))

    async def checkpointed(party: str, received: int) -> None:
        from services.executor.checkpoints import FileCheckpointStore

        store = FileCheckpointStore(party_dirs(work_dir, party)["checkpoints"], specs[party].algo_task_id)
        while (latest := store.load_latest()) is None or len(latest.meta.get("received", ())) < received:
            await asyncio.sleep(0.01)

    with capture_logs() as logs:
        stopped = asyncio.Event()
        stopped.set()  # a stop that arrived while the client was counting
        assert await start("hospital-a", stopped) == Suspended.exit_code

        agg_stop = asyncio.Event()
        aggregator = start("coordinator", agg_stop)
        client_a = start("hospital-a", asyncio.Event(), attempt=2, data=False)
        await asyncio.wait_for(checkpointed("coordinator", received=1), 10)
        agg_stop.set()
        assert await asyncio.wait_for(aggregator, 10) == Suspended.exit_code

        rest = [start("coordinator", asyncio.Event(), attempt=2),
                start("hospital-b", asyncio.Event()), start("hospital-c", asyncio.Event())]
        assert await asyncio.wait_for(asyncio.gather(client_a, *rest), 20) == [0, 0, 0, 0]

    expected, _ = np.histogram(_hospital_rows(work_dir, 0), bins=12, range=(8.0, 20.0))
    arrays, meta = ArtifactStore(party_dirs(work_dir, "coordinator")["artifacts"], flow.flow_id).load("histogram")
    np.testing.assert_array_equal(arrays["counts"], expected)
    resumed = {(e["party"], e["attempt"]): e for e in logs if e["event"] == "histogram.resumed"}
    assert set(resumed) == {("hospital-a", 2), ("coordinator", 2)}, resumed
    assert resumed[("coordinator", 2)]["received"] == ["hospital-a"]
