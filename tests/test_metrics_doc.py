"""Every Prometheus metric is documented in docs/metrics.md, and the Grafana dashboard uses only real ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

import shared.metrics

ROOT = Path(__file__).resolve().parents[1]


def _metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name -> (type, labels) of every metric defined in shared/metrics.py."""
    out = {}
    for value in vars(shared.metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if value._type == "counter" else "")
            out[name] = (value._type, tuple(value._labelnames))
    return out


def _table() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = {}
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`ferry_"):
            rows[cells[0].strip("`")] = (cells[1], tuple(re.findall(r"`(\w+)`", cells[2])))
    return rows


def test_every_metric_is_in_the_table_with_its_type_and_labels():
    metrics, table = _metrics(), _table()
    assert len(metrics) >= 10
    assert metrics == table


def test_the_grafana_dashboard_queries_only_documented_metrics():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "ferry-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\bferry_\w+", e)}
    documented = set(_metrics())
    assert used <= documented, used - documented
    assert documented <= used, f"metrics with no panel: {documented - used}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
