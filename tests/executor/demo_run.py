"""Run a variant of the demo flow on the embedded platform and read back what went over the bus.

The end-to-end tests of ferry.fedavg's options (secure aggregation, compression, DP,
local DP) each change the demo's train step and then inspect the flow's result, the
round messages (everything an aggregator could see) and the executors' progress.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from pathlib import Path

from services.demo import DEMO_FLOW, prepare_parties
from services.embedded import EmbeddedPlatform
from services.executor.transport import Reassembler
from services.splitter.core.flow_document import load_document, parse_flow_document
from shared import topics
from shared.events import ExecutorProgress, RoundMessage
from shared.wire import codec


@dataclass(frozen=True)
class DemoRun:
    view: dict                       # the monitor's view of the flow when it ended
    rounds: list[RoundMessage]       # every whole message on ferry.rounds, in order
    progress: list[ExecutorProgress]  # every executor progress report



def aggregator_of(view: dict, step: str) -> tuple[dict, dict]:
    """(task view, the aggregator's algorithm task view) of a training step in a flow view."""
    task = next(t for t in view["tasks"] if t["step"] == step)
    return task, next(a for a in task["algorithm_tasks"] if a["role"] == "aggregator")


def demo_document() -> dict:
    """A fresh copy of examples/flows/demo_breast_cancer.yaml as a dict, to edit."""
    return copy.deepcopy(dict(load_document(DEMO_FLOW.read_text())))


def run_demo_variant(work: Path, document: dict, name: str, timeout_s: float = 300) -> DemoRun:
    prepare_parties(work)
    flow = parse_flow_document(document, default_flow_id=f"{name}-{int(time.time())}")

    async def go() -> DemoRun:
        async with EmbeddedPlatform(work) as platform:
            await platform.submit(flow)
            view = await platform.wait_for(flow.flow_id, timeout_s=timeout_s)
            assembler, rounds = Reassembler(), []
            for record in platform.bus.records(topics.ROUNDS.name):
                message = assembler.add(codec.decode(record.value).event)
                if message is not None:
                    rounds.append(message)
            progress = [codec.decode(r.value).event for r in platform.bus.records(topics.PROGRESS.name)]
            return DemoRun(view, rounds, progress)

    return asyncio.run(go())
