"""The monitor's checkpoints: a backlog folded over many batches is snapshotted once per entry per
checkpoint, stored with the offsets it is the fold of, and a crash between checkpoints re-folds
from the last one to the very state an uninterrupted fold reaches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from aiokafka.partitioner import murmur2

from services.monitor import app
from services.monitor.app import MonitorService
from services.monitor.adapters.state_store import MonitorStateStore
from services.monitor.core import MonitorState, fold, restore, snapshot_all
from shared import topics
from shared.bus.memory import InMemoryBus
from shared.bus.port import Record
from shared.clock import ManualClock
from shared.events import Status
from shared.testing.task_streams import lifecycle_events
from shared.wire import codec

FLOWS = 120  # 13 events each


def _records() -> list[Record]:
    """The stream as a consumer of 3 partitions per topic delivers it, partition by partition."""
    logs: dict[tuple[str, int], list[Record]] = {}
    for topic, env in lifecycle_events(FLOWS, ManualClock(), prefix="cp"):
        key = env.key.encode()
        partition = (murmur2(key) & 0x7FFFFFFF) % 3
        log = logs.setdefault((topic, partition), [])
        log.append(Record(topic, partition, len(log), key, codec.encode(env), 0))
    return [r for tp in sorted(logs) for r in logs[tp]]


async def _service(state_dir: Path, own_process: bool = False) -> tuple[MonitorService, InMemoryBus]:
    bus = InMemoryBus()
    await bus.start()
    await bus.ensure_topics(topics.CATALOGUE)
    return MonitorService(bus, ManualClock(), MonitorStateStore(state_dir), own_process=own_process), bus


async def _fold(service: MonitorService, records: list[Record], size: int = 250) -> list:
    """What run() does with a backlog: batches pipelined, then the checkpoint once caught up."""
    prepared, pending = [], None
    for i in range(0, len(records), size):
        batch = await service.prepare_batch(records[i:i + size])
        if pending is not None:
            await service.store_batch(*pending)
        prepared.append(batch)
        pending = (batch, service._send(batch))
    await service.store_batch(*pending)
    if service.unsaved:
        batch = await service.prepare_batch([], checkpoint=True)
        await service.store_batch(batch, service._send(batch))
        prepared.append(batch)
    return prepared


def _uninterrupted(records: list[Record]) -> MonitorState:
    return fold(MonitorState(), [codec.decode(r.value) for r in records])[0]


async def test_a_backlog_is_snapshotted_once_per_entry_and_stored_with_its_offsets(tmp_path):
    records = _records()
    service, bus = await _service(tmp_path)
    prepared = await _fold(service, records)

    assert len(prepared) > 2 and all(not b.snapshots for b in prepared[:-1])  # one checkpoint, at the end
    written = Counter(key for b in prepared for key in b.snapshots)
    assert len(written) == 2 * FLOWS and set(written.values()) == {1}
    mirrored = Counter(r.key for r in await bus.read_all(topics.TASK_STATE.name))
    assert len(mirrored) == 2 * FLOWS and set(mirrored.values()) == {1}
    ends = {}
    for r in records:
        ends[(r.topic, r.partition)] = r.offset + 1
    assert {(tp.topic, tp.partition): o for tp, o in service._offsets.items()} == ends
    service._store.close()

    store = MonitorStateStore(tmp_path)
    try:
        assert sorted(snapshot_all(restore(store.snapshots()))) == sorted(snapshot_all(_uninterrupted(records)))
    finally:
        store.close()
    assert all(f.status is Status.SUCCEEDED for f in service.state.flows.values())


async def test_checkpoints_are_bounded_and_a_crash_between_them_refolds_to_the_same_state(tmp_path, monkeypatch):
    monkeypatch.setattr(app, "CHECKPOINT_EVENTS", 300)
    records = _records()
    cut = len(records) * 2 // 3 // 100 * 100  # whole batches of 100
    service, _ = await _service(tmp_path)
    windows, since = [], 0
    for i in range(0, cut, 100):
        batch = await service.prepare_batch(records[i:i + 100])
        await service.store_batch(batch, service._send(batch))
        since += len(records[i:i + 100])
        if batch.offsets:
            windows.append(since)
            since = 0
    assert len(windows) >= 2 and max(windows) < 300 + 100  # a window closes once it holds 300 events
    assert since and service.unsaved and sum(service._offsets.values()) == cut - since
    service._store.close()  # killed: what was folded since the last checkpoint is lost

    restarted, _ = await _service(tmp_path)
    resume = {(tp.topic, tp.partition): o for tp, o in restarted._offsets.items()}
    rest = [r for r in records if r.offset >= resume.get((r.topic, r.partition), 0)]
    assert len(rest) == len(records) - cut + since  # the lost window is folded again
    await _fold(restarted, rest)
    expected = sorted(snapshot_all(_uninterrupted(records)))
    assert sorted(snapshot_all(restarted.state)) == expected
    restarted._store.close()
    store = MonitorStateStore(tmp_path)
    try:
        assert sorted(snapshot_all(restore(store.snapshots()))) == expected
    finally:
        store.close()


async def test_what_a_batch_leaves_is_frozen_and_cyclic_garbage_is_still_collected(tmp_path, monkeypatch):
    """After a batch its entries are frozen out of the collector's reach (not walked by a young
    collection), and cycles frozen with them are still reclaimed by the next full collection."""
    import gc
    import weakref

    monkeypatch.setattr(app, "FULL_COLLECTION_MIN", 10_000)
    monkeypatch.setattr(app, "_next_full_collection", 0)
    records = _records()
    service, _ = await _service(tmp_path, own_process=True)

    class Node:
        pass

    cycle = Node()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    frozen_before = gc.get_freeze_count()
    await service.prepare_batch(records[:200])
    assert gc.get_freeze_count() > frozen_before  # the batch's entries went out of the collector's reach
    del cycle  # now garbage that only the cyclic collector can reclaim, frozen with the batch's entries
    gc.collect()
    assert gone() is not None  # out of reach of an ordinary collection: waits for the next full one
    # The next full collection once a few more batches are frozen (the default waits for the
    # frozen objects, here the whole test process, to double).
    monkeypatch.setattr(app, "_next_full_collection", gc.get_freeze_count() + 2_000)
    for i in range(200, len(records), 200):
        await service.prepare_batch(records[i:i + 200])
        if gone() is None:
            break
    assert gone() is None
    assert app._next_full_collection >= 2 * gc.get_freeze_count()  # the next one waits for a doubling
    gc.unfreeze()  # leave the test process's collector as it was


async def test_a_monitor_sharing_its_process_leaves_the_collector_alone(tmp_path):
    """Embedded (the monitor in the same process as executors), a batch freezes nothing: counting
    frozen objects walks them all, which made the embedded platform's rounds six times slower."""
    import gc

    service, _ = await _service(tmp_path)
    frozen_before = gc.get_freeze_count()
    await service.prepare_batch(_records()[:200])
    assert gc.get_freeze_count() == frozen_before
    assert gc.isenabled()
