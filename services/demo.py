"""`ferry demo`: the user's acceptance test on the embedded platform.

Imports the bundled breast-cancer data into three hospitals (IID shares) and
a `pooled` party holding all rows, runs examples/flows/demo_breast_cancer.yaml
(validate -> federated standardisation -> FedAvg -> evaluate, and the
centralized baseline with the same model and hyper-parameters), and prints
both accuracies on the same held-out rows and whether they differ significantly.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_FLOW = ROOT / "examples" / "flows" / "demo_breast_cancer.yaml"
HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")


def prepare_parties(work_dir: Path, *, dataset: str = "breast_cancer", seed: int = 7,
                    test_fraction: float = 0.2, scheme: str = "iid", alpha: float = 0.5) -> None:
    from services.executor.data.importers import import_partitioned, load_source, put_table, with_test_split
    from services.scheduler.adapters.launchers import party_dirs

    table = with_test_split(load_source(f"sklearn:{dataset}"), test_fraction, seed)
    stores = work_dir / "import"
    import_partitioned(stores, list(HOSPITALS), dataset, table, scheme=scheme, alpha=alpha, seed=seed)
    for party in HOSPITALS:
        target = party_dirs(work_dir, party)["data"]
        target.parent.mkdir(parents=True, exist_ok=True)
        (stores / party).rename(target)
    put_table(party_dirs(work_dir, "pooled")["data"], dataset, table)


def two_proportion_p_value(acc_a: float, acc_b: float, n: int) -> float:
    """Two-sided p-value that two accuracies on n rows each differ (normal approximation)."""
    pooled = (acc_a + acc_b) / 2
    se = math.sqrt(max(pooled * (1 - pooled) * 2 / n, 1e-12))
    z = abs(acc_a - acc_b) / se
    return math.erfc(z / math.sqrt(2))


def _report(view: dict, elapsed_s: float) -> tuple[str, dict]:
    lines = [f"flow {view['flow_id']}: {view['status']} in {elapsed_s:.1f} s"]
    found = {}
    for task in view["tasks"]:
        lines.append(f"  {task['step']:<12} {task['status']:<10} {task['algorithm']} {task['version']}")
        for algo in task["algorithm_tasks"]:
            shown = {k: v for k, v in algo["metrics"].items() if k in ("test_accuracy", "rows", "train_loss", "test_n")}
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items()))
            lines.append(f"    {algo['party']:<12} {algo['role']:<10} {algo['status']:<10} {metrics}")
            if "test_accuracy" in algo["metrics"] and algo["role"] in ("aggregator", "trainer"):
                found[task["step"]] = algo["metrics"]
    if view["status"] != "SUCCEEDED" and view.get("reason"):
        lines.append(f"  reason: {view['reason']}")
    return "\n".join(lines), found


async def run_demo(work_dir: Path, timeout_s: float = 600.0, torch_threads: int = 1) -> dict:
    from services.embedded import EmbeddedPlatform
    from services.splitter.core.flow_document import parse_flow_document

    prepare_parties(work_dir)
    flow = parse_flow_document(DEMO_FLOW.read_text(), default_flow_id=f"demo-{int(time.time())}")
    async with EmbeddedPlatform(work_dir, torch_threads=torch_threads) as platform:
        await platform.submit(flow)
        return await platform.wait_for(flow.flow_id, timeout_s=timeout_s)


def main(quick: bool = False) -> int:
    from services.executor.threads import HOW_TO_CHANGE, apply_torch_threads
    from shared.logging import configure_logging
    from shared.settings import FerrySettings

    configure_logging("WARNING", json=True)
    threads = FerrySettings().executor.torch_threads
    apply_torch_threads(threads)  # tiny models: threads cost more than they give on 2 cores
    print(f"executors use {threads} torch thread(s) each; {HOW_TO_CHANGE}")
    print(f"running {DEMO_FLOW.relative_to(ROOT)} on the embedded platform "
          f"(in-process bus, inline executors, LMDB party stores)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ferry-demo-") as tmp:
        view = asyncio.run(run_demo(Path(tmp), torch_threads=threads))
    text, found = _report(view, time.monotonic() - started)
    print(text)
    if view["status"] != "SUCCEEDED" or not {"train", "baseline"} <= set(found):
        return 1
    fed, cen = found["train"]["test_accuracy"], found["baseline"]["test_accuracy"]
    n = int(found["baseline"]["test_n"])
    p = two_proportion_p_value(fed, cen, n)
    print(f"\nfederated (FedAvg, 3 hospitals) accuracy: {fed:.4f}")
    print(f"centralized (pooled data)        accuracy: {cen:.4f}")
    print(f"difference: {100 * (fed - cen):+.2f} points on the same {n} held-out rows; "
          f"two-proportion test p = {p:.2f} ({'not ' if p >= 0.05 else ''}significantly different at 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
