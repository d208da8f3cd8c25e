"""Cost of secure aggregation: `python -m services.executor.secagg.bench [--flow]`.

1. Protocol compute per round (all parties in one process, no I/O), for the
   demo's size and larger ones: the crypto the protocol adds.
2. With --flow: the demo's train step on the embedded platform, plain and
   secure, alternated; seconds per round from the aggregator's progress events.
"""

from __future__ import annotations

import asyncio
import copy
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .client import client_start, client_step
from .crypto import RoundContext
from .keys import KeyRing
from .messages import Stage
from .server import server_advance, server_receive, server_result, server_start


@dataclass(frozen=True)
class ProtocolRun:
    wall_s: float
    cpu_s: float
    degree: int                  # key agreements, shares and pair masks per client
    threshold: int
    messages_per_client: float   # encrypted shares a client sends (mean): n - 1 full, k sparse


def protocol_seconds(n: int, length: int, *, graph: str = "full", dropouts: int = 0) -> ProtocolRun:
    """One round for n clients and `length` words, all parties in this process; the last `dropouts`
    clients vanish after sharing their keys (before masking), so unmasking removes their pair masks."""
    ctx = RoundContext("bench", "bench.train", "train", 1, 1, transcript="bench")
    names = [f"c{i:03d}" for i in range(n)]
    rings = KeyRing.federation([*names, "agg"])
    codes = np.zeros(length, dtype=np.uint32)
    gone = set(names[n - dropouts:]) if dropouts else set()
    sent_shares = []
    started, cpu = time.perf_counter(), time.process_time()
    server = server_start(ctx, rings["agg"], names, length, graph=graph)
    clients = {}
    for p in names:
        clients[p], out = client_start(ctx, p, "agg", rings[p], codes, cohort=names, graph=graph)
        for m in out:
            server = server_receive(server, m)
    while server.collecting is not Stage.DONE:
        stage = server.collecting
        server, out = server_advance(server)
        for m in out:
            for p in names:
                if m.recipient in ("", p) and not (p in gone and stage is not Stage.ADVERTISE):
                    clients[p], replies = client_step(clients[p], m)
                    for r in replies:
                        if r.stage is Stage.SHARES:
                            sent_shares.append(len(r.blobs))
                        server = server_receive(server, r)
    total, survivors = server_result(server)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if len(survivors) != n - dropouts or np.any(total):
        raise AssertionError(f"{graph} graph: the sum did not unmask to zero over {len(survivors)} survivors")
    degree = len(server.graph[names[0]]) if server.graph is not None else n - 1
    return ProtocolRun(wall, cpu, degree, server.threshold, float(np.mean(sent_shares)))


async def _flow_round_seconds(secure: bool) -> list[float]:
    from services.demo import DEMO_FLOW, prepare_parties
    from services.embedded import EmbeddedPlatform
    from services.splitter.core.flow_document import load_document, parse_flow_document
    from shared import topics
    from shared.wire import codec

    document = copy.deepcopy(dict(load_document(DEMO_FLOW.read_text())))
    document["steps"] = [s for s in document["steps"] if s["name"] in ("validate", "standardise", "train")]
    next(s for s in document["steps"] if s["name"] == "train")["params"]["secure_aggregation"] = secure
    with tempfile.TemporaryDirectory() as tmp:
        prepare_parties(Path(tmp))
        flow = parse_flow_document(document, default_flow_id=f"bench-{'secure' if secure else 'plain'}-{time.time_ns()}")
        async with EmbeddedPlatform(Path(tmp)) as platform:
            await platform.submit(flow)
            view = await platform.wait_for(flow.flow_id, timeout_s=600)
            assert view["status"] == "SUCCEEDED", view
            stamps = sorted((e.event.round, e.timestamp_ms) for e in map(codec.decode, (r.value for r in
                            platform.bus.records(topics.PROGRESS.name)))
                            if e.event.stage == "training" and e.event.algo_task_id.endswith("aggregator")
                            and ".train" in e.event.task_id)
    times = [t for _, t in stamps]
    return [(b - a) / 1000 for a, b in zip(times, times[1:])]


def main(argv: list[str]) -> None:
    for n, length in ((3, 65), (3, 100_000), (10, 100_000), (3, 1_000_000)):
        wall, cpu = min((r.wall_s, r.cpu_s) for r in (protocol_seconds(n, length) for _ in range(3)))
        print(f"protocol compute, {n} clients x {length} words: {1000 * wall:.1f} ms wall, "
              f"{1000 * cpu:.1f} ms CPU per round (best of 3)")
    if "--flow" in argv:
        import torch

        from shared.logging import configure_logging
        configure_logging("WARNING", json=True)
        torch.set_num_threads(1)
        results = {False: [], True: []}
        for _ in range(int(argv[argv.index("--flow") + 1]) if len(argv) > argv.index("--flow") + 1 else 2):
            for secure in (False, True):
                results[secure] += asyncio.run(_flow_round_seconds(secure))
        for secure, rounds in results.items():
            print(f"demo train step, {'secure' if secure else 'plain '}: median {1000 * statistics.median(rounds):.0f} ms "
                  f"per round, mean {1000 * statistics.mean(rounds):.0f} ms ({len(rounds)} rounds)")


if __name__ == "__main__":
    main(sys.argv[1:])
