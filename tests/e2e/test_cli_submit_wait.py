"""`ferry flow submit --wait` on real Kafka: the splitter, monitor and scheduler run as processes;
the CLI publishes the flow, follows the monitor's event stream and ends with the result table."""

from __future__ import annotations

import uuid
from pathlib import Path

from services.cli import main
from tests.e2e.platform import Platform

ROOT = Path(__file__).resolve().parents[2]


def test_submit_wait_follows_the_flow_to_its_result_table(kafka_bootstrap, tmp_path, capsys):
    platform = Platform(kafka_bootstrap, tmp_path / "platform").start(tmp_path / "work")
    try:
        flow_id = f"cli-wait-{uuid.uuid4().hex[:6]}"
        code = main(["flow", "submit", str(ROOT / "examples" / "flows" / "noop.yaml"), "--id", flow_id,
                     "--bootstrap", kafka_bootstrap, "--monitor", platform.monitor_url, "--wait",
                     "--timeout", "300"])
        out = capsys.readouterr().out
        assert code == 0, out + platform.logs()
        assert f"flow {flow_id}: planned: " in out and f"({kafka_bootstrap})" in out
        assert f"flow {flow_id}: SUCCEEDED" in out and out.count("SUCCEEDED") >= 5  # flow + 4 party rows
        assert platform.flow(flow_id)["status"] == "SUCCEEDED"
    finally:
        codes = platform.stop()
    assert set(codes.values()) <= {0}, codes
