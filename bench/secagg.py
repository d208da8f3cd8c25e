"""Cost of secure aggregation: plain vs secure ferry.fedavg rounds on real Kafka (mutual TLS),
and the SecAgg+ sparse graph vs the full graph.

    python bench/secagg.py [--quick] [--only NAME,...] [--out PATH]

Kafka rows: the same machinery as bench/round_time.py (the splitter's planner, the local
runner's launcher forking every algorithm task as its own executor process from the zygote,
a real broker started here with mutual TLS and ACLs, or the one at FERRY_KAFKA__BOOTSTRAP with
its FERRY_KAFKA__TLS_* settings). Each pair of rows is one flow with `secure_aggregation: false`
and one with `true`, run back to back (plain first) so both see about the same machine load.
s/round: median over rounds 2..R of the gap between the aggregator's consecutive round reports
(its own progress-event timestamps), as in round_time.

Graph rows: one round of the secure-aggregation protocol (key agreement, Shamir sharing, share
encryption, masking, consistency signatures, unmasking) for 50 simulated clients in this
process, with the full graph and with the SecAgg+ sparse graph, `GRAPH_LENGTH` words each and
`GRAPH_DROPOUTS` clients dropping after sharing keys; median of `GRAPH_REPEATS` runs each.
sparse_vs_full_50p compares CPU seconds (process time: one single-threaded process, so it is
the wall time of an idle machine, and other jobs' load cannot move it); wall times are kept too.

Top-level keys (issue 10): overhead_ratio_10p_1m, secure_s_per_round_3p_digits,
secure_s_per_round_10p_digits, sparse_vs_full_50p, plus commit, clean_tree, load averages.
--quick: the 3-party digits pair (3 rounds) and the graph rows at 16 clients x 10,000 words; writes
only with --out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, provenance, table, write_json
from bench.round_time import Row, _hidden_for, run_all

OUT = RESULTS / "secagg.json"
GRAPH_PARTIES = 50
GRAPH_LENGTH = 100_000       # words per masked vector (a 100k-parameter model)
GRAPH_DROPOUTS = 5           # clients that share keys and then drop, so unmasking has pair masks to remove
GRAPH_REPEATS = 3


def pairs(quick: bool) -> list[tuple[Row, Row]]:
    """(plain, secure) rows; the 1M-parameter model is round_time's 10p_1m MLP."""
    def both(name: str, parties: int, model: str, hidden: int = 0, rounds: int = 5) -> tuple[Row, Row]:
        return tuple(Row(f"{name}_{mode}", "kafka", parties, model, hidden, rounds=rounds,
                         extra={"secure_aggregation": mode == "secure"}) for mode in ("plain", "secure"))
    if quick:
        return [both("3p_digits", 3, "logreg", rounds=3)]
    return [both("10p_1m", 10, "mlp", _hidden_for(1_000_000), rounds=6),
            both("3p_digits", 3, "logreg", rounds=8),
            both("10p_digits", 10, "logreg", rounds=8)]


def graph_rows(parties: int, length: int, dropouts: int, repeats: int) -> dict:
    from services.executor.secagg.bench import protocol_seconds

    out = {}
    for graph in ("full", "sparse"):
        runs = [protocol_seconds(parties, length, graph=graph, dropouts=dropouts) for _ in range(repeats)]
        out[graph] = {"wall_s": round(statistics.median(r.wall_s for r in runs), 4),
                      "cpu_s": round(statistics.median(r.cpu_s for r in runs), 4),
                      "degree": runs[0].degree, "threshold": runs[0].threshold,
                      "messages_per_client": runs[0].messages_per_client,
                      "wall_s_all": [round(r.wall_s, 4) for r in runs]}
    return out


def _tls_on(bootstrap: str) -> bool:
    from shared.bus.kafka import tls_from_environment

    tls = tls_from_environment("admin")
    return bool(tls.ca_file and tls.cert_file) and not tls.insecure_plaintext


def _ratio(by: dict, name: str, field_: str = "s_per_round") -> float | None:
    plain, secure = by.get(f"{name}_plain"), by.get(f"{name}_secure")
    if not plain or not secure or not plain.get(field_) or secure.get(field_) is None:
        return None
    return round(secure[field_] / plain[field_], 3)


def _cpu_overhead(by: dict, name: str) -> float | None:
    """Executor CPU seconds the secure run spent beyond the plain one, per round."""
    plain, secure = by.get(f"{name}_plain"), by.get(f"{name}_secure")
    if not plain or not secure or plain.get("executor_cpu_s") is None or secure.get("executor_cpu_s") is None:
        return None
    return round((secure["executor_cpu_s"] - plain["executor_cpu_s"]) / secure["rounds"], 3)


def _payload(results: list[dict], failed: list[dict], graph: dict, prov: dict, tls: bool, started: float,
             complete: bool) -> dict:
    by = {r["name"]: r for r in results}
    sec = lambda name: by[name]["s_per_round"] if name in by else None  # noqa: E731
    sparse_vs_full = (round(graph["sparse"]["cpu_s"] / graph["full"]["cpu_s"], 3)
                      if (graph.get("parties"), graph.get("length")) == (GRAPH_PARTIES, GRAPH_LENGTH) else None)
    return {**prov, "complete": complete,
            "overhead_ratio_10p_1m": _ratio(by, "10p_1m"),
            "secure_s_per_round_3p_digits": sec("3p_digits_secure"),
            "secure_s_per_round_10p_digits": sec("10p_digits_secure"),
            "sparse_vs_full_50p": sparse_vs_full,
            "plain_s_per_round": {r["name"]: r["s_per_round"] for r in results if r["name"].endswith("_plain")},
            "overhead_ratios": {n[:-len("_plain")]: _ratio(by, n[:-len("_plain")])
                                for n in by if n.endswith("_plain")},
            # Load-robust companions of the wall-time ratios: the executors' own CPU seconds per flow
            # (startup included, the same for both), and the secure run's extra CPU per round.
            "executor_cpu_ratios": {n[:-len("_plain")]: _ratio(by, n[:-len("_plain")], "executor_cpu_s")
                                    for n in by if n.endswith("_plain")},
            "secure_extra_cpu_s_per_round": {n[:-len("_plain")]: _cpu_overhead(by, n[:-len("_plain")])
                                             for n in by if n.endswith("_plain")},
            "kafka_tls": tls, "graph": graph,
            "load_average_at_write": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "elapsed_s": round(time.monotonic() - started, 1),
            "rows": results, "failed_rows": failed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated pair names (e.g. 10p_1m) or 'graph'")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from services.executor.threads import apply_torch_threads
    from shared.logging import configure_logging

    configure_logging("WARNING", json=True)
    apply_torch_threads(1)
    prov = provenance()   # of the code that runs, before anything can change it
    wanted = set(args.only.split(",")) if args.only else None
    rows = [r for pair in pairs(args.quick) for r in pair
            if wanted is None or r.name.rsplit("_", 1)[0] in wanted]
    out_path = Path(args.out) if args.out else (None if args.quick else OUT)
    started, failed, graph, tls = time.monotonic(), [], {}, False

    def save(results: list[dict], complete: bool = False) -> None:
        if out_path is not None:
            write_json(out_path, _payload(results, failed, graph, prov, tls, started, complete))

    if wanted is None or "graph" in wanted:
        parties, length = (16, 10_000) if args.quick else (GRAPH_PARTIES, GRAPH_LENGTH)
        print(f"-- graph: {parties} clients x {length:,} words, {GRAPH_DROPOUTS} dropouts", flush=True)
        graph.update(graph_rows(parties, length, GRAPH_DROPOUTS, 1 if args.quick else GRAPH_REPEATS),
                     parties=parties, length=length, dropouts=GRAPH_DROPOUTS)
        print(table(("graph", "wall s", "CPU s", "degree", "t", "messages/client"),
                    [(g, graph[g]["wall_s"], graph[g]["cpu_s"], graph[g]["degree"], graph[g]["threshold"],
                      graph[g]["messages_per_client"]) for g in ("full", "sparse")]), flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ferry-secagg-bench-") as tmp:
        handle = None
        bootstrap = os.environ.get("FERRY_KAFKA__BOOTSTRAP")
        if rows and bootstrap is None:
            from shared.devtools.kafka_broker import start_broker

            handle = start_broker(Path(tmp) / "kafka")
            os.environ.update(handle.client_env())   # every process presents its role's certificate
            bootstrap = handle.bootstrap
        try:
            if rows:
                tls = _tls_on(bootstrap)
                if not tls:
                    raise SystemExit("refusing to measure without TLS: set FERRY_KAFKA__TLS_* for this broker")
                results = asyncio.run(run_all(rows, bootstrap, Path(tmp), failed, save))
        finally:
            if handle is not None:
                from shared.devtools.kafka_broker import stop_broker

                stop_broker(handle)
    if results:
        print(table(("row", "params", "s/round", "train s", "executor CPU s", "rounds (s)", "acc"),
                    [(r["name"], f"{r['params']:,}", r["s_per_round"], r["train_s_per_round"], r["executor_cpu_s"],
                      " ".join(f"{g:.2f}" for g in r["s_per_round_all"]), round(r["test_accuracy"], 4))
                     for r in results]))
    payload = _payload(results, failed, graph, prov, tls, started, True)
    print("\n" + "\n".join(f"{k}: {payload[k]}" for k in ("overhead_ratio_10p_1m", "secure_s_per_round_3p_digits",
                                                          "secure_s_per_round_10p_digits", "sparse_vs_full_50p",
                                                          "overhead_ratios", "executor_cpu_ratios",
                                                          "secure_extra_cpu_s_per_round")))
    save(results, complete=True)
    if out_path is not None:
        print(f"\nwrote {out_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
