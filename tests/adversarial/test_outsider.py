"""Attacks by anyone who can write to the rounds topic but holds no party's key.

Each test runs the real ferry.fedavg roles with an attacker beside them and shows
(1) the attack is refused, with its reason in the receiver's log (and the
ferry_round_messages_rejected_total metric), and (2) the run ends as the honest
one does: every party succeeds and the model reaches the very same accuracy.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from services.demo import HOSPITALS
from services.executor.federation.identity import Identity, Trust
from services.executor.transport import to_tensors
from shared import topics
from shared.clock import SystemClock
from shared.events import RoundKind, RoundMessage
from shared.messaging import EventPublisher
from shared.metrics import ROUND_MESSAGES_REJECTED
from tests.adversarial.harness import AGGREGATOR, prepare, round_messages, run_step


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = tmp_path_factory.mktemp("adversarial")
    prepare(path)
    return path


@pytest.fixture(scope="module")
def honest(work):
    run = asyncio.run(run_step(work))
    assert run.exit_codes == {p: 0 for p in run.specs}, run.exit_codes
    assert run.final_metrics(AGGREGATOR)["test_accuracy"] > 0.9
    assert not run.rejections()
    return run


async def _first(run, kind: RoundKind, round: int = 1, timeout_s: float = 60.0) -> RoundMessage:
    """The first whole message of this kind and round on the topic (what a topic reader sees)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        found = [m for m in round_messages(run) if m.kind == kind and m.round == round]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind.name} of round {round}")


def _mallory(party: str) -> Trust:
    """Someone posing as `party` with a key of its own (not the registry's)."""
    return Trust(Identity.generate(party), None)


async def _publish_raw(run, message: RoundMessage) -> None:
    """Written straight to the topic, where the step's receivers read (the layout is public)."""
    layout = await run.channel(AGGREGATOR).layout()
    partition = layout.destination(message.sender, message.recipient) if message.sender in layout.parties \
        else layout.inbox(message.recipient or AGGREGATOR)
    await EventPublisher(run.bus, "attacker", SystemClock()).publish_to_partitions(
        [(topics.ROUNDS.name, partition, run.task_id, message)])


def _same_outcome(run, honest) -> None:
    assert run.exit_codes == {p: 0 for p in run.specs}, run.exit_codes
    assert run.final_metrics(AGGREGATOR)["test_accuracy"] == honest.final_metrics(AGGREGATOR)["test_accuracy"]
    for party in HOSPITALS:
        assert run.final_metrics(party)["test_accuracy"] == honest.final_metrics(party)["test_accuracy"]


def test_a_forged_update_with_huge_weights_cannot_replace_the_global_model(work, honest):
    before = ROUND_MESSAGES_REJECTED.labels("UPDATE", "bad_signature")._value.get()

    async def attack(run):
        announce = await _first(run, RoundKind.ANNOUNCE)
        huge = {t.name: np.full(t.shape, 1e6, np.dtype(t.dtype)) for t in announce.tensors}
        forged = run.channel("hospital-a", _mallory("hospital-a"))
        await forged.send(forged.message(RoundKind.UPDATE, 1, recipient=AGGREGATOR, arrays=huge,
                                         num_examples=10 ** 9, metrics={"loss": 0.0}))

    run = asyncio.run(run_step(work, attack=attack))
    refused = run.rejections(AGGREGATOR, "bad_signature")
    assert refused and refused[0]["kind"] == "UPDATE" and refused[0]["sender"] == "hospital-a"
    assert "does not verify under hospital-a's pinned key" in refused[0]["detail"]
    assert ROUND_MESSAGES_REJECTED.labels("UPDATE", "bad_signature")._value.get() > before
    _same_outcome(run, honest)


def test_a_forged_final_model_is_not_saved_by_clients(work, honest):
    async def attack(run):
        announce = await _first(run, RoundKind.ANNOUNCE)
        zeros = {t.name: np.zeros(t.shape, np.dtype(t.dtype)) for t in announce.tensors}
        forged = run.channel(AGGREGATOR, _mallory(AGGREGATOR))
        await forged.send(forged.message(RoundKind.FINAL, 4, arrays=zeros, metrics=dict(announce.metrics)))

    run = asyncio.run(run_step(work, attack=attack))
    for party in HOSPITALS:
        assert [r["kind"] for r in run.rejections(party, "bad_signature")] == ["FINAL"]
    _same_outcome(run, honest)


def test_unsigned_messages_of_every_kind_are_refused(work, honest):
    async def attack(run):
        announce = await _first(run, RoundKind.ANNOUNCE)
        base = dataclasses.replace(announce, signature=b"", nonce=b"", payload_id="", chunk_count=0)
        for kind, sender, recipient in ((RoundKind.ANNOUNCE, AGGREGATOR, ""), (RoundKind.ABORT, AGGREGATOR, ""),
                                        (RoundKind.FINAL, AGGREGATOR, ""), (RoundKind.SECAGG, AGGREGATOR, ""),
                                        (RoundKind.JOIN, "hospital-b", AGGREGATOR),
                                        (RoundKind.UPDATE, "hospital-b", AGGREGATOR),
                                        (RoundKind.EVALUATION, "hospital-b", AGGREGATOR)):
            await _publish_raw(run, dataclasses.replace(base, kind=kind, sender=sender, recipient=recipient,
                                                        body=b"stop" if kind == RoundKind.ABORT else base.body))

    run = asyncio.run(run_step(work, attack=attack))
    to_clients = {r["kind"] for r in run.rejections("hospital-a", "unsigned")}
    assert to_clients == {"ANNOUNCE", "ABORT", "FINAL", "SECAGG"}
    assert {r["kind"] for r in run.rejections(AGGREGATOR, "unsigned")} == {"JOIN", "UPDATE", "EVALUATION"}
    _same_outcome(run, honest)


def test_replayed_messages_are_refused(work, honest):
    async def attack(run):
        announce1 = await _first(run, RoundKind.ANNOUNCE, 1)
        update1 = await _first(run, RoundKind.UPDATE, 1)
        await _first(run, RoundKind.ANNOUNCE, 2)
        for m in (announce1, update1):  # byte-for-byte copies, valid signatures and all
            for chunk in _chunks(m):
                await _publish_raw(run, chunk)

    run = asyncio.run(run_step(work, attack=attack))
    assert {r["kind"] for r in run.rejections("hospital-a", "replayed")} == {"ANNOUNCE"}
    assert {r["kind"] for r in run.rejections(AGGREGATOR, "replayed")} == {"UPDATE"}
    _same_outcome(run, honest)


def test_messages_from_a_party_outside_the_step_are_refused(work, honest):
    async def attack(run):
        await _first(run, RoundKind.ANNOUNCE)
        stranger = run.channel("hospital-a", _mallory("hospital-z"))
        message = stranger.message(RoundKind.JOIN, 0, recipient=AGGREGATOR)
        await stranger.send(dataclasses.replace(message, sender="hospital-z"))

    run = asyncio.run(run_step(work, attack=attack))
    assert [r["kind"] for r in run.rejections(AGGREGATOR, "unknown_sender")] == ["JOIN"]
    _same_outcome(run, honest)


def test_half_sent_payloads_cannot_exhaust_a_receiver(work, honest):
    async def attack(run):
        announce = await _first(run, RoundKind.ANNOUNCE)
        for i in range(50):  # 50 payloads, each missing its last chunk
            big = dataclasses.replace(announce, tensors=to_tensors({"x": np.full(30_000, i, np.float32)}))
            for chunk in _chunks(big, 20_000)[:-1]:
                await _publish_raw(run, chunk)

    run = asyncio.run(run_step(work, attack=attack))
    _same_outcome(run, honest)


def _chunks(message: RoundMessage, size: int = 900_000) -> list[RoundMessage]:
    from services.executor.transport import split

    return split(message, size)
