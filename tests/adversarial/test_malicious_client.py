"""A client with a valid key that sends out-of-range input: refused, never averaged in."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.demo import HOSPITALS
from services.executor.transport import from_tensors
from shared.events import RoundKind
from tests.adversarial.harness import AGGREGATOR, prepare, run_step


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = tmp_path_factory.mktemp("malicious-client")
    prepare(path)
    return path


def test_oversized_weights_and_updates_from_an_authenticated_client_are_refused(work):
    """hospital-c (real key) claims 10^9 rows, then a negative count, then an update 1000x the
    flow's L2 bound; the aggregator refuses each and the honest clients' model still converges."""
    params = {"min_clients": 2, "round_timeout_s": 3.0, "update_clip_norm": 5.0, "rounds": 3}
    evil = "hospital-c"

    async def client(run):
        channel = await run.channel(evil).open()
        join = channel.message(RoundKind.JOIN, 0, recipient=AGGREGATOR, body=b"evil",
                               metrics={"n_features": 30, "n_classes": 2, "num_examples": 189})
        await channel.send(join)
        while True:
            m = await channel.receive(1.0)
            if m is None or m.sender != AGGREGATOR:
                continue
            if m.kind == RoundKind.JOIN:
                await channel.send(join)
            elif m.kind == RoundKind.FINAL:
                return
            elif m.kind == RoundKind.ANNOUNCE:
                g = from_tensors(m.tensors)
                count, scale = {1: (10 ** 9, 1.0), 2: (0, 1.0)}.get(m.round, (189, 1000.0))
                bad = {k: v + np.float32(scale) for k, v in g.items()}
                await channel.send(channel.message(RoundKind.UPDATE, m.round, recipient=AGGREGATOR, arrays=bad,
                                                   num_examples=count, metrics={"loss": 0.0}))

    run = asyncio.run(run_step(work, params=params, attack=client, scripted=(evil,), timeout_s=300, grace_s=120))
    assert all(run.exit_codes[p] == 0 for p in (AGGREGATOR, *HOSPITALS[:2])), run.exit_codes
    reasons = [r["reason"] for r in run.rejections(AGGREGATOR) if r["sender"] == evil]
    assert reasons == ["weight_out_of_range", "weight_out_of_range", "norm_out_of_range"]
    shown = [s for s in run.stages(AGGREGATOR) if s.startswith("rejected update")]
    assert len(shown) == 3 and "declared 189 training rows" in shown[0] and "update_clip_norm is 5.0" in shown[2]
    assert run.final_metrics(AGGREGATOR)["test_accuracy"] > 0.9
