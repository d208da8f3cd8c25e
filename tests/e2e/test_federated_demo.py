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
