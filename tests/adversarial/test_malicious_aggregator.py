"""A malicious aggregator holding the real coordinator key, against honest clients.

The honest clients run as the executor runs them; the aggregator is a script
that signs with the coordinator's pinned key and tries the attacks of issue
10: running a round twice with different cohorts, handing out a model that is
not the one it committed to, and shrinking the cohort or the threshold so that
a colluding client could subtract its own input from a sum. Each refusal shows
in the client's log (round.message_rejected with a reason) and in its progress.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from services.demo import HOSPITALS
from services.executor.federation.transcript import setup_for
from services.executor.ml.models import ModelSpec, build_model, get_weights
from shared.events import RoundKind
from tests.adversarial.harness import AGGREGATOR, PARAMS, prepare, run_step

SHAPE = {"n_features": 30, "n_classes": 2}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = tmp_path_factory.mktemp("malicious-aggregator")
    prepare(path)
    return path


async def _open(run):
    """The coordinator's real channel, after every honest client joined."""
    channel = await run.channel(AGGREGATOR).open()
    await channel.send(channel.message(RoundKind.JOIN, 0))
    joined = set()
    while joined != set(HOSPITALS):
        m = await channel.receive(120.0)
        assert m is not None, f"only {sorted(joined)} joined"
        if m.kind == RoundKind.JOIN:
            joined.add(m.sender)
    return channel


async def _until_refused(run, party: str, timeout_s: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline and not any(s.startswith("refused ANNOUNCE") for s in run.stages(party)):
        await asyncio.sleep(0.1)


def _model(params, seed=7):
    return get_weights(build_model(ModelSpec.from_params({**PARAMS, **params}, 30, 2), seed))


async def _updates(channel, round: int, want: int, timeout_s: float = 120.0) -> list:
    got = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(got) < want and loop.time() < deadline:
        m = await channel.receive(0.5)
        if m is not None and m.kind == RoundKind.UPDATE and m.round == round:
            got.append(m)
    return got


def _refusals(run, party, reason):
    logged = [r for r in run.rejections(party, reason) if r["kind"] == "ANNOUNCE"]
    shown = [s for s in run.stages(party) if s.startswith("refused ANNOUNCE") and reason in s]
    return logged, shown


def test_a_round_run_twice_with_another_cohort_is_refused(work):
    """Deterministic local training: two sums of the same round over different cohorts
    would reveal the update of whoever is in one cohort and not the other."""
    params = {"min_clients": 2}
    seen = {}

    async def aggregator(run):
        channel = await _open(run)
        global_w = _model(params)
        p = {**PARAMS, **params}
        first = setup_for(p, round=1, attempt=1, global_w=global_w, shape=SHAPE, cohort=HOSPITALS)
        await channel.send(channel.message(RoundKind.ANNOUNCE, 1, arrays=global_w, metrics=SHAPE,
                                           body=first.to_body()))
        seen["first"] = await _updates(channel, 1, 3)
        again = setup_for(p, round=1, attempt=1, global_w=global_w, shape=SHAPE, cohort=HOSPITALS[:2])
        await channel.send(channel.message(RoundKind.ANNOUNCE, 1, arrays=global_w, metrics=SHAPE,
                                           body=again.to_body()))
        for party in HOSPITALS[:2]:
            await _until_refused(run, party)
        seen["second"] = await _updates(channel, 1, 2, timeout_s=2.0)

    run = asyncio.run(run_step(work, params=params, attack=aggregator, scripted=(AGGREGATOR,), timeout_s=300))
    assert len(seen["first"]) == 3 and seen["second"] == []
    for party in HOSPITALS[:2]:
        logged, shown = _refusals(run, party, "second_announce")
        assert logged and shown, run.stages(party)
        assert "already answered round 1 of attempt 1" in logged[0]["detail"]


def test_a_model_other_than_the_committed_one_is_refused(work):
    async def aggregator(run):
        channel = await _open(run)
        committed = _model({})
        setup = setup_for(PARAMS, round=1, attempt=1, global_w=committed, shape=SHAPE, cohort=HOSPITALS)
        other = {k: v + np.float32(0.5) for k, v in committed.items()}
        await channel.send(channel.message(RoundKind.ANNOUNCE, 1, recipient="hospital-a", arrays=other,
                                           metrics=SHAPE, body=setup.to_body()))
        await _until_refused(run, "hospital-a")

    run = asyncio.run(run_step(work, attack=aggregator, scripted=(AGGREGATOR,), timeout_s=300))
    logged, shown = _refusals(run, "hospital-a", "model_digest")
    assert logged and shown and "does not match the signed digest" in shown[0]


@pytest.mark.parametrize("tamper, reason", [
    (lambda s: dataclasses.replace(s, cohort=("hospital-a", "hospital-b"), min_cohort=2), "cohort_too_small"),
    (lambda s: dataclasses.replace(s, threshold=1), "threshold"),
    (lambda s: dataclasses.replace(s, clip=1e6), "wrong_bounds"),
    (lambda s: dataclasses.replace(s, graph="sparse"), "wrong_mode"),   # the flow chose the full graph
])
def test_a_secure_round_below_the_flows_minimums_is_refused(work, tamper, reason):
    """A cohort of two (or t = 1) lets one colluding client turn the sum into the other's update."""
    params = {"secure_aggregation": True, "min_clients": 2}

    async def aggregator(run):
        channel = await _open(run)
        global_w = _model(params)
        honest = setup_for({**PARAMS, **params}, round=1, attempt=1, global_w=global_w, shape=SHAPE,
                           cohort=HOSPITALS, clip=4.0, weight_scale=190.0)
        await channel.send(channel.message(RoundKind.ANNOUNCE, 1, arrays=global_w, metrics=SHAPE,
                                           body=tamper(honest).to_body()))
        await _until_refused(run, "hospital-a")

    run = asyncio.run(run_step(work, params=params, attack=aggregator, scripted=(AGGREGATOR,), timeout_s=300))
    logged, shown = _refusals(run, "hospital-a", reason)
    assert logged and shown, (run.stages("hospital-a"), run.rejections())
    assert not [r for r in run.logs if r["event"] == "secagg.message_rejected"]  # nothing was shared
