"""Signed round messages: every receiver refuses what its sender's pinned key did not sign for this step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.executor.federation.identity import Identity, in_memory_federation
from services.executor.federation.signing import RejectedMessage, Verifier, sign_message
from services.executor.transport import to_tensors
from shared.events import AlgorithmTaskSpec, Peer, RoundKind, RoundMessage

PEERS = (Peer("a", "client"), Peer("b", "client"), Peer("hub", "aggregator"))
KEYS = in_memory_federation(["a", "b", "hub"])


def _task(party: str, attempt: int = 1) -> AlgorithmTaskSpec:
    return AlgorithmTaskSpec(f"t1.{party}", "t1", "f", "train", "ferry.fedavg", "1", {}, party, "client", PEERS,
                             attempt=attempt)


def _update(sender: str = "a", **changes) -> RoundMessage:
    m = RoundMessage("f", "t1", "train", 3, 1, sender, RoundKind.UPDATE, "hub",
                     to_tensors({"w": np.arange(4, dtype=np.float32)}), 10, {"loss": 0.5})
    return dataclasses.replace(m, **changes)


def _reason(verifier: Verifier, m: RoundMessage) -> str:
    with pytest.raises(RejectedMessage) as info:
        verifier.check(m)
    return info.value.reason


def test_a_signed_message_verifies_once_and_its_replay_is_refused():
    verifier = Verifier(_task("hub"), KEYS["hub"].registry)
    m = sign_message(_update(), KEYS["a"].identity)
    verifier.check(m)
    assert _reason(verifier, m) == "replayed"
    verifier.check(sign_message(_update(), KEYS["a"].identity))  # the same content sent again is a new message


@pytest.mark.parametrize("change", [
    {"num_examples": 1_000_000_000}, {"metrics": {"loss": 0.0}}, {"round": 4}, {"attempt": 2},
    {"recipient": ""}, {"kind": RoundKind.FINAL}, {"body": b"x"},
    {"tensors": to_tensors({"w": np.full(4, 1e6, dtype=np.float32)})}])
def test_any_change_after_signing_is_refused(change):
    verifier = Verifier(_task("hub"), KEYS["hub"].registry)
    signed = sign_message(_update(), KEYS["a"].identity)
    assert _reason(verifier, dataclasses.replace(signed, **change)) == "bad_signature"


def test_unsigned_forged_and_impersonating_messages_are_refused():
    verifier = Verifier(_task("hub"), KEYS["hub"].registry)
    assert _reason(verifier, _update()) == "unsigned"
    mallory = Identity.generate("a")  # claims to be a, with a key of its own
    assert _reason(verifier, sign_message(_update(), mallory)) == "bad_signature"
    b_as_a = dataclasses.replace(sign_message(_update(sender="b"), KEYS["b"].identity), sender="a")
    assert _reason(verifier, b_as_a) == "bad_signature"
    assert _reason(verifier, sign_message(_update(sender="zed"), Identity.generate("zed"))) == "unknown_sender"


def test_messages_of_another_step_or_for_another_party_are_refused():
    verifier = Verifier(_task("hub"), KEYS["hub"].registry)
    assert _reason(verifier, sign_message(_update(task_id="t2"), KEYS["a"].identity)) == "other_task"
    assert _reason(verifier, sign_message(_update(flow_id="g"), KEYS["a"].identity)) == "other_task"
    assert _reason(verifier, sign_message(_update(recipient="b"), KEYS["a"].identity)) == "other_recipient"


def test_a_senders_older_attempt_is_refused_once_a_newer_one_spoke():
    verifier = Verifier(_task("a"), KEYS["a"].registry)
    announce = RoundMessage("f", "t1", "train", 5, 2, "hub", RoundKind.ANNOUNCE)
    verifier.check(sign_message(announce, KEYS["hub"].identity))
    old = sign_message(dataclasses.replace(announce, attempt=1, round=6), KEYS["hub"].identity)
    assert _reason(verifier, old) == "stale_attempt"


def test_the_insecure_development_mode_checks_context_but_not_keys():
    verifier = Verifier(_task("hub"), None)
    verifier.check(_update())
    assert _reason(verifier, sign_message(_update(task_id="t2"), Identity.generate("a"))) == "other_task"
