"""Asynchronous (FedBuff) against synchronous FedAvg with one party five times slower.

    python bench/fedbuff.py [--quick] [--out PATH]

The platform as processes (tests/e2e/platform.py: splitter, scheduler with the
local runner, monitor) on a real Kafka broker with mutual TLS, started here;
the federation of tests/e2e/straggler.py (hospital-c holds five times the rows
of the other two, and with four local epochs per version its training, not the
round trip, is what a round waits for: `slow_party_train_ratio` is its median
local-training time over the fast parties' in the sync run; the coordinator
scores each version on rows no client trains on). Each flow is read back from
the monitor's per-round history:

  time        cumulative sum of the aggregator's own round_s (join and start-up excluded,
              the same for both modes)
  accuracy    the coordinator's server_accuracy after each version
  target      the sync run's final server_accuracy
  speedup     sync's time to first reach the target / async's time to first reach it, both
              counted from the end of the run's first version (async_speedup): the first version
              carries every executor's one-off start costs (first Kafka fetches, first torch calls;
              10-30 s on this loaded machine against ~1 s for later rounds), which are the same in
              both modes and would otherwise decide the ratio. Counted from the start instead:
              async_speedup_from_start. Null when async never reached the target.

The async flow may run up to three times as many versions as the sync one has rounds:
a version is a buffer of two updates, not a round of three.
Writes bench/results/fedbuff.json (top-level `async_speedup`, plus commit and clean_tree).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, provenance, table, write_json

OUT = RESULTS / "fedbuff.json"
# Slower learning than the e2e test's 0.05, so that reaching the target takes many rounds and the
# first round's one-off costs (data loading, first torch calls) do not decide the comparison: with
# the straggler's four local epochs, lr x epochs = 0.005 per version, as with one epoch at 0.005
# (at lr 0.005 and four epochs the sync run reached its final accuracy in its second round).
LR = 0.00125


def _run(platform, aggregation: str, rounds: int) -> dict:
    from tests.e2e.platform import new_flow_id
    from tests.e2e.straggler import ROWS, round_series, straggler_flow, trained_versions

    flow_id = new_flow_id(f"bench-{aggregation}")
    started = time.monotonic()
    platform.submit(straggler_flow(aggregation, rounds, lr=LR), flow_id)
    view = platform.wait_flow(flow_id, timeout_s=3600)
    wall = time.monotonic() - started
    if view["status"] != "SUCCEEDED":
        raise RuntimeError(f"{aggregation}: {view['status']} {view.get('reason')}")
    series = round_series(platform, flow_id)
    points = [p for p in series["coordinator"] if "round_s" in p["metrics"]]
    elapsed, curve = 0.0, []
    for p in points:
        elapsed += p["metrics"]["round_s"]
        curve.append((p["round"], round(elapsed, 3), p["metrics"]["server_accuracy"]))
    later = [p["metrics"]["round_s"] for p in points[1:]]
    train_s = {p: sorted(x["metrics"]["train_s"] for x in series[p] if "train_s" in x["metrics"]) for p in ROWS}
    return {"aggregation": aggregation, "versions": len(points), "wall_s": round(wall, 1), "curve": curve,
            "median_train_s": {p: round(v[len(v) // 2], 3) for p, v in train_s.items() if v},
            "median_s_per_version_after_the_first": round(float(sorted(later)[len(later) // 2]), 3) if later else None,
            "trained_versions": {p: trained_versions(series[p]) for p in ROWS}}


def _time_to(curve, target: float, after_first: bool = False) -> float | None:
    """Seconds until the first version at or above target; from the end of version 1 if after_first."""
    origin = curve[0][1] if after_first else 0.0
    return next((round(t - origin, 3) for _, t, acc in curve if acc >= target), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 sync rounds (about a minute); writes only with --out")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = Path(args.out) if args.out else (None if args.quick else OUT)
    sync_rounds = 4 if args.quick else 20

    from shared.devtools.kafka_broker import start_broker, stop_broker
    from tests.e2e.platform import Platform
    from tests.e2e.straggler import SLOW, prepare_straggler_parties

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ferry-fedbuff-") as tmp:
        root = Path(tmp)
        handle = start_broker(root / "kafka")
        os.environ.update(handle.client_env())
        platform = Platform(handle.bootstrap, root / "platform")
        work = root / "work"
        work.mkdir()
        prepare_straggler_parties(work)
        try:
            platform.start(work)
            sync = _run(platform, "sync", sync_rounds)
            asynchronous = _run(platform, "async", 3 * sync_rounds)
        finally:
            platform.stop()
            stop_broker(handle)
    target = sync["curve"][-1][2]
    times = {name: (_time_to(r["curve"], target, after_first=True), _time_to(r["curve"], target))
             for name, r in (("sync", sync), ("async", asynchronous))}
    speedup = _ratio(times["sync"][0], times["async"][0])
    from_start = _ratio(times["sync"][1], times["async"][1])
    print(table(("mode", "versions", "s to target after v1", "s to target", "first version s", "later s/version",
                 "final acc", "trained versions per party"),
                [(r["aggregation"], r["versions"], *times[r["aggregation"]], r["curve"][0][1],
                  r["median_s_per_version_after_the_first"], r["curve"][-1][2], r["trained_versions"])
                 for r in (sync, asynchronous)]))
    fast = [v for p, v in sync["median_train_s"].items() if p != SLOW]
    slow_ratio = round(sync["median_train_s"][SLOW] / max(fast), 2)
    print(f"slow party's median local training / the fast parties': {slow_ratio}")
    print(f"target (sync final server accuracy) {target:.4f}; async_speedup {speedup} (from start {from_start})")
    if out is not None:
        write_json(out, {**provenance(), "async_speedup": speedup, "async_speedup_from_start": from_start,
                         "slow_party_train_ratio": slow_ratio,
                         "target_accuracy": target, "time_to_target_s": times, "lr": LR,
                         "load_average_before": [round(x, 2) for x in load_before],
                         "load_average_after": [round(x, 2) for x in os.getloadavg()],
                         "machine": machine(), "runs": [sync, asynchronous]})
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
