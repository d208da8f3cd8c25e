"""The benchmark must time a fold that does its real work, not one that rejects everything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.monitor.core import Anomaly, CancelSiblings, MonitorState, fold
from shared.events import Status
from shared.wire import codec

BENCH = Path(__file__).resolve().parents[2] / "bench" / "monitor_fold.py"


def test_the_benchmark_workload_runs_every_flow_to_success():
    spec = importlib.util.spec_from_file_location("monitor_fold_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    state, effects = fold(MonitorState(), [codec.decode(b) for b in bench.workload(flows=6, seed=1)])
    assert len(state.flows) == 6
    assert all(f.status is Status.SUCCEEDED for f in state.flows.values())
    assert not [e for e in effects if isinstance(e, (Anomaly, CancelSiblings))]
    assert any(a.attempt == 2 for t in state.tasks.values() for a in t.algos)  # retries are exercised
