"""The user's acceptance test: federated and centralized training of the same model on the
same data reach accuracies that are not significantly different, every platform step succeeding."""

from __future__ import annotations

from services.demo import run_demo, two_proportion_p_value


async def test_fedavg_matches_the_centralized_baseline_on_breast_cancer(tmp_path):
    view = await run_demo(tmp_path, timeout_s=300)
    assert view["status"] == "SUCCEEDED", view
    steps = {t["step"]: t for t in view["tasks"]}
    assert [t["status"] for t in view["tasks"]] == ["SUCCEEDED"] * 5
    aggregator = next(a for a in steps["train"]["algorithm_tasks"] if a["role"] == "aggregator")
    baseline = steps["baseline"]["algorithm_tasks"][0]
    fed, cen = aggregator["metrics"]["test_accuracy"], baseline["metrics"]["test_accuracy"]
    # Same held-out rows for both: the union of the hospitals' test rows is the pooled test set.
    assert aggregator["metrics"]["test_n"] == baseline["metrics"]["test_n"] > 100
    assert cen > 0.9
    assert abs(fed - cen) <= 0.02
    assert two_proportion_p_value(fed, cen, int(baseline["metrics"]["test_n"])) > 0.05
    evaluated = [a["metrics"]["test_accuracy"] for a in steps["evaluate"]["algorithm_tasks"]]
    assert all(acc > 0.85 for acc in evaluated)


async def test_server_side_evaluation_and_local_only_baseline(tmp_path):
    """The coordinator scores the global model on its held-out rows every round; hospitals
    training alone are compared with FedAvg on the same model and hyper-parameters."""
    import numpy as np

    from services.demo import prepare_parties
    from services.embedded import EmbeddedPlatform
    from services.executor.data.importers import load_source, put_table, with_test_split
    from services.scheduler.adapters.launchers import party_dirs
    from services.splitter.core.flow_document import parse_flow_document
    from tests.e2e.test_walking_skeleton import ROOT

    prepare_parties(tmp_path)
    table = with_test_split(load_source("sklearn:breast_cancer"), 0.2, 7)
    held_out = np.flatnonzero(table.columns["split"] == 1)
    put_table(party_dirs(tmp_path, "coordinator")["data"], "breast_cancer_holdout", table.take(held_out))
    flow = parse_flow_document((ROOT / "examples" / "flows" / "local_vs_federated.yaml").read_text(),
                               default_flow_id="local-vs-fed")
    async with EmbeddedPlatform(tmp_path) as platform:
        await platform.submit(flow)
        view = await platform.wait_for(flow.flow_id, timeout_s=300)
    assert view["status"] == "SUCCEEDED", view
    steps = {t["step"]: t for t in view["tasks"]}
    aggregator = next(a for a in steps["train"]["algorithm_tasks"] if a["role"] == "aggregator")
    assert 0.9 < aggregator["metrics"]["test_accuracy"] <= 1.0
    # The held-out rows are the hospitals' test rows: both scores must agree exactly.
    assert aggregator["metrics"]["server_accuracy"] == aggregator["metrics"]["test_accuracy"]
    locals_ = [a["metrics"]["test_accuracy"] for a in steps["local"]["algorithm_tasks"]]
    assert len(locals_) == 3 and all(0.8 < acc <= 1.0 for acc in locals_)
