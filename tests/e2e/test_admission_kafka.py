"""Admission limits end to end (real Kafka, OS processes): a party never runs more executors than its
limit, the waiting ones show as queued in the monitor with the reason, and every flow succeeds."""

from __future__ import annotations

import time
import uuid

from tests.e2e.platform import Platform
from tests.e2e.platform import executor_pids, noop_step


def test_a_party_limit_queues_executors_visibly_and_every_flow_succeeds(kafka_bootstrap, tmp_path):
    platform = Platform(kafka_bootstrap, tmp_path / "platform",
                        env={"FERRY_SCHEDULER__MAX_RUNNING_PER_PARTY": "1"}).start(work_dir=tmp_path / "work")
    try:
        flows = [f"adm-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        for flow_id in flows:
            platform.submit({"flow": "adm", "steps": [noop_step("work", ("node-a",), sleep_s=2)]}, flow_id)

        most, queued_stage = 0, None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = sum(len(executor_pids(f)) for f in flows)
            most = max(most, running)
            views = [platform.flow(f) for f in flows]
            for view in views:
                for task in (view or {}).get("tasks", []):
                    for algo in task["algorithm_tasks"]:
                        if algo["stage"].startswith("pending: queued"):
                            queued_stage = algo["stage"]
            if all(v is not None and v["status"] == "SUCCEEDED" for v in views):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"flows did not all succeed: {[platform.flow(f) for f in flows]}\n{platform.logs()}")
        assert most == 1, f"party node-a ran {most} executors at once (limit 1)"
        assert queued_stage == "pending: queued: party node-a runs 1 executors (limit 1)", queued_stage
        # Slots free when the runner sees the exits, which may trail the executors' own reports.
        platform.wait_until(lambda: (lambda h: h["queued"] == 0 and h["running_per_party"] == {})(
            platform._http.get(platform.services["scheduler"].url + "/healthz").json()),
            "every slot given back", timeout_s=15)
    finally:
        codes = platform.stop()
    assert set(codes.values()) <= {0}, codes
