"""Per-round platform overhead of federated training on a real Kafka broker.

    python bench/round_overhead.py [--quick] [--rounds R] [--modes channel,roles] [--out PATH]

overhead = round wall time - local training time, for 3 and 10 parties and models of
1M and 10M float32 parameters (4 MB and 40 MB per copy). Everything runs in one process
(asyncio tasks), but every party has its own KafkaBus (own producer, own tail consumer)
on a real broker: started here with shared.devtools.kafka_broker in a temporary folder,
or the one at FERRY_KAFKA_BOOTSTRAP / FERRY_KAFKA__BOOTSTRAP when set. Round messages take
the real path: services.executor.transport.RoundChannel (tensors -> protobuf -> 900 KB
chunks with SHA-256 -> envelopes -> Kafka, acks=all -> each party's tail consumer ->
decode -> reassemble -> verify -> tensors).

Two modes:
  channel  an aggregator and N clients drive RoundChannel directly. "Training" is one
           vectorised numpy step (w + delta, timed); the aggregator runs the real FedAvg
           strategy (check_updates + float64 weighted average). What remains is the
           transport's and the aggregation's cost.
  roles    the real ferry.fedavg roles (TrainingAggregator, TrainingClient) in
           ExecutorContexts with LMDB party stores, checkpoint and artifact stores: an MLP
           (1000 inputs, one hidden layer sized to the parameter count, 10 classes), one
           SGD step on 16 rows per client and round. Adds what a real round also pays:
           model build / set_weights / get_weights, the per-round checkpoints (aggregator
           AND every client, fsync'd), progress events.

Per round: wall (aggregator: announce -> all updates -> aggregated [-> checkpointed]),
train (local training, summed over the clients: in this one-process harness they share
one event loop, so all of it is on the critical path), overhead = wall - train, and the
bytes the broker took in (produced record values) and handed out (fetched by all tail
consumers). Medians over the measured rounds (all rounds; round 1 includes no join).

--quick: 1M parameters, 3 parties, 2 rounds, channel + roles. Full: both sizes, 3 and 10
parties, 3 rounds (2 for 10M x 10 parties). Results: bench/results/round_overhead.json
(full run; --quick writes only with --out).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine, median, table, write_json

OUT = RESULTS / "round_overhead.json"
N_FEATURES, N_CLASSES, ROWS_PER_CLIENT = 1000, 10, 16


# ------------------------------------------------------------------------- byte counting


@dataclass
class Traffic:
    produced_bytes: int = 0
    produced_records: int = 0
    fetched_bytes: int = 0
    fetched_records: int = 0

    def snapshot(self) -> tuple[int, int, int, int]:
        return (self.produced_bytes, self.produced_records, self.fetched_bytes, self.fetched_records)


class CountingConsumer:
    def __init__(self, inner, traffic: Traffic):
        self._inner, self._traffic = inner, traffic

    async def poll(self, timeout_s: float, max_records: int = 500):
        records = await self._inner.poll(timeout_s, max_records)
        self._traffic.fetched_records += len(records)
        self._traffic.fetched_bytes += sum(len(r.value) for r in records)
        return records

    async def stop(self) -> None:
        await self._inner.stop()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class CountingBus:
    """A Bus that counts what goes through it (record values only; Kafka framing excluded)."""

    def __init__(self, inner, traffic: Traffic):
        self._inner, self._traffic = inner, traffic

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def ensure_topics(self, specs) -> None:
        await self._inner.ensure_topics(specs)

    async def send(self, topic, key, value) -> None:
        self._traffic.produced_records += 1
        self._traffic.produced_bytes += len(value)
        await self._inner.send(topic, key, value)

    async def send_batch(self, items) -> None:
        self._traffic.produced_records += len(items)
        self._traffic.produced_bytes += sum(len(v) for _, _, v in items)
        await self._inner.send_batch(items)

    async def tail(self, topic, key):
        return CountingConsumer(await self._inner.tail(topic, key), self._traffic)

    def __getattr__(self, name):
        return getattr(self._inner, name)


# ------------------------------------------------------------------------------ helpers


def _task(task_id: str, party: str, role: str, clients: list[str], params: dict[str, Any] | None = None,
          data_ref: str = ""):
    from shared.events import AlgorithmTaskSpec, Peer

    peers = tuple(Peer(c, "client") for c in clients) + (Peer("coordinator", "aggregator"),)
    return AlgorithmTaskSpec(algo_task_id=f"{task_id}.{party}.{role}", task_id=task_id, flow_id="bench-overhead",
                             step="train", algorithm="ferry.fedavg", version="1", params=dict(params or {}),
                             party=party, role=role, peers=peers, data_ref=data_ref)


async def _buses(bootstrap: str, parties: list[str], traffic: Traffic) -> dict[str, CountingBus]:
    from shared import topics
    from shared.bus.kafka import KafkaBus, KafkaSettings

    buses = {p: CountingBus(KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id=f"bench-{p}")), traffic)
             for p in parties}
    for bus in buses.values():
        await bus.start()
    await next(iter(buses.values())).ensure_topics([topics.ROUNDS, topics.PROGRESS])
    return buses


def _hidden_for(n_params: int) -> int:
    # MLP 1000 -> h -> 10: h * (1000 + 1 + 10) + 10 parameters.
    return max(1, round((n_params - N_CLASSES) / (N_FEATURES + 1 + N_CLASSES)))


def _synthetic_weights(n_params: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = _hidden_for(n_params)
    shapes = {"0.weight": (h, N_FEATURES), "0.bias": (h,), "2.weight": (N_CLASSES, h), "2.bias": (N_CLASSES,)}
    return {k: rng.standard_normal(s, dtype=np.float32) * np.float32(0.01) for k, s in shapes.items()}


def _count(weights) -> int:
    return int(sum(np.asarray(v).size for v in weights.values()))


@dataclass
class RoundStats:
    wall_s: float
    train_s: float            # summed over clients
    train_max_s: float
    aggregate_s: float = float("nan")
    announce_s: float = float("nan")   # round start -> the last client holds the whole announce
    produced_bytes: int = 0
    produced_records: int = 0
    fetched_bytes: int = 0
    fetched_records: int = 0
    extra: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------- channel mode


async def run_channel(bootstrap: str, n_clients: int, n_params: int, rounds: int) -> dict[str, Any]:
    from services.executor.ml.strategies import make_strategy
    from services.executor.transport import RoundChannel, from_tensors
    from shared.clock import SystemClock
    from shared.events import RoundKind
    from shared.messaging import EventPublisher

    clients = [f"c{i:02d}" for i in range(n_clients)]
    task_id = f"overhead-{uuid.uuid4().hex[:10]}"
    traffic = Traffic()
    buses = await _buses(bootstrap, ["coordinator", *clients], traffic)
    clock = SystemClock()
    channels = {}
    from services.executor.federation.identity import in_memory_federation

    keys = in_memory_federation(buses)  # signed and verified like every executor's round traffic
    for party, bus in buses.items():
        role = "aggregator" if party == "coordinator" else "client"
        publisher = EventPublisher(bus, f"executor/{party}", clock)
        channels[party] = await RoundChannel(bus, _task(task_id, party, role, clients), publisher,
                                             trust=keys[party]).open()

    received_at: dict[tuple[int, str], float] = {}
    train_s: dict[tuple[int, str], float] = {}

    async def client(i: int, name: str) -> None:
        ch = channels[name]
        while True:
            message = await ch.receive(0.5)
            if message is None or message.sender != "coordinator":
                continue
            if message.kind == RoundKind.FINAL:
                return
            if message.kind != RoundKind.ANNOUNCE:
                continue
            received_at[(message.round, name)] = time.perf_counter()
            t0 = time.perf_counter()
            global_w = from_tensors(message.tensors)
            delta = np.float32(1e-3 * (i + 1))
            update = {k: v + delta for k, v in global_w.items()}  # the "training"
            train_s[(message.round, name)] = time.perf_counter() - t0
            await ch.send(ch.message(RoundKind.UPDATE, message.round, recipient="coordinator", arrays=update,
                                     num_examples=100 + i))

    async def aggregator() -> list[RoundStats]:
        ch = channels["coordinator"]
        strategy = make_strategy("fedavg")
        global_w = _synthetic_weights(n_params, 0)
        state = strategy.init_state(global_w)
        stats = []
        for r in range(1, rounds + 1):
            before = traffic.snapshot()
            t0 = time.perf_counter()
            await ch.send(ch.message(RoundKind.ANNOUNCE, r, arrays=global_w))
            sent = time.perf_counter()
            updates: dict[str, tuple] = {}
            while len(updates) < n_clients:
                message = await ch.receive(5.0)
                if message is None:
                    continue
                if message.kind == RoundKind.UPDATE and message.round == r:
                    updates[message.sender] = (from_tensors(message.tensors), message.num_examples)
            got = time.perf_counter()
            a0 = time.perf_counter()
            ordered = [updates[c] for c in sorted(updates)]
            state, new_w = strategy.aggregate(state, global_w, ordered)
            aggregate_s = time.perf_counter() - a0
            # FedAvg of (g + d_i) is g + weighted mean of d_i: check the transport lost nothing.
            total = sum(100 + i for i in range(n_clients))
            shift = sum((100 + i) * 1e-3 * (i + 1) for i in range(n_clients)) / total
            probe = next(iter(global_w))
            if not np.allclose(new_w[probe], global_w[probe] + shift, atol=1e-5):
                raise AssertionError(f"round {r}: aggregated weights are not the FedAvg of the updates")
            global_w = new_w
            wall = time.perf_counter() - t0
            after = traffic.snapshot()
            trains = [train_s[(r, c)] for c in clients]
            stats.append(RoundStats(
                wall, sum(trains), max(trains), aggregate_s,
                max(received_at[(r, c)] for c in clients) - t0,
                after[0] - before[0], after[1] - before[1], after[2] - before[2], after[3] - before[3],
                {"announce_send_s": sent - t0, "collect_s": got - sent}))
            del updates, ordered
        await ch.send(ch.message(RoundKind.FINAL, rounds))  # no arrays: just "stop"
        return stats

    try:
        tasks = [asyncio.create_task(client(i, c)) for i, c in enumerate(clients)]
        stats = await aggregator()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    finally:
        for ch in channels.values():
            await ch.close()
        for bus in buses.values():
            await bus.stop()
    return {"stats": stats, "params": _count(_synthetic_weights(n_params, 0)), "traffic_total": traffic.snapshot()}


# --------------------------------------------------------------------------- roles mode


class _SendLog:
    """Wraps RoundChannel.send in the roles' module: which messages the roles send, per round."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int, str, int]] = []  # (kind, sender, round, recipient, tensor bytes)

    def channel_class(self, base):
        log = self

        class LoggedChannel(base):
            async def send(self, message) -> None:
                log.sent.append((message.kind.name, message.sender, message.round, message.recipient,
                                 sum(len(t.data) for t in message.tensors)))
                await super().send(message)

        return LoggedChannel

    def per_round(self, rounds: int, n_clients: int) -> dict[str, Any]:
        announces = [sum(1 for k, _, r, _, _ in self.sent if k == "ANNOUNCE" and r == i) for i in range(1, rounds + 1)]
        updates = [sum(1 for k, _, r, _, _ in self.sent if k == "UPDATE" and r == i) for i in range(1, rounds + 1)]
        joins = sum(1 for k, s, _, _, _ in self.sent if k == "JOIN" and s != "coordinator")
        return {"announces_per_round": announces, "updates_per_round": updates, "client_joins": joins,
                "expected": {"announces": 1, "updates": n_clients, "client_joins": n_clients}}


class _Recorder:
    """Stands in for shared.metrics.ROUND_SECONDS: records what the roles observe."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float, float]] = []   # (role, seconds, perf_counter at observe)
        self.traffic: Traffic | None = None
        self.snapshots: list[tuple[int, int, int, int]] = []

    def labels(self, role: str):
        recorder = self

        class _Child:
            def observe(self, value: float) -> None:
                recorder.seen.append((role, float(value), time.perf_counter()))
                if role == "aggregator" and recorder.traffic is not None:
                    recorder.snapshots.append(recorder.traffic.snapshot())

        return _Child()


async def run_roles(bootstrap: str, n_clients: int, n_params: int, rounds: int, work: Path, *,
                    time_limit_s: float = 600.0, rejoin_after_s: float | None = None) -> dict[str, Any]:
    """The real ferry.fedavg roles. rejoin_after_s overrides federated.REJOIN_AFTER_S (the client's
    "no word from the aggregator for this long: join again") to measure the suggested fix."""
    import structlog

    from services.executor.algorithms import federated
    from services.executor.artifacts import ArtifactStore
    from services.executor.checkpoints import FileCheckpointStore
    from services.executor.context import ExecutorContext
    from services.executor.data import open_dataset
    from services.executor.data.importers import make_table, put_table, with_test_split
    from shared.builtin_algorithms import FEDAVG
    from shared.clock import SystemClock
    from shared.messaging import EventPublisher

    clients = [f"c{i:02d}" for i in range(n_clients)]
    hidden = _hidden_for(n_params)
    params = FEDAVG.with_defaults({"model": "mlp", "hidden": hidden, "rounds": rounds, "local_epochs": 1,
                                   "batch_size": ROWS_PER_CLIENT, "lr": 0.01, "optimizer": "sgd", "seed": 0,
                                   "strategy": "fedavg", "min_clients": n_clients, "round_timeout_s": 600.0})
    rng = np.random.default_rng(1)
    for c in clients:  # 16 training rows + 4 test rows per client
        rows = ROWS_PER_CLIENT + 4
        table = make_table({"X": rng.standard_normal((rows, N_FEATURES), dtype=np.float32),
                            "y": np.arange(rows, dtype=np.int64) % N_CLASSES}, label="y", features=None)
        put_table(work / c / "data", "bench", with_test_split(table, 4 / rows, 0))

    traffic = Traffic()
    recorder = _Recorder()
    recorder.traffic = traffic
    train_s: dict[tuple[int, str], float] = {}

    class Ctx(ExecutorContext):
        async def report(self, *, round: int = 0, total_rounds: int = 0, stage: str = "", metrics=None) -> None:
            if self.task.role == "client" and metrics and "train_s" in metrics:
                # Summed: a client that is announced the same round twice trains twice.
                key = (round, self.task.party)
                train_s[key] = train_s.get(key, 0.0) + float(metrics["train_s"])
            await super().report(round=round, total_rounds=total_rounds, stage=stage, metrics=metrics)

    task_id = f"overhead-{uuid.uuid4().hex[:10]}"
    buses = await _buses(bootstrap, ["coordinator", *clients], traffic)
    clock = SystemClock()
    stop = asyncio.Event()
    from services.executor.federation.identity import in_memory_federation

    keys = in_memory_federation(buses)

    def ctx_for(party: str, role: str) -> ExecutorContext:
        spec = _task(task_id, party, role, clients, params, data_ref="" if role == "aggregator" else "bench")
        opener = None if role == "aggregator" else (lambda p=party: open_dataset(work / p / "data", "bench"))
        return Ctx(task=spec, params=params, checkpoints=FileCheckpointStore(work / party / "checkpoints", spec.algo_task_id),
                   artifacts=ArtifactStore(work / party / "artifacts", spec.flow_id), peers=None, clock=clock,
                   log=structlog.get_logger().bind(party=party), stop=stop,
                   publisher=EventPublisher(buses[party], f"executor/{party}", clock), data_opener=opener,
                   bus=buses[party], trust=keys[party])

    original = federated.ROUND_SECONDS, federated.RoundChannel, federated.REJOIN_AFTER_S
    sends = _SendLog()
    federated.ROUND_SECONDS = recorder
    federated.RoundChannel = sends.channel_class(original[1])
    if rejoin_after_s is not None:
        federated.REJOIN_AFTER_S = rejoin_after_s
    started = time.perf_counter()
    results = None
    try:
        recorder.snapshots.append(traffic.snapshot())
        jobs = [asyncio.create_task(federated.TrainingClient().run(ctx_for(c, "client"))) for c in clients]
        jobs.append(asyncio.create_task(federated.TrainingAggregator().run(ctx_for("coordinator", "aggregator"))))
        done, pending = await asyncio.wait(jobs, timeout=time_limit_s)
        for job in pending:
            job.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for job in done:
            if job.exception() is not None:
                raise job.exception()
        if not pending:
            results = [job.result() for job in jobs]
    finally:
        federated.ROUND_SECONDS, federated.RoundChannel, federated.REJOIN_AFTER_S = original
        for bus in buses.values():
            await bus.stop()
    total_s = time.perf_counter() - started
    agg = [(s, at) for role, s, at in recorder.seen if role == "aggregator"]
    client_round = [s for role, s, _ in recorder.seen if role == "client"]
    stats = []
    for r, (wall, _) in enumerate(agg, start=1):
        trains = [train_s.get((r, c), float("nan")) for c in clients]
        before, after = recorder.snapshots[r - 1], recorder.snapshots[r]
        stats.append(RoundStats(wall, sum(trains), max(trains), produced_bytes=after[0] - before[0],
                                produced_records=after[1] - before[1], fetched_bytes=after[2] - before[2],
                                fetched_records=after[3] - before[3]))
    if results is None:
        return {"stats": stats, "params": hidden * (N_FEATURES + 1 + N_CLASSES) + N_CLASSES, "hidden": hidden,
                "client_round_s_median": median(client_round), "total_s": total_s, "test_accuracy": None,
                "completed": False, "rounds_completed": len(agg), "time_limit_s": time_limit_s,
                "messages": sends.per_round(rounds, n_clients), "traffic_total": traffic.snapshot(),
                "rejoin_after_s": federated.REJOIN_AFTER_S if rejoin_after_s is None else rejoin_after_s}
    accuracy = results[-1].metrics.get("test_accuracy")
    return {"stats": stats, "params": hidden * (N_FEATURES + 1 + N_CLASSES) + N_CLASSES, "hidden": hidden,
            "client_round_s_median": median(client_round), "total_s": total_s, "test_accuracy": accuracy,
            "messages": sends.per_round(len(agg), n_clients), "traffic_total": traffic.snapshot(),
            "completed": True, "rounds_completed": len(agg),
            "rejoin_after_s": federated.REJOIN_AFTER_S if rejoin_after_s is None else rejoin_after_s}


# ------------------------------------------------------------------------------- driver


def _r(value: float | None, digits: int = 4) -> float | None:
    """Rounded, with NaN (nothing measured) as None so the JSON stays JSON."""
    if value is None or math.isnan(value):
        return None
    return round(float(value), digits)


def _summarise(mode: str, n_clients: int, n_params: int, rounds: int, result: dict[str, Any],
               elapsed: float) -> dict[str, Any]:
    stats: list[RoundStats] = result["stats"]
    wall = median([s.wall_s for s in stats])
    train = median([s.train_s for s in stats])
    row = {
        "mode": mode, "parties": n_clients, "params": result["params"], "params_nominal": n_params,
        "model_mb": round(result["params"] * 4 / 1e6, 2), "rounds": rounds,
        "completed": result.get("completed", True), "rounds_completed": len(stats),
        "round_wall_s": _r(wall), "train_s": _r(train),
        "train_max_s": _r(median([s.train_max_s for s in stats])),
        "overhead_s": _r(wall - train), "overhead_share": _r((wall - train) / wall) if stats else None,
        "produced_mb_per_round": _r(median([s.produced_bytes for s in stats]) / 1e6, 2),
        "produced_records_per_round": _r(median([s.produced_records for s in stats]), 1),
        "fetched_mb_per_round": _r(median([s.fetched_bytes for s in stats]) / 1e6, 2),
        "payload_mb_per_round": round((n_clients + 1) * result["params"] * 4 / 1e6, 2),
        "rounds_detail": [{k: (_r(v) if isinstance(v, float) else v) for k, v in s.__dict__.items()
                           if not (isinstance(v, float) and math.isnan(v))} for s in stats],
        "elapsed_s": round(elapsed, 1),
    }
    if mode == "channel":
        row["announce_s"] = _r(median([s.announce_s for s in stats]))
        row["aggregate_s"] = _r(median([s.aggregate_s for s in stats]))
        row["collect_s"] = _r(median([s.extra["collect_s"] for s in stats]))
    else:
        row["client_round_s"] = _r(result["client_round_s_median"])
        row["hidden"] = result["hidden"]
        row["rejoin_after_s"] = result["rejoin_after_s"]
        row["messages"] = result["messages"]
        if not row["completed"]:
            row["time_limit_s"] = result["time_limit_s"]
    return row


MODES = ("channel", "roles", "roles-norejoin")
ROLES_TIME_LIMIT_S = 150.0


def plan(quick: bool, rounds: int | None, modes: list[str]) -> list[tuple[str, int, int, int]]:
    """(mode, parties, params, rounds). roles-norejoin only runs where rounds outlast REJOIN_AFTER_S."""
    if quick:
        return [(m, 3, 1_000_000, rounds or 2) for m in modes if m != "roles-norejoin"]
    out = []
    for n_params in (1_000_000, 10_000_000):
        for n_clients in (3, 10):
            r = rounds or (2 if (n_params, n_clients) == (10_000_000, 10) else 3)
            out.extend((m, n_clients, n_params, r) for m in modes
                       if m != "roles-norejoin" or n_params >= 10_000_000)
    return out


class _NoLeaderYet:
    """aiokafka logs ERROR and retries while a just-created topic has no leader yet: benign here."""

    def filter(self, record) -> bool:
        return "NotLeaderForPartitionError" not in record.getMessage()


def _bootstrap_from_env() -> str | None:
    return os.environ.get("FERRY_KAFKA_BOOTSTRAP") or os.environ.get("FERRY_KAFKA__BOOTSTRAP")


async def _run_all(bootstrap: str, runs, work_root: Path) -> list[dict[str, Any]]:
    rows = []
    for mode, n_clients, n_params, rounds in runs:
        t0 = time.perf_counter()
        if mode == "channel":
            result = await run_channel(bootstrap, n_clients, n_params, rounds)
        else:
            with tempfile.TemporaryDirectory(dir=work_root) as tmp:
                result = await run_roles(bootstrap, n_clients, n_params, rounds, Path(tmp),
                                         time_limit_s=ROLES_TIME_LIMIT_S,
                                         rejoin_after_s=3600.0 if mode == "roles-norejoin" else None)
        row = _summarise(mode, n_clients, n_params, rounds, result, time.perf_counter() - t0)
        rows.append(row)
        state = "" if row["completed"] else f" DID NOT FINISH in {ROLES_TIME_LIMIT_S:.0f} s " \
                                             f"({row['rounds_completed']}/{rounds} rounds)"
        print(f"  {mode:<14} {n_clients:>2} parties {row['params'] / 1e6:5.2f}M params: wall {row['round_wall_s']} s, "
              f"train {row['train_s']} s, overhead {row['overhead_s']} s ({row['elapsed_s']:.0f} s){state}",
              flush=True)
        del result
        gc.collect()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M params, 3 parties, 2 rounds (< 1 min)")
    parser.add_argument("--rounds", type=int, help="rounds per configuration")
    parser.add_argument("--modes", default=",".join(MODES), help=f"any of {', '.join(MODES)} (default: all)")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/round_overhead.json for a "
                                                  "full run; --quick writes only when given)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= set(MODES):
        parser.error(f"--modes: unknown {sorted(set(modes) - set(MODES))}")
    out = args.out or (None if args.quick else OUT)

    import torch

    from shared.logging import configure_logging

    configure_logging("WARNING", json=True)
    import logging

    logging.getLogger("aiokafka.consumer.fetcher").addFilter(_NoLeaderYet())
    torch.set_num_threads(1)
    # The first torch.optim optimizer of a process imports torch._dynamo (~3 s here): a one-off
    # that every executor process pays in its first round. Paid here, outside the timings.
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    started = time.perf_counter()
    runs = plan(args.quick, args.rounds, modes)
    handle = None
    with tempfile.TemporaryDirectory(prefix="ferry-overhead-") as tmp:
        bootstrap = _bootstrap_from_env()
        broker_s = 0.0
        if bootstrap is None:
            from shared.devtools.kafka_broker import start_broker

            t0 = time.perf_counter()
            handle = start_broker(Path(tmp) / "kafka")
            broker_s = time.perf_counter() - t0
            # TLS for every bus built below (the broker is TLS-only); the bench connects as admin.
            os.environ.update({k: v for k, v in handle.client_env().items() if k != "FERRY_KAFKA__BOOTSTRAP"})
            bootstrap = handle.bootstrap
            print(f"kafka broker at {bootstrap} (started in {broker_s:.1f} s)", flush=True)
        else:
            print(f"kafka broker at {bootstrap} (from the environment)", flush=True)
        try:
            rows = asyncio.run(_run_all(bootstrap, runs, Path(tmp)))
        finally:
            if handle is not None:
                from shared.devtools.kafka_broker import stop_broker

                stop_broker(handle)
    elapsed = time.perf_counter() - started
    print()
    headers = ("mode", "parties", "params", "rounds", "round wall s", "train s", "overhead s", "overhead %",
               "payload MB", "produced MB", "fetched MB")

    def f(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    print(table(headers, [(r["mode"], r["parties"], f"{r['params'] / 1e6:.0f}M",
                           f"{r['rounds_completed']}/{r['rounds']}" + ("" if r["completed"] else " DNF"),
                           f(r["round_wall_s"], ".3f"), f(r["train_s"], ".3f"), f(r["overhead_s"], ".3f"),
                           f(r["overhead_share"] and 100 * r["overhead_share"], ".0f"),
                           f"{r['payload_mb_per_round']:.0f}", f(r["produced_mb_per_round"], ".0f"),
                           f(r["fetched_mb_per_round"], ".0f")) for r in rows]))
    print(f"\ntotal {elapsed:.1f} s")
    if out is not None:
        write_json(out, {
            "benchmark": "round_overhead", "quick": args.quick, "elapsed_s": round(elapsed, 1),
            "machine": machine(), "broker": {"bootstrap": bootstrap if handle is None else "started here",
                                             "start_s": round(broker_s, 1)},
            "setup": {"chunk_bytes": 900_000, "dtype": "float32", "one_process": True,
                      "train_s": "summed over clients (one event loop: all of it is on the critical path)",
                      "overhead_s": "median round wall - median summed train time",
                      "produced_mb_per_round": "record values the clients and aggregator produced",
                      "fetched_mb_per_round": "record values all tail consumers fetched (every party tails "
                                              "the whole partition of the step)"},
            "rows": rows,
        })
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
