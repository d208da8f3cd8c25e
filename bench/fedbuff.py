"""Asynchronous (FedBuff) against synchronous FedAvg with one party five times slower.

    python bench/fedbuff.py [--quick] [--repeats N] [--out PATH]

The platform as processes (tests/e2e/platform.py: splitter, scheduler with the
local runner, monitor) on a real Kafka broker with mutual TLS, started here;
the federation of tests/e2e/straggler.py: three clients with 1,000 IID rows
each of a ten-class task that needs many rounds, and a node five times slower
for hospital-c, made so by the local runner's per-party CPU limits (a cgroup
quota and weight: 500m for the fast parties, 100m for hospital-c), the
setting of the FedBuff paper (heterogeneous hardware, not a party holding most
of the data). The coordinator scores each version on rows no client trains on.

Why this design: the previous version made hospital-c slow by giving it five
times the rows, which also gave it five sevenths of the data. Staleness-down-
weighting its updates then cost accuracy, and the easy task reached its final
accuracy in two synchronous rounds, so the comparison measured start-up and
data share rather than waiting. The settings (data, lr, one local epoch) were
chosen on a validation draw of the data (straggler.py), never on these rows.

Each repeat runs sync (`rounds`) then async (three times as many versions: a
version applies a buffer of two updates, not a round's three) on the same
platform; each flow is read back from the monitor's per-round history:

  time        cumulative sum of the aggregator's own round_s (join and start-up excluded,
              the same for both modes)
  accuracy    the coordinator's server_accuracy after each version
  target      that repeat's sync run's final server_accuracy
  speedup     median over repeats of sync's time to first reach its target / median of
              async's (async_speedup), both counted from the end of the run's first version:
              the first version carries every executor's one-off start costs (first Kafka
              fetches, first torch calls), the same in both modes. Counted from the start
              instead: async_speedup_from_start. Null when async never reached the target.
  slow_party_train_ratio   hospital-c's median local-training seconds over the slower fast
              party's, in the sync runs: how much slower its node really was (the quota is a
              ceiling: on a loaded machine the fast parties may get less than their 500m while
              hospital-c stays held to its 100m, and the ratio falls below 5)

Load averages are recorded before and after each flow: the machine is shared and the
times are upper bounds. Writes bench/results/fedbuff.json (top-level `async_speedup`,
plus commit and clean_tree).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, provenance, table, write_json

OUT = RESULTS / "fedbuff.json"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _run(platform, aggregation: str, rounds: int) -> dict:
    from tests.e2e.platform import new_flow_id
    from tests.e2e.straggler import ROWS, accuracy_curve, round_series, straggler_flow, trained_versions

    flow_id = new_flow_id(f"bench-{aggregation}")
    load_before, started = _load(), time.monotonic()
    platform.submit(straggler_flow(aggregation, rounds), flow_id)
    view = platform.wait_flow(flow_id, timeout_s=3600)
    wall = time.monotonic() - started
    if view["status"] != "SUCCEEDED":
        raise RuntimeError(f"{aggregation}: {view['status']} {view.get('reason')}")
    series = round_series(platform, flow_id)
    curve = accuracy_curve(series)
    later = [b[1] - a[1] for a, b in zip(curve, curve[1:])]
    train_s = {p: [x["metrics"]["train_s"] for x in series[p] if "train_s" in x["metrics"]] for p in ROWS}
    return {"aggregation": aggregation, "versions": len(curve), "wall_s": round(wall, 1), "curve": curve,
            "median_train_s": {p: round(statistics.median(v), 3) for p, v in train_s.items() if v},
            "median_s_per_version_after_the_first": round(statistics.median(later), 3) if later else None,
            "trained_versions": {p: trained_versions(series[p]) for p in ROWS},
            "load_average_before": load_before, "load_average_after": _load()}


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if len(known) == len(values) and known else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repeat of 2 sync rounds; writes only with --out")
    ap.add_argument("--repeats", type=int, default=None, help="sync+async pairs (default 3; 1 with --quick)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = Path(args.out) if args.out else (None if args.quick else OUT)
    sync_rounds = 2 if args.quick else 10
    repeats = args.repeats or (1 if args.quick else 3)

    from shared.devtools.kafka_broker import start_broker, stop_broker
    from tests.e2e.platform import Platform
    from tests.e2e.straggler import CPU_LIMITS, LR, PLATFORM_ENV, SLOW, SOURCE, prepare_straggler_parties, time_to

    load_before = _load()
    pairs = []
    with tempfile.TemporaryDirectory(prefix="ferry-fedbuff-") as tmp:
        root = Path(tmp)
        handle = start_broker(root / "kafka")
        os.environ.update(handle.client_env())
        platform = Platform(handle.bootstrap, root / "platform", env=PLATFORM_ENV)
        work = root / "work"
        work.mkdir()
        prepare_straggler_parties(work)
        try:
            platform.start(work)
            for _ in range(repeats):
                pairs.append((_run(platform, "sync", sync_rounds), _run(platform, "async", 3 * sync_rounds)))
        finally:
            platform.stop()
            stop_broker(handle)

    rows, times = [], {"sync": [], "async": [], "sync_from_start": [], "async_from_start": []}
    for i, (sync, asynchronous) in enumerate(pairs):
        target = sync["curve"][-1][2]
        for r in (sync, asynchronous):
            r["target"] = target
            r["s_to_target_after_v1"] = time_to(r["curve"], target, after_first=True)
            r["s_to_target"] = time_to(r["curve"], target)
            times[r["aggregation"]].append(r["s_to_target_after_v1"])
            times[f"{r['aggregation']}_from_start"].append(r["s_to_target"])
            rows.append((i + 1, r["aggregation"], r["versions"], target, r["s_to_target_after_v1"], r["s_to_target"],
                         r["curve"][0][1], r["median_s_per_version_after_the_first"], r["curve"][-1][2],
                         r["trained_versions"], r["load_average_before"][0]))
    medians = {k: _median(v) for k, v in times.items()}
    speedup = _ratio(medians["sync"], medians["async"])
    from_start = _ratio(medians["sync_from_start"], medians["async_from_start"])
    print(table(("repeat", "mode", "versions", "target", "s to target after v1", "s to target", "first version s",
                 "later s/version", "final acc", "trained versions per party", "load 1m"), rows))
    sync_train = {p: statistics.median([s["median_train_s"][p] for s, _ in pairs]) for p in pairs[0][0]["median_train_s"]}
    slow_ratio = round(sync_train[SLOW] / max(v for p, v in sync_train.items() if p != SLOW), 2)
    print(f"slow party's median local training / the fast parties' (sync runs): {slow_ratio}")
    print(f"median s to target after v1: sync {medians['sync']} async {medians['async']}; "
          f"async_speedup {speedup} (from start {from_start})")
    if out is not None:
        write_json(out, {**provenance(), "async_speedup": speedup, "async_speedup_from_start": from_start,
                         "slow_party_train_ratio": slow_ratio, "repeats": repeats, "sync_rounds": sync_rounds,
                         "target_accuracy": [s["target"] for s, _ in pairs], "median_time_to_target_s": medians,
                         "time_to_target_s": times, "cpu_limits": CPU_LIMITS, "source": SOURCE, "lr": LR,
                         "load_average_before": load_before, "load_average_after": _load(),
                         "machine": machine(), "runs": [r for pair in pairs for r in pair]})
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
