"""A live executor keeps heartbeating while its role blocks the event loop.

On a loaded node a torch import or a long training step can hold the loop for
longer than the monitor's lost_after; a heartbeat on that loop would fall
silent and the monitor would retry a live executor beside itself. The process
executor beats from a thread with its own loop and bus (liveness.HeartbeatThread),
and stops beating once its loop has been blocked past max_blocked_s (a hang).
"""

from __future__ import annotations

import asyncio
import time

from services.executor.main import run_task
from shared import topics
from shared.algorithms import AlgorithmRegistry, AlgorithmSpec, RoleResult, RoleSpec
from shared.bus.memory import InMemoryBus
from shared.clock import SystemClock
from shared.events import HEARTBEAT_STAGE, AlgorithmTaskSpec, Peer
from shared.wire import codec

BLOCK_S = 2.0
EVERY_S = 0.2


class BlockingRole:
    """Synchronous work on the event loop, as a slow import or a CPU-bound step does."""

    block_s = BLOCK_S

    async def run(self, ctx) -> RoleResult:
        time.sleep(self.block_s)
        return RoleResult()


class HungRole(BlockingRole):
    block_s = 3.0


REGISTRY = AlgorithmRegistry([
    AlgorithmSpec("test.blocking", "1", (RoleSpec("worker", f"{__name__}:BlockingRole", needs_data=False),
                                         RoleSpec("hung", f"{__name__}:HungRole", needs_data=False)))])


def role_block_ms(role: str) -> int:
    return int({"worker": BlockingRole, "hung": HungRole}[role].block_s * 1000)


def _spec(role: str = "worker") -> AlgorithmTaskSpec:
    return AlgorithmTaskSpec("t.a", "t", "f", "t", "test.blocking", "1", {}, "a", role, (Peer("a", role),), "", 1)


async def _beats(tmp_path, role: str = "worker", **kwargs) -> list[int]:
    """Run one attempt; the times of its heartbeats, in ms since it started."""
    bus, beats_bus = InMemoryBus(), InMemoryBus()
    for b in (bus, beats_bus):
        await b.ensure_topics(topics.CATALOGUE)
    dirs = {"checkpoints": tmp_path / "c", "artifacts": tmp_path / "a"}
    started = time.time_ns() // 1_000_000
    code = await run_task(_spec(role), dirs, asyncio.Event(), bus=bus, clock=SystemClock(), registry=REGISTRY,
                          heartbeat_s=EVERY_S, **({"heartbeat_bus": lambda: beats_bus} | kwargs))
    assert code == 0
    # The thread must not hold up the end: a cancelled executor has to exit promptly.
    assert time.time_ns() // 1_000_000 - started < role_block_ms(role) + 5_000
    records = bus.records(topics.PROGRESS.name) + beats_bus.records(topics.PROGRESS.name)
    envelopes = [codec.decode(r.value) for r in records]
    return sorted(e.timestamp_ms - started for e in envelopes if getattr(e.event, "stage", "") == HEARTBEAT_STAGE)


def _between(beats: list[int], from_ms: int, to_ms: int) -> list[int]:
    return [b for b in beats if from_ms <= b <= to_ms]


async def test_heartbeats_go_on_while_the_role_blocks_the_event_loop(tmp_path):
    beats = _between(await _beats(tmp_path), 300, BLOCK_S * 1000 - 100)  # well inside the block
    assert len(beats) >= 4, beats  # ~ (BLOCK_S - 0.5) / EVERY_S = 7.5 when the machine is idle
    assert max(b - a for a, b in zip(beats, beats[1:])) < 1_000, beats


async def test_a_heartbeat_on_the_blocked_loop_itself_would_fall_silent(tmp_path):
    # Why the thread: the same role with the in-loop heartbeat (no heartbeat bus) sends nothing meanwhile.
    assert _between(await _beats(tmp_path, heartbeat_bus=None), 300, BLOCK_S * 1000 - 100) == []


async def test_a_loop_blocked_past_max_blocked_s_stops_the_beats(tmp_path):
    # A hang is not busy work: beats stop once the loop has not turned for max_blocked_s.
    beats = await _beats(tmp_path, "hung", heartbeat_max_blocked_s=1.0)
    assert _between(beats, 300, 900), beats  # still busy work
    assert _between(beats, 1_700, 2_900) == [], beats  # the 3 s block is past 1 s: hung, silent
