"""Vertical federated learning: PSI at scale, hetero LR vs centralized, and what encryption costs.

    python bench/vertical.py [--quick] [--parts accuracy,cost,psi] [--psi-sizes 10000,100000,1000000]
                             [--encrypted-epochs 2] [--out PATH]

Every number comes from real flows on services.embedded.EmbeddedPlatform (in-process
bus, inline executors, LMDB party stores, the ferry.psi / ferry.hetero_lr roles).

1. Accuracy (gap_pt). breast_cancer split by columns (services/executor/vertical/split.py):
   guest `hospital` with the label + features 0-14, host `lab` with features 15-29, each
   holding its own 95 % of the rows. Flow: ferry.psi -> ferry.hetero_lr -> predict, with
   the example flow's hyper-parameters (examples/flows/vertical_breast_cancer.yaml, not
   tuned on these rows). Centralized: scikit-learn's LogisticRegression (lbfgs, C=1) on the
   joined table of the same aligned rows, standardised with the same training rows, scored
   on the same held-out rows. gap_pt = vertical - centralized accuracy, in points; p is the
   exact McNemar test on the held-out rows (both models score the same rows).
   The accuracy run uses encryption: none. The Paillier protocol computes the same numbers
   up to its 2^-32 fixed point: part 2 checks that, at 2048 bits, on the same epochs.
2. Cost of privacy: the same training step encrypted (Paillier, 2048-bit keys) and plain,
   for --encrypted-epochs epochs with tol 0 (no early stop); s_per_epoch_* are the
   guest's median epoch times, bytes_per_epoch what guest and host sent per epoch;
   max_weight_diff compares the encrypted run's model parts with the plain run's.
3. PSI: guest and host with n ids each, 50 % shared, in random store order; psi_<n>_s is
   the slower party's time from handshake to aligned view (keygen, hashing to curve25519's group,
   two blindings, matching). psi_1m_s is the 1M x 1M run when --psi-sizes includes
   1000000; otherwise null (never extrapolated into that key). Each PSI row records the
   load average before and after it: both parties share this machine's cores (and,
   on the shared development machine, with everyone else's work), so a row measured
   under load is an upper bound. cpu_s is the CPU time of the whole flow in this process
   (both parties' executors run inline here), which load does not inflate.

--parts runs some parts only and keeps the other parts' numbers from the existing JSON;
`measured` says, per part, at which commit, on which tree and under which load it was taken.

--quick (under a minute on an idle 2-core machine): part 1 as above, part 2 with one
encrypted epoch on a ~40-row training subset (hospital and lab keep 30 % of the rows),
PSI at 10k. It writes JSON only with --out. The JSON is rewritten after every part
("complete": false until the last), so a run cut short keeps what it measured. Medians of one run each: the machine is
shared, so expect noise; rerun for a second sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (RESULTS, machine, mcnemar_exact_p, provenance, run_flow, step_metrics, table,  # noqa: E402
                           write_json)

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "examples" / "flows" / "vertical_breast_cancer.yaml"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _document(train_params: dict) -> dict:
    doc = yaml.safe_load(FLOW.read_text())
    doc["steps"][1]["params"].update(train_params)
    return doc


def _ok(view: dict) -> dict:
    if view["status"] != "SUCCEEDED":
        raise SystemExit(f"flow {view['flow_id']} {view['status']}: {view.get('reason')}")
    return view


def _aligned(work: Path, flow_id: str, party: str, dataset: str = "breast_cancer_v"):
    from services.executor.artifacts import ArtifactStore
    from services.executor.data import open_dataset
    from services.scheduler.adapters.launchers import party_dirs

    rows = ArtifactStore(party_dirs(work, party)["artifacts"], flow_id).load("psi-align")[0]["rows"]
    with open_dataset(party_dirs(work, party)["data"], dataset) as data:
        ids = np.array(data.reader.take("id", rows))
        x = np.array(data.reader.take("x", rows), np.float64)
        y = np.array(data.reader.take("y", rows)) if data.schema.label else None
    return ids, x, y


def accuracy_part(quick: bool) -> dict:
    from services.executor.artifacts import ArtifactStore
    from services.executor.vertical import lr
    from services.executor.vertical.split import GUEST, HOST, prepare_vertical_parties
    from services.scheduler.adapters.launchers import party_dirs
    from sklearn.linear_model import LogisticRegression

    work = Path(tempfile.mkdtemp(prefix="bench-vertical-"))
    prepare_vertical_parties(work)
    params = yaml.safe_load(FLOW.read_text())["steps"][1]["params"]
    started = time.perf_counter()
    view = _ok(asyncio.run(run_flow(work, _document({"encryption": "none", "insecure": True}), "vacc")))
    elapsed = time.perf_counter() - started
    guest = step_metrics(view, "train", "guest")
    g_ids, x_g, y = _aligned(work, "vacc", GUEST)
    h_ids, x_h, _ = _aligned(work, "vacc", HOST)
    assert (g_ids == h_ids).all(), "PSI views are not aligned"
    train, test = lr.split_positions(len(g_ids), float(params.get("test_fraction", 0.2)), int(params["seed"]))
    x = np.concatenate([x_g, x_h], axis=1)
    standardiser = lr.Standardiser.fit(x[train])
    central = LogisticRegression(C=1.0, max_iter=5000).fit(standardiser.apply(x[train]), y[train])
    central_right = central.predict(standardiser.apply(x[test])) == y[test]
    pred = ArtifactStore(party_dirs(work, GUEST)["artifacts"], "vacc").load("predictions-predict")[0]
    vertical_right = pred["label"][test] == y[test]
    assert abs(vertical_right.mean() - guest["test_accuracy"]) < 1e-9, "re-scored accuracy differs from the flow's"
    b = int((vertical_right & ~central_right).sum())
    c = int((~vertical_right & central_right).sum())
    return {"vertical_accuracy": float(vertical_right.mean()), "centralized_accuracy": float(central_right.mean()),
            "gap_pt": round(100 * float(vertical_right.mean() - central_right.mean()), 3),
            "p_mcnemar": mcnemar_exact_p(b, c), "test_rows": int(len(test)), "aligned_rows": int(len(g_ids)),
            "vertical_auc": guest.get("test_auc"), "epochs_run": guest["epochs"],
            "s_per_epoch_plain_full_run": guest["s_per_epoch"], "flow_s": round(elapsed, 2)}


def cost_part(quick: bool, epochs: int, key_bits: int) -> dict:
    from services.executor.artifacts import ArtifactStore
    from services.executor.vertical.split import GUEST, HOST, prepare_vertical_parties
    from services.scheduler.adapters.launchers import party_dirs

    out, weights = {}, {}
    for mode in ("none", "paillier"):
        work = Path(tempfile.mkdtemp(prefix=f"bench-vertical-{mode}-"))
        prepare_vertical_parties(work, keep_fraction=0.3 if quick else 0.95)
        extra = {"encryption": mode, "epochs": epochs, "tol": 0.0, "key_bits": key_bits}
        if mode == "none":
            extra["insecure"] = True
        flow_id = "vcost"  # the same in both modes: the PSI order, held-out rows and batches depend on it
        view = _ok(asyncio.run(run_flow(work, _document(extra), flow_id, timeout_s=7200)))
        guest, host = step_metrics(view, "train", "guest"), step_metrics(view, "train", "host")
        out[mode] = {"s_per_epoch": guest["s_per_epoch"], "epochs": guest["epochs"],
                     "bytes_per_epoch": (guest["bytes_sent"] + host["bytes_sent"]) / guest["epochs"],
                     "test_accuracy": guest["test_accuracy"]}
        weights[mode] = np.concatenate([
            ArtifactStore(party_dirs(work, p)["artifacts"], flow_id).load("hetero-lr-train")[0]["w"]
            for p in (GUEST, HOST)])
    out["max_weight_diff"] = float(np.abs(weights["none"] - weights["paillier"]).max())
    out["key_bits"] = key_bits
    return out


def psi_part(n: int) -> dict:
    from services.executor.data.importers import Table, put_table
    from services.executor.data.schema import Schema
    from services.executor.vertical.split import GUEST, HOST
    from services.scheduler.adapters.launchers import party_dirs

    work = Path(tempfile.mkdtemp(prefix="bench-psi-"))
    rng = np.random.default_rng(n)
    ids = {GUEST: rng.permutation(np.arange(0, n)), HOST: rng.permutation(np.arange(n // 2, n // 2 + n))}
    for party, column in ids.items():
        columns = {"id": column.astype(np.int64), "v": np.zeros(n, np.float32)}
        put_table(party_dirs(work, party)["data"], "ids", Table(columns, Schema.infer(columns, features=("v",)), {}))
    doc = {"flow": f"psi-{n}", "parties": {GUEST: {"data": "ids"}, HOST: {"data": "ids"}},
           "steps": [{"name": "align", "algorithm": "ferry.psi", "version": "2",
                      "params": {"timeout_s": 7200.0}, "parties": {"guest": GUEST, "host": [HOST]}}]}
    load_before, started, cpu = _load(), time.perf_counter(), time.process_time()
    view = _ok(asyncio.run(run_flow(work, doc, f"psi-{n}", timeout_s=7200)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    g, h = step_metrics(view, "align", "guest"), step_metrics(view, "align", "host")
    assert g["shared"] == h["shared"] == n - n // 2, (g, h)
    return {"n": n, "psi_s": round(max(g["psi_s"], h["psi_s"]), 2), "flow_s": round(wall, 2), "shared": int(g["shared"]),
            "cpu_s": round(cpu, 2), "loadavg_before": load_before, "loadavg_after": _load(), "cores": os.cpu_count()}


PARTS = ("accuracy", "cost", "psi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--psi-sizes", default=None, help="comma-separated id counts per party")
    parser.add_argument("--encrypted-epochs", type=int, default=None)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.key_bits < 2048:
        raise SystemExit("--key-bits below 2048 would report an insecure configuration's cost")
    parts = [p for p in args.parts.split(",") if p]
    if not parts or set(parts) - set(PARTS):
        raise SystemExit(f"--parts must name some of {', '.join(PARTS)}; got {args.parts!r}")
    sizes = [int(s) for s in (args.psi_sizes or ("10000" if args.quick else "10000,100000,1000000")).split(",")]
    epochs = args.encrypted_epochs or (1 if args.quick else 2)

    out = args.out or (None if args.quick else RESULTS / "vertical.json")
    payload = {"gap_pt": None, "psi_1m_s": None, "s_per_epoch_encrypted": None, "s_per_epoch_plain": None}
    if set(parts) != set(PARTS) and out is not None and out.exists():
        before = json.loads(out.read_text())  # the parts not run keep their numbers and their `measured`
        payload.update(before)
        if "measured" not in before:  # written before `measured` existed: every part is the top level's
            payload["measured"] = {p: {"commit": before.get("commit"), "clean_tree": before.get("clean_tree"),
                                       "when": before.get("machine", {}).get("when")}
                                   for p, key in (("accuracy", "accuracy"), ("cost", "cost"), ("psi", "psi"))
                                   if key in before}
    started_at = provenance()  # the code that runs is the code at start, whatever happens to the tree meanwhile
    payload.update(started_at, quick=args.quick, complete=False, machine=machine())
    measured = payload.setdefault("measured", {})

    def save(part: str | None = None, load_before: list[float] | None = None) -> None:
        # after every part: a run cut short still leaves what it measured
        if part is not None:
            measured[part] = {**started_at, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "loadavg_before": load_before, "loadavg_after": _load()}
        if out is not None:
            write_json(out, payload)

    if "accuracy" in parts:
        load = _load()
        accuracy = accuracy_part(args.quick)
        payload.update(gap_pt=accuracy["gap_pt"], accuracy=accuracy)
        save("accuracy", load)
        print(table(["", "accuracy"], [["vertical (hetero LR)", f"{accuracy['vertical_accuracy']:.4f}"],
                                       ["centralized (joined table)", f"{accuracy['centralized_accuracy']:.4f}"]]))
        print(f"gap {accuracy['gap_pt']:+.2f} pt, McNemar p = {accuracy['p_mcnemar']:.3f} "
              f"on {accuracy['test_rows']} held-out rows\n")
    if "cost" in parts:
        load = _load()
        cost = cost_part(args.quick, epochs, args.key_bits)
        payload.update(s_per_epoch_encrypted=cost["paillier"]["s_per_epoch"],
                       s_per_epoch_plain=cost["none"]["s_per_epoch"], cost=cost)
        save("cost", load)
        print(table(["mode", "s/epoch", "bytes/epoch", "epochs"],
                    [[m, f"{cost[m]['s_per_epoch']:.2f}", f"{cost[m]['bytes_per_epoch']:.0f}", cost[m]["epochs"]]
                     for m in ("none", "paillier")]))
        print(f"max |w_encrypted - w_plain| = {cost['max_weight_diff']:.2e} ({args.key_bits}-bit keys)\n")
    if "psi" in parts:
        load = _load()
        payload.update(psi=[], psi_sizes=sizes, psi_1m_s=None)
        for n in sizes:
            payload["psi"].append(psi_part(n))
            if n == 1_000_000:
                payload["psi_1m_s"] = payload["psi"][-1]["psi_s"]
            save("psi", load)
        print(table(["ids per party", "psi s", "shared", "load before", "load after"],
                    [[p["n"], p["psi_s"], p["shared"], p["loadavg_before"][0], p["loadavg_after"][0]]
                     for p in payload["psi"]]))
    payload["complete"] = all(k in measured for k in PARTS)
    save()
    if out is not None:
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
