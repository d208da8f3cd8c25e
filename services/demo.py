"""`ferry demo`: a flow end to end on the embedded platform, with a readable report."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_FLOW = ROOT / "examples" / "flows" / "noop.yaml"


def _report(view: dict, elapsed_s: float) -> str:
    lines = [f"flow {view['flow_id']}: {view['status']} in {elapsed_s:.1f} s"]
    for task in view["tasks"]:
        lines.append(f"  task {task['step']:<12} {task['status']:<10} ({task['algorithm']} {task['version']})")
        for algo in task["algorithm_tasks"]:
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(algo["metrics"].items()))
            lines.append(f"    {algo['party']:<14} {algo['role']:<10} {algo['status']:<10} attempt {algo['attempt']}"
                         + (f"  {metrics}" if metrics else ""))
    if view.get("reason") and view["status"] != "SUCCEEDED":
        lines.append(f"  reason: {view['reason']}")
    return "\n".join(lines)


def main(quick: bool = False) -> int:
    from services.embedded import run_flow_embedded
    from services.splitter.core.flow_document import parse_flow_document
    from shared.logging import configure_logging

    configure_logging("WARNING", json=True)
    flow = parse_flow_document(DEMO_FLOW.read_text(), default_flow_id=f"demo-{int(time.time())}")
    print(f"running {DEMO_FLOW.relative_to(ROOT)} on the embedded platform (in-process bus, inline executors)")
    started = time.monotonic()
    view = asyncio.run(run_flow_embedded(flow, timeout_s=300))
    print(_report(view, time.monotonic() - started))
    return 0 if view["status"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
