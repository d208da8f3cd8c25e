"""One ferry.fedavg step, its real roles on an in-process bus, with an attacker beside them.

The aggregator and the clients are the executor's own run_task (as the
embedded platform and Kubernetes Jobs run them), with pinned identities from
one key registry. The attacker writes to the same rounds topic: as an outsider
with a key of its own (or none), or, for the malicious-aggregator attacks,
with the aggregator's real key while the honest clients run alone.

Every run returns what a user would look at: each party's exit code and final
metrics, the progress events (the task's progress in the monitor), the
rejections logged by the executors, and the accuracy reached.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
import structlog
from sklearn.datasets import load_breast_cancer

from services.demo import HOSPITALS, prepare_parties
from services.executor.algorithms.party_data import STANDARDISATION
from services.executor.artifacts import ArtifactStore
from services.executor.federation.identity import Trust, in_memory_federation
from services.executor.main import run_task
from services.executor.transport import RoundChannel
from services.scheduler.adapters.launchers import party_dirs
from shared import topics
from shared.bus.memory import InMemoryBus
from shared.clock import SystemClock
from shared.events import AlgorithmTaskSpec, ExecutorProgress, Peer, RoundMessage
from shared.messaging import EventPublisher
from shared.wire import codec

AGGREGATOR = "coordinator"
FLOW = "adversarial"
PARAMS = {"model": "logreg", "rounds": 4, "local_epochs": 1, "batch_size": 32, "lr": 0.1, "optimizer": "sgd",
          "strategy": "fedavg", "min_clients": 3, "seed": 7, "round_timeout_s": 20.0}


def prepare(work: Path) -> None:
    """The demo's three hospitals, standardised with the pooled statistics (what ferry.standardise gives)."""
    prepare_parties(work)
    x = load_breast_cancer().data
    stats = {"mean": x.mean(axis=0).astype(np.float32), "std": x.std(axis=0).astype(np.float32)}
    for party in HOSPITALS:
        ArtifactStore(party_dirs(work, party)["artifacts"], FLOW).save(STANDARDISATION, stats, {})


def specs(task_id: str, params: dict, clients=HOSPITALS) -> dict[str, AlgorithmTaskSpec]:
    peers = tuple(Peer(c, "client") for c in clients) + (Peer(AGGREGATOR, "aggregator"),)
    out = {c: AlgorithmTaskSpec(f"{task_id}.{c}", task_id, FLOW, "train", "ferry.fedavg", "1", params, c, "client",
                                peers, data_ref="breast_cancer") for c in clients}
    out[AGGREGATOR] = AlgorithmTaskSpec(f"{task_id}.{AGGREGATOR}", task_id, FLOW, "train", "ferry.fedavg", "1",
                                        params, AGGREGATOR, "aggregator", peers)
    return out


@dataclass
class Run:
    bus: InMemoryBus
    specs: dict[str, AlgorithmTaskSpec]
    trusts: dict[str, Trust]
    exit_codes: dict[str, int] = field(default_factory=dict)
    logs: list[dict] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        return next(iter(self.specs.values())).task_id

    def progress(self, party: str) -> list[ExecutorProgress]:
        return [e.event for e in map(codec.decode, (r.value for r in self.bus.records(topics.PROGRESS.name)))
                if e.event.algo_task_id == self.specs[party].algo_task_id]

    def final_metrics(self, party: str) -> dict:
        finished = [p for p in self.progress(party) if p.stage == "finished"]
        return dict(finished[-1].metrics) if finished else {}

    def stages(self, party: str) -> list[str]:
        return [p.stage for p in self.progress(party)]

    def rejections(self, party: str | None = None, reason: str | None = None) -> list[dict]:
        return [r for r in self.logs if r["event"] == "round.message_rejected"
                and (party is None or r.get("party") == party) and (reason is None or r["reason"] == reason)]

    def channel(self, party: str, trust: Trust | None = None) -> RoundChannel:
        """A channel on this step's conversation, speaking as `party` with `trust` (default: its real key)."""
        return RoundChannel(self.bus, self.specs[party], EventPublisher(self.bus, f"attacker/{party}", SystemClock()),
                            trust=trust or self.trusts[party])


Attack = Callable[[Run], Awaitable[Any]]


async def run_step(work: Path, *, params: dict | None = None, attack: Attack | None = None,
                   scripted: tuple[str, ...] = (), timeout_s: float = 120.0, grace_s: float = 0.0) -> Run:
    """Runs the step to the end (or timeout_s); `attack(run)` runs beside the roles from the start,
    and plays the `scripted` parties (their honest roles do not run)."""
    task_id = f"{FLOW}.train-{uuid.uuid4().hex[:8]}"
    all_specs = specs(task_id, {**PARAMS, **(params or {})})
    run = Run(InMemoryBus(), all_specs, in_memory_federation(all_specs))
    await run.bus.ensure_topics(topics.CATALOGUE)
    roles = [p for p in all_specs if p not in scripted]
    stops = {p: asyncio.Event() for p in roles}
    with structlog.testing.capture_logs() as logs:
        async def one(party: str) -> None:
            run.exit_codes[party] = await run_task(all_specs[party], party_dirs(work, party), stops[party],
                                                   bus=run.bus, clock=SystemClock(), trust=run.trusts[party])
        tasks = [asyncio.create_task(one(p)) for p in roles]
        attacker = asyncio.create_task(attack(run)) if attack is not None else None
        try:
            # With a scripted party the honest ones cannot finish on their own: the script's end is the run's.
            await asyncio.wait_for(attacker if scripted else asyncio.gather(*tasks), timeout_s)
            if scripted and grace_s:  # the script played its part; the honest roles may still finish
                await asyncio.wait_for(asyncio.gather(*tasks), grace_s)
        except asyncio.TimeoutError:
            pass
        finally:
            # Stop as SIGTERM would (roles check at every message); cancel only what outlives that.
            for stop in stops.values():
                stop.set()
            await asyncio.wait(tasks, timeout=30)
            for t in tasks + ([attacker] if attacker else []):
                t.cancel()
            await asyncio.gather(*tasks, *([attacker] if attacker else []), return_exceptions=True)
        run.logs = list(logs)
    return run


def round_messages(run: Run) -> list[RoundMessage]:
    from services.executor.transport import Reassembler

    out, assembler = [], Reassembler(max_incomplete=1_000)
    for record in run.bus.records(topics.ROUNDS.name):
        m = assembler.add(codec.decode(record.value).event)
        if m is not None:
            out.append(m)
    return out
