"""End-to-end fold rate of the monitor on a real Kafka broker, and its restart costs.

Pre-publishes synthetic task lifecycles (shared.testing.task_streams: one task per
flow, 2 parties, 3 rounds -> 13 events per task) to the monitor's input topics, then
runs the monitor in-process (services.monitor.app.build() on a KafkaBus, run()) from
an empty state dir and times it until every input partition's stored offset reaches
the end recorded after publishing, and then until service.flush() (if the service
has one) has every snapshot mirrored. So the time covers the whole shell: consume,
decode, step, StateChanged published to ferry.task-events and acknowledged,
snapshots + offsets in one LMDB transaction, snapshots on ferry.task-state (per
checkpoint: the monitor closes one when caught up, so the last is always timed).
Each run checks the result: every flow SUCCEEDED, every member at round 3 of 3.

Rows per run:
  events_per_s   events / (first batch handed to the shell -> done): the sustained
                 rate, which the consumer's group join does not dilute;
  total_s        from run() called (topic check, group join, first fetch) to done;
  cpu_us_per_event  CPU seconds of this process (the monitor; GC included) and of the
                 broker JVM, per event; gc_s: seconds in the cyclic garbage collector.

Restart, with N tasks' snapshots in LMDB (full 100k, quick 10k; the folded state is
topped up with finished tasks copied under new ids when the fold made fewer):
  rebuild_s      build() (LMDB store, restore() of every snapshot, service) in-process;
  process_ready_s `python -m services.cli monitor` spawned -> /healthz reports every task;
  catchup_s      K new events published while the monitor was down: run() called ->
                 all folded (group join included); catchup_fold_s: first batch -> done.

The machine is shared and noisy: every phase runs --runs times and medians are quoted.
A broker is started in a temp dir unless FERRY_KAFKA_BOOTSTRAP names one (then its CPU
is not measured). Such a broker must not serve a real monitor: the bench publishes to
the real topic names and joins the monitor's consumer group. Writes
bench/results/monitor_kafka.json (or --out).

    python bench/monitor_kafka.py [--quick] [--tasks N] [--restart-tasks N] [--runs R]
                                  [--catchup K] [--no-process] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka import TopicPartition as KafkaTopicPartition  # noqa: E402
from aiokafka.partitioner import murmur2  # noqa: E402

from services.monitor.adapters.state_store import MonitorStateStore  # noqa: E402
from services.monitor.app import CHECKPOINT_EVENTS, CHECKPOINT_MS, INPUT_TOPICS, MAX_BATCH, build  # noqa: E402
from services.monitor.core import snapshot_flow, snapshot_task  # noqa: E402
from services.monitor.core.state import evolve  # noqa: E402
from shared import topics  # noqa: E402
from shared.bus.kafka import KafkaBus, KafkaSettings, tls_from_environment  # noqa: E402
from shared.bus.port import TopicPartition  # noqa: E402
from shared.clock import ManualClock, SystemClock  # noqa: E402
from shared.events import Status  # noqa: E402
from shared.settings import FerrySettings  # noqa: E402
from shared.testing.task_streams import lifecycle_events  # noqa: E402
from shared.wire import codec  # noqa: E402

EVENTS_PER_TASK = 13  # lifecycle_events with parties=2, rounds=3
RESULTS = ROOT / "bench" / "results" / "monitor_kafka.json"


# ------------------------------------------------------------------------------- broker side

class _GcClock:
    """Seconds the cyclic garbage collector ran in this process, per generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.runs[info["generation"]] += 1

    def total(self) -> float:
        return sum(self.seconds)


GC = _GcClock()


def _broker_cpu_s(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def publish(bootstrap: str, n_tasks: int, prefix: str) -> int:
    """lifecycle_events for n_tasks flows onto the input topics; returns the count.

    Built into per-partition batches by hand (aiokafka's batch API, the default
    partitioner's murmur2): publishing is set-up, not what is measured."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="bench-publisher", acks="all",
                                enable_idempotence=True, linger_ms=20, max_batch_size=512 * 1024,
                                max_request_size=4 * 1024 * 1024, **_tls_kwargs())
    await producer.start()
    try:
        parts: dict[str, int] = {}
        for spec in INPUT_TOPICS:
            parts[spec.name] = len(await producer.partitions_for(spec.name))
        batches: dict[tuple[str, int], object] = {}
        pending: list[asyncio.Future] = []
        count = 0

        async def flush(key: tuple[str, int]) -> None:
            batch = batches.pop(key)
            pending.append(await producer.send_batch(batch, key[0], partition=key[1]))

        for topic, env in lifecycle_events(n_tasks, ManualClock(), prefix=prefix):
            key = env.key.encode()
            p = (murmur2(key) & 0x7FFFFFFF) % parts[topic]
            batch = batches.get((topic, p))
            if batch is None:
                batch = batches[(topic, p)] = producer.create_batch()
            if batch.append(key=key, value=codec.encode(env), timestamp=None) is None:
                await flush((topic, p))
                batch = batches[(topic, p)] = producer.create_batch()
                batch.append(key=key, value=codec.encode(env), timestamp=None)
            count += 1
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        for key in list(batches):
            await flush(key)
        await asyncio.gather(*pending)
        return count
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, names: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="bench-offsets", **_tls_kwargs())
    await consumer.start()
    try:
        tps = []
        for name in names:
            partitions = consumer.partitions_for_topic(name)
            if partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(name) or set()
            tps += [KafkaTopicPartition(name, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        return {TopicPartition(tp.topic, tp.partition): off for tp, off in ends.items()}
    finally:
        await consumer.stop()


# ------------------------------------------------------------------------------- monitor side

def _bus(bootstrap: str, role: str = "monitor") -> KafkaBus:
    # The settings a monitor process gets from FerrySettings (linger 5 ms, 1 MiB requests, mutual
    # TLS as its own role: the FERRY_KAFKA__* environment, set for the bench's own broker in main()).
    return KafkaBus(KafkaSettings(bootstrap=bootstrap, client_id="monitor-bench", tls=tls_from_environment(role)))


def _tls_kwargs() -> dict:
    """aiokafka's security arguments for the bench's own raw clients (publisher, offsets): admin."""
    return tls_from_environment("admin").client_kwargs()


async def run_monitor(bootstrap: str, state_dir: Path, targets: dict[TopicPartition, int],
                      broker_pid: int | None, keep_state: bool = False) -> dict:
    """Build a MonitorService over state_dir and run it until it has folded up to `targets`."""
    bus = _bus(bootstrap)
    await bus.start()
    gc.collect()
    t_build = time.perf_counter()
    service = build(FerrySettings(monitor={"state_dir": state_dir}), bus, SystemClock())  # as the process does
    rebuild_s = time.perf_counter() - t_build
    restored = len(service.state.tasks)
    start = {tp: service._offsets.get(tp, 0) for tp in targets}
    marks: dict[str, float] = {}
    done = asyncio.Event()
    batches = [0]
    prepare, store = service.prepare_batch, service.store_batch

    def caught_up() -> bool:
        return all(service._offsets.get(tp, 0) >= end for tp, end in targets.items())

    async def prepare_batch(records, **options):
        if "first" not in marks:
            marks.update(first=time.perf_counter(), first_cpu=time.process_time(),
                         first_broker=_broker_cpu_s(broker_pid), first_gc=GC.total())
        return await prepare(records, **options)

    async def store_batch(batch, sent):
        await store(batch, sent)
        batches[0] += 1
        if "folded" not in marks and caught_up():
            marks["folded"] = time.perf_counter()
            done.set()

    service.prepare_batch, service.store_batch = prepare_batch, store_batch  # run() looks them up on the instance
    stop = asyncio.Event()
    t0 = time.perf_counter()
    runner = asyncio.create_task(service.run(stop))
    waiter = asyncio.create_task(done.wait())
    try:
        await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # raises what the service raised
            raise RuntimeError("the monitor stopped before it caught up")
        flush = getattr(service, "flush", None)  # snapshots mirrored after the batch (if it defers them)
        if flush is not None:
            await flush()
        marks.update(done=time.perf_counter(), done_cpu=time.process_time(),
                     done_broker=_broker_cpu_s(broker_pid), done_gc=GC.total())
    finally:
        waiter.cancel()
        stop.set()
        await asyncio.gather(runner, return_exceptions=True)
        await bus.stop()
    return {
        "events": sum(targets.values()) - sum(start.values()),
        "rebuild_s": rebuild_s, "restored_tasks": restored,
        "total_s": marks["done"] - t0, "fold_s": marks["done"] - marks["first"],
        "mirror_flush_s": marks["done"] - marks["folded"],
        "startup_s": marks["first"] - t0, "batches": batches[0],
        "cpu_monitor_s": marks["done_cpu"] - marks["first_cpu"],
        "cpu_broker_s": marks["done_broker"] - marks["first_broker"],
        "gc_s": marks["done_gc"] - marks["first_gc"],
        "state": service.state if keep_state else None,
    }


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_ready(bootstrap: str, state_dir: Path, want_tasks: int, log: Path, timeout_s: float = 600) -> float:
    """Seconds from spawning `python -m services.cli monitor` to /healthz reporting every task."""
    import httpx

    port = _port()
    env = {**os.environ, "FERRY_KAFKA__BOOTSTRAP": bootstrap, "FERRY_HTTP__PORT": str(port),
           "FERRY_MONITOR__STATE_DIR": str(state_dir), "FERRY_LOG__LEVEL": "WARNING"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "monitor"], env=env, cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        with httpx.Client(timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"monitor exited {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    if client.get(f"http://127.0.0.1:{port}/healthz").json().get("tasks", 0) >= want_tasks:
                        return time.perf_counter() - t0
                except (httpx.HTTPError, ValueError):
                    pass
                if time.perf_counter() - t0 > timeout_s:
                    raise RuntimeError(f"monitor not ready after {timeout_s}s: {log.read_text()[-2000:]}")
                time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------- checks & state

def check_folded(state, prefix: str, n_tasks: int) -> None:
    """Every flow of `prefix` SUCCEEDED, every member at round 3 of 3: nothing lost on the way."""
    flows = [f for fid, f in state.flows.items() if fid.startswith(prefix + "-")]
    bad = [f.flow_id for f in flows if f.status is not Status.SUCCEEDED]
    if len(flows) != n_tasks or bad:
        raise AssertionError(f"{len(flows)} flows of {n_tasks} folded; not SUCCEEDED: {bad[:5]}")
    for flow in flows:
        for tid in flow.task_ids:
            task = state.tasks[tid]
            if task.status is not Status.SUCCEEDED or task.parked or \
                    any(a.round != 3 or a.status is not Status.SUCCEEDED for a in task.algos):
                raise AssertionError(f"task {tid} is not a finished lifecycle: {task}")


def top_up(state_dir: Path, state, want: int) -> int:
    """Store finished tasks (folded ones copied under new ids) until state_dir holds `want` tasks."""
    from services.monitor.core import MonitorState
    from services.monitor.core.pmap import PMap

    made = len(state.tasks)
    templates = list(state.flows.values())[:1000]
    store = MonitorStateStore(state_dir)
    try:
        n = 0
        while made < want:
            snaps = {}
            for flow in templates:
                if made >= want:
                    break
                prefix = f"resident{n}-"
                copy = evolve(flow, flow_id=prefix + flow.flow_id, task_ids=tuple(prefix + t for t in flow.task_ids))
                tasks = {}
                for tid in flow.task_ids:
                    task = state.tasks[tid]
                    algos = tuple(evolve(a, algo_task_id=prefix + a.algo_task_id) for a in task.algos)
                    tasks[prefix + tid] = evolve(task, task_id=prefix + tid, flow_id=copy.flow_id, algos=algos)
                mini = MonitorState(PMap.from_items(tasks.items()), PMap.from_items([(copy.flow_id, copy)]))
                snaps.update({f"t:{tid}": snapshot_task(mini, tid) for tid in tasks})
                snaps[f"f:{copy.flow_id}"] = snapshot_flow(mini, copy.flow_id)
                made += len(tasks)
            store.save(snaps, {})
            n += 1
    finally:
        store.close()
    return made


# ------------------------------------------------------------------------------- main

def _median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r and r[key] == r[key]]  # absent or NaN: left out
    return statistics.median(values) if values else float("nan")


async def bench(args, bootstrap: str, broker_pid: int | None, work: Path) -> dict:
    bus = _bus(bootstrap, "admin")  # creating topics is the operator's (admin's) job
    await bus.start()
    await bus.ensure_topics(topics.CATALOGUE)
    await bus.stop()
    inputs = [t.name for t in INPUT_TOPICS]
    tag = uuid.uuid4().hex[:6]

    prefix = f"mk{tag}"
    t = time.perf_counter()
    published = await publish(bootstrap, args.tasks, prefix)
    targets = await end_offsets(bootstrap, inputs)
    print(f"published {published:,} events ({args.tasks:,} tasks) in {time.perf_counter() - t:.1f}s; "
          f"input topics hold {sum(targets.values()):,}", flush=True)

    fold_rows, state_dir = [], None
    for r in range(args.runs):
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)
        state_dir = work / f"state-{r}"
        sc_before = sum((await end_offsets(bootstrap, [topics.TASK_EVENTS.name])).values())
        res = await run_monitor(bootstrap, state_dir, targets, broker_pid, keep_state=True)
        sc_after = sum((await end_offsets(bootstrap, [topics.TASK_EVENTS.name])).values())
        state = res.pop("state")
        check_folded(state, prefix, args.tasks)
        n = res["events"]
        row = {"run": r, **res, "events_per_s": n / res["fold_s"], "events_per_s_incl_start": n / res["total_s"],
               "cpu_us_per_event_monitor": res["cpu_monitor_s"] / n * 1e6,
               "cpu_us_per_event_broker": res["cpu_broker_s"] / n * 1e6,
               "state_changed_published": sc_after - sc_before, "tasks": len(state.tasks)}
        fold_rows.append(row)
        print(f"fold run {r}: {n:,} events in {res['fold_s']:.2f}s (+{res['startup_s']:.2f}s start) = "
              f"{row['events_per_s']:,.0f}/s; cpu/event monitor {row['cpu_us_per_event_monitor']:.0f}us "
              f"broker {row['cpu_us_per_event_broker']:.0f}us; gc {res['gc_s']:.2f}s; {res['batches']} batches",
              flush=True)
        if r < args.runs - 1:
            del state
        gc.collect()

    # Restart: the last run's store, topped up to the wanted number of tasks.
    stored = top_up(state_dir, state, args.restart_tasks)
    del state
    gc.collect()
    rebuild_rows = []
    for r in range(args.runs):
        gc.collect()
        t = time.perf_counter()
        service = build(FerrySettings(monitor={"state_dir": state_dir}), _bus(bootstrap), SystemClock())
        rebuild_s = time.perf_counter() - t
        tasks = len(service.state.tasks)
        service._store.close()
        del service
        row = {"run": r, "tasks": tasks, "rebuild_s": rebuild_s}
        if not args.no_process:
            row["process_ready_s"] = process_ready(bootstrap, state_dir, tasks, work / "monitor.log")
        rebuild_rows.append(row)
        print(f"restart run {r}: {tasks:,} tasks restored in {rebuild_s:.2f}s in-process"
              + (f", process ready in {row['process_ready_s']:.2f}s" if "process_ready_s" in row else ""),
              flush=True)

    catchup_rows = []
    catchup_tasks = -(-args.catchup // EVENTS_PER_TASK)
    for r in range(args.runs):
        cprefix = f"mk{tag}c{r}"
        await publish(bootstrap, catchup_tasks, cprefix)
        targets = await end_offsets(bootstrap, inputs)
        res = await run_monitor(bootstrap, state_dir, targets, broker_pid, keep_state=True)
        state = res.pop("state")
        check_folded(state, cprefix, catchup_tasks)
        del state
        gc.collect()
        row = {"run": r, "events": res["events"], "restored_tasks": res["restored_tasks"],
               "rebuild_s": res["rebuild_s"], "catchup_s": res["total_s"], "catchup_fold_s": res["fold_s"],
               "startup_s": res["startup_s"]}
        catchup_rows.append(row)
        print(f"catch-up run {r}: {res['events']:,} events after restoring {res['restored_tasks']:,} tasks "
              f"({res['rebuild_s']:.2f}s): {res['total_s']:.2f}s from run() ({res['fold_s']:.2f}s folding)",
              flush=True)

    fold = {k: _median(fold_rows, k) for k in ("events_per_s", "events_per_s_incl_start", "fold_s", "total_s",
                                               "startup_s", "cpu_us_per_event_monitor", "cpu_us_per_event_broker",
                                               "gc_s")}
    restart = {k: _median(rebuild_rows, k) for k in ("rebuild_s", "process_ready_s")}
    catch = {k: _median(catchup_rows, k) for k in ("catchup_s", "catchup_fold_s", "startup_s", "rebuild_s")}
    return {
        "events_per_s": round(fold["events_per_s"]),
        "events": fold_rows[0]["events"], "tasks": args.tasks, "quick": args.quick, "runs": args.runs,
        "restart_tasks": stored, "catchup_events": catchup_rows[0]["events"],
        "median": {"fold": fold, "restart": restart, "catchup": catch},
        "rows": {"fold": fold_rows, "restart": rebuild_rows, "catchup": catchup_rows},
        "workload": "shared.testing.task_streams.lifecycle_events(parties=2, rounds=3): 13 events per task, "
                    "one task per flow, pre-published to the 6 input topics (3 partitions each)",
        "clock": "wall seconds; events_per_s = events / (first batch in -> last batch done), median of runs",
        "monitor_checkpoints": f"snapshots + offsets stored (LMDB) and snapshots mirrored (ferry.task-state) when "
                               f"caught up, else every {CHECKPOINT_EVENTS:,} events or {CHECKPOINT_MS} ms of backlog "
                               f"(services/monitor/app.py); StateChanged published every batch of <= {MAX_BATCH:,}",
    }


def _provenance() -> dict:
    """The commit measured, and whether the tree had uncommitted changes (then it is not that commit)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short", "HEAD"), "clean_tree": status == ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~20k events, 10k tasks at restart (< 1 min)")
    parser.add_argument("--tasks", type=int, help="tasks (= flows) to fold, 13 events each (default 100000, "
                        "quick 1540)")
    parser.add_argument("--restart-tasks", type=int, help="tasks in LMDB for the restart phases (default "
                        "100000, quick 10000)")
    parser.add_argument("--runs", type=int, help="runs per phase; medians are reported (default 3)")
    parser.add_argument("--catchup", type=int, default=1000, help="new events to catch up on after a restart")
    parser.add_argument("--no-process", action="store_true", help="skip the process start -> ready timing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.tasks = args.tasks or (1540 if args.quick else 100_000)
    args.restart_tasks = args.restart_tasks or (10_000 if args.quick else 100_000)
    args.runs = args.runs or 3

    work = Path(tempfile.mkdtemp(prefix="monitor-kafka-"))
    external = os.environ.get("FERRY_KAFKA_BOOTSTRAP")
    handle = None
    load_before = os.getloadavg()
    provenance = _provenance()  # the code measured is the tree at the start
    t_all = time.perf_counter()
    try:
        if external:
            bootstrap, broker_pid = external, None
        else:
            from shared.devtools.kafka_broker import start_broker

            handle = start_broker(work / "kafka")
            bootstrap, broker_pid = handle.bootstrap, handle.pid
            os.environ.update(handle.client_env())  # each client presents its role's certificate
        result = asyncio.run(bench(args, bootstrap, broker_pid, work))
    finally:
        if handle is not None:
            from shared.devtools.kafka_broker import stop_broker

            stop_broker(handle)
        shutil.rmtree(work, ignore_errors=True)
    m = result["median"]
    result.update({
        **provenance,
        "broker": "external " + external if external else "shared.devtools.kafka_broker (single node, same machine)",
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "bench_wall_s": round(time.perf_counter() - t_all, 1),
        "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
    })
    print()
    print(f"monitor on Kafka: {result['events']:,} events ({result['tasks']:,} tasks), medians of {args.runs} runs")
    print(f"{'metric':<44}{'median':>12}")
    for label, value in (
            ("fold events/s (first batch -> done)", f"{m['fold']['events_per_s']:,.0f}"),
            ("fold events/s incl. start-up", f"{m['fold']['events_per_s_incl_start']:,.0f}"),
            ("fold seconds", f"{m['fold']['fold_s']:.2f}"),
            ("monitor CPU us/event", f"{m['fold']['cpu_us_per_event_monitor']:.1f}"),
            ("broker CPU us/event", f"{m['fold']['cpu_us_per_event_broker']:.1f}"),
            (f"rebuild {result['restart_tasks']:,} tasks in-process (s)", f"{m['restart']['rebuild_s']:.2f}"),
            (f"process start -> ready, {result['restart_tasks']:,} tasks (s)", f"{m['restart']['process_ready_s']:.2f}"),
            ("GC seconds during the fold", f"{m['fold']['gc_s']:.2f}"),
            (f"catch up {result['catchup_events']:,} events, run() -> done (s)", f"{m['catchup']['catchup_s']:.2f}"),
            ("  of which folding (s)", f"{m['catchup']['catchup_fold_s']:.2f}")):
        print(f"{label:<44}{value:>12}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
