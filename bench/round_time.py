"""Seconds per round, bytes per round and memory of real ferry.fedavg runs.

    python bench/round_time.py [--quick] [--only NAME,...] [--out PATH]

Each row is one flow: the splitter's planner turns a flow document into the
step's algorithm tasks, and the local runner's launcher starts every task as
its own executor process (forked from the runner's zygote, as `ferry
scheduler` does) on a real Kafka broker, started here with
shared.devtools.kafka_broker (or the one at FERRY_KAFKA__BOOTSTRAP). The
"embedded" rows run the same flow on the EmbeddedPlatform (one process,
in-process bus). The roles are the platform's own: TrainingAggregator,
TrainingClient, LMDB party stores, checkpoints, progress events.

Measured:
  s/round       median over rounds 2..R of the gap between the aggregator's
                consecutive round reports (timestamps of its own progress events)
  train s       median over rounds of the clients' own local-training time (max over clients)
  fetched/round bytes the executors' round consumers were handed, summed over all
                executors, median over rounds 2..R (each executor logs its MeteredBus
                counters with every round report); produced/round likewise
  ideal         N x model bytes (clients fetch the model) + N x update bytes (the
                aggregator fetches the updates); fetch ratio = fetched / ideal
  peak RSS/PSS  the largest sum over all executor processes and the zygote (the broker's JVM
                excluded): RSS from /proc/PID/statm every 0.5 s; PSS and USS from
                /proc/PID/smaps_rollup whenever the RSS sum reaches a new high (1 % above the
                last one read there) and every 5 s. smaps_rollup walks a process's page tables
                (about 20 ms of CPU per torch process): read every 0.5 s for 12 processes, the
                sampler itself took half a core from the 10-party rows it measured.

--quick: digits x 3 parties on Kafka and embedded, 3 rounds (about a minute on an idle machine);
writes only with --out. Full: bench/results/round_time.json (the grid in grid(): digits, 1M and 10M
parameters x 3 and 10 parties, digits and 1M x 30 parties, a 10-party row without the zygote,
compression rows on digits and synthetic data, and the issue's realistic 7.3M-parameter job).
async_speedup is quoted from bench/results/fedbuff.json (bench/fedbuff.py), with its commit.

Broker warm-up: before the first Kafka row, a throwaway digits run (WARMUP: 3 parties, 20 rounds)
brings the broker's JVM past its JIT warm-up; on a freshly started broker the first ~150 requests
were acknowledged in ~27 ms against ~5-7 ms after ~300 (same load), and a short first row ran
entirely inside that window. Its numbers are written under "broker_warmup", never as a result;
--no-warmup skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, federated_steps, machine, median, prepare_parties, table, write_json

OUT = RESULTS / "round_time.json"
DIGITS = "sklearn:digits"           # 1797 rows, 64 features, 10 classes
DIGITS_SHAPE = (64, 10)
SYNTHETIC = "synthetic:n_rows=5000,n_features=20,n_classes=10,seed=3,separation=0.6"
SYNTHETIC_SHAPE = (20, 10)
# The realistic job: 40,000 training rows (of 50,000; 20 % held out), 100 features, 10 classes.
REALISTIC = "synthetic:n_rows=50000,n_features=100,n_classes=10,seed=5,separation=0.6"
COMPRESSION = (("none", {}), ("fp16", {}), ("int8", {}), ("int4", {}), ("topk", {"topk_fraction": 0.1}))


@dataclass(frozen=True)
class Row:
    name: str
    mode: str                 # kafka | embedded
    parties: int
    model: str                # logreg | mlp
    hidden: int = 0
    rounds: int = 5
    source: str = DIGITS
    shape: tuple[int, int] = DIGITS_SHAPE
    extra: dict = field(default_factory=dict)
    zygote: bool = True       # kafka rows: fork executors from the runner's zygote, else fresh interpreters
    test_fraction: float = 0.2

    @property
    def params(self) -> int:
        f, c = self.shape
        if self.model == "logreg":
            return f * c + c
        return f * self.hidden + self.hidden + self.hidden * c + c


def _hidden_for(params: int, shape=DIGITS_SHAPE) -> int:
    f, c = shape
    return round((params - c) / (f + 1 + c))


# A throwaway row that warms the broker's JVM before the first measured Kafka row (see above).
WARMUP = Row("broker_warmup", "kafka", 3, "logreg", rounds=20)


def grid(quick: bool) -> list[Row]:
    h1m, h10m = _hidden_for(1_000_000), _hidden_for(10_000_000)
    if quick:
        return [Row("3p_digits_kafka", "kafka", 3, "logreg", rounds=3),
                Row("3p_digits_embedded", "embedded", 3, "logreg", rounds=3)]
    # Headline rows first: results are saved after every row, so a run cut short keeps them.
    rows = [Row("3p_digits_kafka", "kafka", 3, "logreg", rounds=8),
            Row("10p_1m_kafka", "kafka", 10, "mlp", h1m, rounds=5),
            Row("10p_10m_kafka", "kafka", 10, "mlp", h10m, rounds=3)]
    rows += [Row(f"10p_digits_mlp_{method}", "kafka", 10, "mlp", 256, rounds=8,
                 extra={"compression": method, **extra}) for method, extra in COMPRESSION]
    rows += [Row("3p_7m_synthetic", "kafka", 3, "mlp", 65536, rounds=2, source=REALISTIC, shape=(100, 10)),
             Row("10p_digits_kafka", "kafka", 10, "logreg", rounds=8),
             Row("10p_digits_kafka_no_zygote", "kafka", 10, "logreg", rounds=8, zygote=False),
             Row("3p_1m_kafka", "kafka", 3, "mlp", h1m, rounds=5),
             Row("3p_10m_kafka", "kafka", 3, "mlp", h10m, rounds=3),
             Row("3p_digits_embedded", "embedded", 3, "logreg", rounds=8),
             Row("10p_1m_embedded", "embedded", 10, "mlp", h1m, rounds=5)]
    rows += [Row(f"10p_synthetic_mlp_{method}", "kafka", 10, "mlp", 256, rounds=8, source=SYNTHETIC,
                 shape=SYNTHETIC_SHAPE, extra={"compression": method, **extra}) for method, extra in COMPRESSION]
    # 30 parties: 31 executor processes on 2 cores; the machine does not allow 10M parameters x 30.
    rows += [Row("30p_digits_kafka", "kafka", 30, "logreg", rounds=5),
             Row("30p_1m_kafka", "kafka", 30, "mlp", h1m, rounds=3)]
    return rows


def _document(row: Row, clients: list[str]) -> dict:
    hp = {"model": row.model, "rounds": row.rounds, "local_epochs": 1, "batch_size": 32, "lr": 0.05,
          "optimizer": "sgd", "seed": 11}
    if row.model == "mlp":
        hp["hidden"] = row.hidden
    step = federated_steps("train", clients, "hub", hp)
    step["params"].update(row.extra)
    return {"flow": f"round-time-{row.name}", "parties": {**{c: {"data": "bench"} for c in clients}, "hub": {}},
            "steps": [step]}


# ------------------------------------------------------------------------------------ memory


def _mem_kb(pid: int) -> tuple[int, int, int]:
    """Resident, proportional and unique (private) memory of one process, in KiB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split()[:2] for line in f if line[:1].isupper())
        return (int(fields["Rss:"]), int(fields["Pss:"]),
                int(fields["Private_Clean:"]) + int(fields["Private_Dirty:"]))
    except (OSError, KeyError, ValueError):
        return 0, 0, 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _rss_kb(pid: int) -> int:
    """Resident memory of one process, in KiB, from counters the kernel keeps (cheap)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class MemorySampler:
    """Peak memory of a set of processes. RSS is cheap to read and read every `every_s`; the
    page-table walk behind PSS is read at each new RSS high and every `pss_every_s`."""

    def __init__(self, pids_fn, every_s: float = 0.5, executors_fn=None, pss_every_s: float = 5.0):
        self._pids_fn, self._every_s, self._pss_every_s = pids_fn, every_s, pss_every_s
        self._executors_fn = executors_fn or pids_fn
        self.peak_rss_kb = self.peak_pss_kb = 0
        self.one_executor_kb = (0, 0, 0)   # the largest single executor's (RSS, PSS, USS) peak
        self.pss_reads = 0
        self._cpu: dict[int, float] = {}   # executor pid -> CPU seconds at its last sample
        self._rss_at_pss_read = 0
        self._last_pss_read = float("-inf")

    @property
    def executor_cpu_s(self) -> float:
        """CPU seconds the executors used, as last sampled: short by at most one sampling
        interval's worth per process (the last stretch before it exits). Unlike wall time, it
        barely moves with other jobs' load on the machine."""
        return sum(self._cpu.values())

    def _read_pss(self, pids: list[int], executors: set[int]) -> None:
        rss = pss = 0
        for pid in pids:
            r, p, u = _mem_kb(pid)
            rss, pss = rss + r, pss + p
            if pid in executors:
                self.one_executor_kb = tuple(max(a, b) for a, b in zip(self.one_executor_kb, (r, p, u)))
        self.peak_rss_kb, self.peak_pss_kb = max(self.peak_rss_kb, rss), max(self.peak_pss_kb, pss)
        self.pss_reads += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pids, executors = list(self._pids_fn()), set(self._executors_fn())
            rss = sum(_rss_kb(pid) for pid in pids)
            for pid in executors:
                self._cpu[pid] = max(self._cpu.get(pid, 0.0), _cpu_s(pid))
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            now = time.monotonic()
            if rss > self._rss_at_pss_read * 1.01 or now - self._last_pss_read >= self._pss_every_s:
                self._read_pss(pids, executors)
                self._rss_at_pss_read, self._last_pss_read = max(self._rss_at_pss_read, rss), now
            try:
                await asyncio.wait_for(stop.wait(), self._every_s)
            except TimeoutError:
                pass


# ------------------------------------------------------------------------------------ reading results


def _round_times(progress: list[tuple[int, Any]], task_id: str) -> dict[str, list[float]]:
    """Per round: the aggregator's report time (s) and the clients' train_s, from ferry.progress."""
    agg: dict[int, float] = {}
    train: dict[int, list[float]] = {}
    for ts, p in progress:
        if p.task_id != task_id or not p.round or p.stage != "training":
            continue
        if p.algo_task_id.endswith(".aggregator"):
            agg.setdefault(p.round, ts / 1000.0)
        elif "train_s" in p.metrics:
            train.setdefault(p.round, []).append(float(p.metrics["train_s"]))
    rounds = sorted(agg)
    gaps = [agg[r] - agg[r - 1] for r in rounds if r - 1 in agg]
    return {"gaps": gaps, "train": [max(train[r]) for r in sorted(train) if r > 1 and r in agg]}


def _traffic(log_paths: dict[Path, bool]) -> dict[str, list[int]]:
    """Per round (2..R), summed over executors from their traffic logs: bytes fetched, bytes produced,
    and bytes the clients produced (their updates). log_paths: log -> is a client."""
    sums: dict[str, dict[int, int]] = {"fetched": {}, "produced": {}, "updates": {}}
    for path, is_client in log_paths.items():
        seen: dict[int, tuple[int, int]] = {}
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "executor.traffic" and rec.get("stage") == "training":
                seen.setdefault(int(rec["round"]), (int(rec["rounds_fetched_bytes"]), int(rec["rounds_produced_bytes"])))
        for r in sorted(seen):
            if r - 1 in seen:
                f, p = seen[r][0] - seen[r - 1][0], seen[r][1] - seen[r - 1][1]
                sums["fetched"][r] = sums["fetched"].get(r, 0) + f
                sums["produced"][r] = sums["produced"].get(r, 0) + p
                if is_client:
                    sums["updates"][r] = sums["updates"].get(r, 0) + p
    return {k: [v[r] for r in sorted(v)] for k, v in sums.items()}


async def _progress_records(bus) -> list[tuple[int, Any]]:
    from shared import topics
    from shared.events import ExecutorProgress
    from shared.wire import codec

    out = []
    for record in await bus.read_all(topics.PROGRESS.name):
        env = codec.decode(record.value)
        if isinstance(env.event, ExecutorProgress):
            out.append((env.timestamp_ms, env.event))
    return out


# ------------------------------------------------------------------------------------ running


def _plan(row: Row, clients: list[str], flow_id: str):
    from services.splitter.core.flow_document import parse_flow_document
    from services.splitter.core.planning import plan_flow
    from shared.algorithms import AlgorithmRegistry

    flow = parse_flow_document(_document(row, clients), default_flow_id=flow_id)
    [task] = plan_flow(flow, AlgorithmRegistry.from_entry_points(), 0)
    return flow, task


async def run_kafka(row: Row, bootstrap: str, zygote, work: Path, clients: list[str]) -> dict:
    from services.executor.threads import thread_env
    from services.scheduler.adapters.launchers import LocalProcessLauncher
    from shared import topics
    from shared.bus.kafka import KafkaBus, KafkaSettings

    flow, task = _plan(row, clients, f"rt-{row.name.replace('_', '-')}-{uuid.uuid4().hex[:6]}")
    bus = KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="round-time"))
    await bus.start()
    await bus.ensure_topics(topics.CATALOGUE)
    env = {"FERRY_KAFKA__BOOTSTRAP": bootstrap, "FERRY_BUS__KIND": "kafka", "FERRY_LOG__LEVEL": "INFO"}
    zygote = zygote if row.zygote else None
    launcher = LocalProcessLauncher(work, {**env, **thread_env(1)}, zygote)
    handles = {s.algo_task_id: await launcher.launch(s, s.algo_task_id) for s in task.algorithm_tasks}
    executors = [h._process.pid for h in handles.values()]
    pids = executors + ([zygote._server.pid] if zygote is not None else [])
    stop = asyncio.Event()
    sampler = MemorySampler(lambda: pids, executors_fn=lambda: executors)
    sampling = asyncio.create_task(sampler.run(stop))
    started = time.monotonic()
    codes = await asyncio.gather(*(h.wait() for h in handles.values()))
    wall = time.monotonic() - started
    stop.set()
    await sampling
    if any(codes):
        bad = {a: (c, handles[a].diagnostics()[-600:]) for a, c in zip(handles, codes) if c}
        raise RuntimeError(f"{row.name}: executors failed: {bad}")
    progress = await _progress_records(bus)
    await bus.stop()
    traffic = _traffic({work / "logs" / f"{a}.log": a.endswith(".client") for a in handles})
    return {"wall_s": wall, "peak_rss_gb": sampler.peak_rss_kb / 2**20, "peak_pss_gb": sampler.peak_pss_kb / 2**20,
            "pss_reads": sampler.pss_reads,
            "one_executor_mb": dict(zip(("rss", "pss", "uss"), (round(v / 1024, 1) for v in sampler.one_executor_kb))),
            "executor_cpu_s": sampler.executor_cpu_s, **traffic, **_round_times(progress, task.task_id),
            "accuracy": _final_accuracy(progress, task.task_id)}


def _final_accuracy(progress, task_id: str) -> float:
    for _, p in progress:
        if p.task_id == task_id and p.stage == "finished" and p.algo_task_id.endswith(".aggregator"):
            return float(p.metrics.get("test_accuracy", float("nan")))
    return float("nan")


async def run_embedded(row: Row, work: Path, clients: list[str]) -> dict:
    from services.embedded import EmbeddedPlatform

    flow, task = _plan(row, clients, f"rt-{row.name.replace('_', '-')}-{uuid.uuid4().hex[:6]}")
    stop = asyncio.Event()
    sampler = MemorySampler(lambda: [os.getpid()])
    sampling = asyncio.create_task(sampler.run(stop))
    started = time.monotonic()
    async with EmbeddedPlatform(work, torch_threads=1) as platform:
        await platform.submit(flow)
        view = await platform.wait_for(flow.flow_id, timeout_s=1800)
        progress = await _progress_records(platform.bus)
    wall = time.monotonic() - started
    stop.set()
    await sampling
    if view["status"] != "SUCCEEDED":
        raise RuntimeError(f"{row.name}: {view['status']}")
    return {"wall_s": wall, "peak_rss_gb": sampler.peak_rss_kb / 2**20, "peak_pss_gb": sampler.peak_pss_kb / 2**20,
            "pss_reads": sampler.pss_reads,
            "fetched": [], "produced": [], "updates": [], **_round_times(progress, task.task_id),
            "accuracy": _final_accuracy(progress, task.task_id)}


async def run_row(row: Row, bootstrap: str | None, zygote, root: Path) -> dict[str, Any]:
    work = root / row.name
    clients = [f"p{i:02d}" for i in range(row.parties)]
    prepare_parties(work, clients, "bench", row.source, seed=7, test_fraction=row.test_fraction)
    if row.mode == "kafka":
        got = await run_kafka(row, bootstrap, zygote, work, clients)
    else:
        got = await run_embedded(row, work, clients)
    model_bytes = 4 * row.params
    ideal = 2 * row.parties * model_bytes
    fetched = median(got["fetched"]) if got["fetched"] else None
    return {"name": row.name, "mode": row.mode, "parties": row.parties, "model": row.model, "hidden": row.hidden,
            "params": row.params, "rounds": row.rounds, "source": row.source, **row.extra,
            "s_per_round": round(median(got["gaps"]), 4),
            "s_per_round_all": [round(g, 4) for g in got["gaps"]],
            "train_s_per_round": round(median(got["train"]), 4) if got["train"] else None,
            "fetched_bytes_per_round": fetched, "produced_bytes_per_round":
                median(got["produced"]) if got["produced"] else None,
            "update_bytes_per_round": median(got["updates"]) if got["updates"] else None,
            "ideal_fetched_bytes_per_round": ideal,
            "fetch_ratio": round(fetched / ideal, 4) if fetched else None,
            "peak_rss_gb": round(got["peak_rss_gb"], 3), "peak_pss_gb": round(got["peak_pss_gb"], 3),
            "pss_reads": got["pss_reads"],
            "one_executor_mb": got.get("one_executor_mb"), "zygote": row.zygote if row.mode == "kafka" else None,
            "wall_s": round(got["wall_s"], 2), "test_accuracy": got["accuracy"],
            "executor_cpu_s": round(got["executor_cpu_s"], 2) if "executor_cpu_s" in got else None}


def _overhead_share(row: dict | None) -> float | None:
    if not row or not row["train_s_per_round"]:
        return None
    return round(max(0.0, row["s_per_round"] - row["train_s_per_round"]) / row["s_per_round"], 4)


def _compression_table(by: dict[str, dict], dataset: str) -> dict[str, dict]:
    """Per method: update bytes reduction and accuracy cost (points) against the uncompressed run."""
    base = by.get(f"10p_{dataset}_mlp_none")
    out = {}
    for method, _ in COMPRESSION[1:]:
        row = by.get(f"10p_{dataset}_mlp_{method}")
        if base is None or row is None or not row["update_bytes_per_round"]:
            continue
        out[method] = {"update_bytes_reduction": round(base["update_bytes_per_round"] / row["update_bytes_per_round"], 2),
                       "fetched_bytes_reduction": round(base["fetched_bytes_per_round"] / row["fetched_bytes_per_round"], 2),
                       "accuracy_cost_pt": round(100 * (base["test_accuracy"] - row["test_accuracy"]), 2)}
    return out


def _compression_keys(by: dict[str, dict]) -> dict:
    tables = {d: _compression_table(by, d) for d in ("digits", "synthetic")}
    within = {m: v for m, v in tables["digits"].items() if v["accuracy_cost_pt"] <= 0.5}
    best = max(within, key=lambda m: within[m]["update_bytes_reduction"], default=None)
    return {"compression_bytes_reduction": within[best]["update_bytes_reduction"] if best else None,
            "compression_accuracy_cost_pt": within[best]["accuracy_cost_pt"] if best else None,
            "compression_best_method": best,
            "compression_bytes_measure": "update bytes per round (clients -> aggregator); the global model "
                                         "still travels uncompressed (fetched_bytes_reduction per method)",
            "compression": tables}


def _async_keys() -> dict:
    """FedBuff's row comes from bench/fedbuff.py, which runs the whole platform (monitor included:
    it reads accuracy per version from the monitor's history), quoted with that run's commit."""
    path = RESULTS / "fedbuff.json"
    if not path.is_file():
        return {"async_speedup": None, "async_source": "bench/results/fedbuff.json is missing: run bench/fedbuff.py"}
    got = json.loads(path.read_text())
    return {"async_speedup": got.get("async_speedup"),
            "async_source": {"file": "bench/results/fedbuff.json", "commit": got.get("commit"),
                             "clean_tree": got.get("clean_tree"),
                             "slow_party_train_ratio": got.get("slow_party_train_ratio"),
                             "async_speedup_from_start": got.get("async_speedup_from_start")}}


def _key(rows: dict[str, dict], name: str, field_: str):
    return rows[name][field_] if name in rows else None


async def run_all(rows: list[Row], bootstrap: str | None, root: Path, failed: list[dict],
                  on_row=lambda results: None, warmup: dict | None = None) -> list[dict]:
    """warmup: a dict to fill with the throwaway WARMUP row's result (run first when any row is
    on Kafka); None: no warm-up."""
    from services.executor.threads import thread_env
    from services.scheduler.adapters.zygote import Zygote

    zygote = Zygote(env={**thread_env(1), "FERRY_KAFKA__BOOTSTRAP": bootstrap or ""})
    out: list[dict] = []
    try:
        if warmup is not None and any(r.mode == "kafka" for r in rows):
            print(f"-- {WARMUP.name}: throwaway {WARMUP.parties}-party digits run ({WARMUP.rounds} rounds) "
                  f"to warm the broker's JVM; not a result", flush=True)
            got = await run_row(WARMUP, bootstrap, zygote, root)
            warmup.update({"row": WARMUP.name, "parties": WARMUP.parties, "rounds": WARMUP.rounds,
                           "s_per_round": got["s_per_round"], "s_per_round_all": got["s_per_round_all"],
                           "note": "throwaway run before the first measured Kafka row, so that no row "
                                   "measures the broker's JIT warm-up; not a result"})
            print(f"   {got['s_per_round']} s/round (rounds: {got['s_per_round_all']})", flush=True)
        for row in rows:
            print(f"-- {row.name}: {row.parties} parties, {row.params:,} parameters, {row.rounds} rounds, "
                  f"{row.mode}", flush=True)
            try:
                result = await run_row(row, bootstrap, zygote, root)
            except Exception as exc:  # one broken row must not lose the others; it is reported as failed
                print(f"   FAILED: {exc!r}"[:2000], flush=True)
                failed.append({"name": row.name, "error": repr(exc)[:2000]})
                continue
            print(f"   {result['s_per_round']} s/round, fetch ratio {result['fetch_ratio']}, "
                  f"peak PSS {result['peak_pss_gb']} GB", flush=True)
            out.append(result)
            on_row(out)
    finally:
        await zygote.close()
    return out


def _payload(results: list[dict], failed: list[dict], host: dict, started: float, complete: bool,
             warmup: dict | None = None) -> dict:
    by = {r["name"]: r for r in results}
    return {
        **{k: v for k, v in host.items() if k in ("commit", "clean_tree")},
        "complete": complete,
        "fetch_ratio_10p_10m": _key(by, "10p_10m_kafka", "fetch_ratio"),
        "s_per_round_10p_10m": _key(by, "10p_10m_kafka", "s_per_round"),
        "s_per_round_10p_1m": _key(by, "10p_1m_kafka", "s_per_round"),
        "s_per_round_3p_digits_kafka": _key(by, "3p_digits_kafka", "s_per_round"),
        "pss_gb_10p_kafka": max((r["peak_pss_gb"] for r in results
                                 if r["mode"] == "kafka" and r["parties"] == 10 and r["zygote"]), default=None),
        "one_executor_mb": _key(by, "3p_1m_kafka", "one_executor_mb"),
        **_compression_keys(by),
        "s_per_round_3p_7m_synthetic": _key(by, "3p_7m_synthetic", "s_per_round"),
        "overhead_share_3p_7m_synthetic": _overhead_share(by.get("3p_7m_synthetic")),
        **_async_keys(),
        "load_average_at_write": [round(x, 1) for x in os.getloadavg()],
        "machine": host, "elapsed_s": round(time.monotonic() - started, 1),
        "broker_warmup": warmup or None, "rows": results, "failed_rows": failed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated row names")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-warmup", action="store_true", help="skip the throwaway broker warm-up row")
    args = ap.parse_args()
    from services.executor.threads import apply_torch_threads
    from shared.logging import configure_logging

    configure_logging("WARNING", json=True)
    apply_torch_threads(1)
    rows = grid(args.quick)
    host = machine()  # commit and clean_tree of the code that runs, before anything else can change
    if args.only:
        wanted = set(args.only.split(","))
        rows = [r for r in rows if r.name in wanted]
    out_path = Path(args.out) if args.out else (None if args.quick else OUT)
    handle = None
    failed: list[dict] = []
    warmup: dict | None = None if args.no_warmup else {}
    started = time.monotonic()

    def save(results: list[dict], complete: bool = False) -> None:
        # Written after every row, so an interrupted run keeps what it measured ("complete": false).
        if out_path is not None:
            write_json(out_path, _payload(results, failed, host, started, complete, warmup))

    with tempfile.TemporaryDirectory(prefix="ferry-round-time-") as tmp:
        bootstrap = os.environ.get("FERRY_KAFKA__BOOTSTRAP") or os.environ.get("FERRY_KAFKA_BOOTSTRAP")
        if bootstrap is None and any(r.mode == "kafka" for r in rows):
            from shared.devtools.kafka_broker import start_broker

            handle = start_broker(Path(tmp) / "kafka")
            bootstrap = handle.bootstrap
            os.environ.update(handle.client_env())  # mutual TLS: each process presents its role's certificate
        try:
            results = asyncio.run(run_all(rows, bootstrap, Path(tmp), failed, save, warmup))
        finally:
            if handle is not None:
                from shared.devtools.kafka_broker import stop_broker

                stop_broker(handle)
    headers = ("row", "params", "s/round", "train s", "fetched MB/rnd", "ideal MB", "ratio", "RSS GB", "PSS GB", "acc")
    print(table(headers, [(r["name"], f"{r['params']:,}", r["s_per_round"], r["train_s_per_round"],
                           None if r["fetched_bytes_per_round"] is None else round(r["fetched_bytes_per_round"] / 1e6, 1),
                           round(r["ideal_fetched_bytes_per_round"] / 1e6, 1), r["fetch_ratio"], r["peak_rss_gb"],
                           r["peak_pss_gb"], None if r["test_accuracy"] != r["test_accuracy"] else round(r["test_accuracy"], 4))
                          for r in results]))
    save(results, complete=True)
    if out_path is not None:
        print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
