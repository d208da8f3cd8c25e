"""The wire edge: generated code is current, every event round-trips, garbage is named."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from shared import events as e
from shared.errors import MalformedMessage
from shared.wire import codec
from shared.wire.codegen import main as codegen_main
from shared.wire.pb import envelope_pb2


def test_generated_code_matches_the_proto_files():
    assert codegen_main(["--check"]) == 0


SPEC = e.AlgorithmTaskSpec("a1", "t1", "f1", "train", "ferry.fedavg", "1", {"rounds": 3, "lr": 0.5},
                           "hospital-a", "client", (e.Peer("hospital-a", "client"), e.Peer("hub", "aggregator")),
                           "breast_cancer", 2)
SAMPLES = [
    e.FlowSubmitted("f1", "demo", (e.StepSpec("s", "ferry.noop", "1", {"sleep_s": 0.5, "tags": ["x"]},
                                              (e.PartyRole("a", "worker"),), ("p",)),), "me", {"team": "x"}),
    e.FlowRejected("f1", (e.FieldError("steps[0].name", "duplicate"),)),
    e.TaskPlanned("t1", "f1", "train", ("t0",), (SPEC,), ("t0", "t1"), 1, 42),
    e.TaskCommand("c1", e.CommandKind.SUSPEND, "f1", "t1", "alice", "maintenance"),
    e.JobEvent("a1", "t1", "f1", 2, e.JobAction.CREATED, "ferry-a1-a2", "local"),
    e.Observation("a1", "t1", "f1", 2, e.Phase.FAILED, "pod", 137, "Evicted", "node lost", True, "kubernetes", 9),
    e.ExecutorProgress("a1", "t1", "f1", 2, 3, 10, "training", {"loss": 0.25}),
    e.StateChanged(e.EntityKind.TASK, "t1", "f1", "t1", None, e.Status.RUNNING, 1, "ev", "Observation", "", 5),
    e.RoundMessage("f1", "t1", "train", 3, 1, "hospital-a", e.RoundKind.UPDATE, "hub",
                   (e.Tensor("w", "<f4", (2, 3), bytes(24)),), 120, {"loss": 1.5}, b"x", b"sig", "p", 0, 1, "ab"),
    e.DeadLetter("ferry.flows", 0, 7, b"k", b"\x00", "bad", "MalformedMessage", "splitter", 1),
]


def test_every_event_type_has_a_sample():
    assert {type(s) for s in SAMPLES} == set(typing.get_args(e.Event))


@pytest.mark.parametrize("event", SAMPLES, ids=lambda ev: type(ev).__name__)
def test_round_trip_preserves_the_event(event):
    envelope = e.Envelope(event, "id-1", "key-1", 7, "test/1", 1234)
    assert codec.decode(codec.encode(envelope)) == envelope


def test_task_spec_survives_the_environment_variable_form():
    assert codec.spec_from_text(codec.spec_to_text(SPEC)) == SPEC


@pytest.mark.parametrize("data, fragment", [
    (b"\xff\xff\xff", "not a ferry.v1.Envelope"),
    (envelope_pb2.Envelope(type="", payload=b"").SerializeToString(), "envelope.type is empty"),
    (envelope_pb2.Envelope(type="ferry.v1.Nope").SerializeToString(), "not a known event type"),
    (envelope_pb2.Envelope(type="ferry.v1.FlowRejected", schema_version=99).SerializeToString(), "newer"),
    (envelope_pb2.Envelope(type="ferry.v1.FlowRejected", payload=b"\xff\xff").SerializeToString(),
     "payload is not a ferry.v1.FlowRejected"),
])
def test_garbage_is_rejected_with_the_reason(data, fragment):
    with pytest.raises(MalformedMessage, match=fragment):
        codec.decode(data)


def test_unspecified_enum_is_malformed():
    envelope = e.Envelope(dataclasses.replace(SAMPLES[3]), "i", "k", 1, "p", 1)
    wire = envelope_pb2.Envelope()
    wire.ParseFromString(codec.encode(envelope))
    from shared.wire.pb import task_pb2
    cmd = task_pb2.TaskCommand()
    cmd.ParseFromString(wire.payload)
    cmd.kind = 0
    wire.payload = cmd.SerializeToString()
    with pytest.raises(MalformedMessage, match="CommandKind is unspecified"):
        codec.decode(wire.SerializeToString())


# The compiled fast paths (codec._encoder/_decoder) must agree with the generic field walk
# they replace, byte for byte and object for object, including the values that make the
# encoder fall back (a value of another type than declared, an optional enum left None).
ODD = [
    e.StateChanged(e.EntityKind.FLOW, "f1", "f1", "", None, e.Status.FAILED, 0, "", "", "why", 0),
    e.ExecutorProgress("a1", "t1", "f1", 1, 0, 0, "", {}),
    e.Observation("a1", "t1", "f1", 1, e.Phase.RUNNING, exit_code=True),  # a bool for an int: generic path
    e.FlowSubmitted("f2", "x", (), "", {}),
]


@pytest.mark.parametrize("event", SAMPLES + ODD, ids=lambda ev: type(ev).__name__)
def test_the_fast_converters_agree_with_the_generic_walk(event):
    fast = codec.to_wire(event).SerializeToString(deterministic=True)
    generic = codec._to_wire_generic(event).SerializeToString(deterministic=True)
    assert fast == generic
    wire = codec._wire_class(type(event))()
    wire.ParseFromString(generic)
    assert codec.from_wire(type(event), wire) == codec._from_wire_generic(type(event), wire)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda ev: type(ev).__name__)
def test_no_protobuf_object_outlives_the_wire_edge(event):
    """A decoded event holds domain values only: a map field is a dict, not protobuf's container
    (which kept the whole parsed message alive and made every read of it slow)."""
    decoded = codec.decode(codec.encode(e.Envelope(event, "id-1", "key-1", 7, "test/1", 1234))).event

    def walk(value):
        assert not type(value).__module__.startswith("google."), (type(event).__name__, type(value))
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, (tuple, list)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(decoded)


def _model_message(**changes) -> e.RoundMessage:
    import numpy as np

    weights = np.random.default_rng(1).standard_normal(50_000).astype(np.float32)
    message = e.RoundMessage("f1", "t1", "train", 2, 1, "a", e.RoundKind.UPDATE, "hub",
                             (e.Tensor("w", "<f4", (50_000,), memoryview(weights.view(np.uint8))),
                              e.Tensor("empty", "<f4", (0,), b"")),
                             10, {"loss": 0.25}, b'{"compression": "none"}', b"sig", nonce=b"n" * 16)
    return dataclasses.replace(message, **changes)


def test_a_round_message_carrying_a_model_is_protobuf_that_any_parser_reads():
    """Its tensors are spliced around protobuf's bytes (no copies), yet the record is plain protobuf."""
    message = _model_message()
    data = codec.encode(e.Envelope(message, "id1", "t1", 3, "a@ferry.rounds", 7))
    wire = envelope_pb2.Envelope.FromString(data)
    from shared.wire.pb import round_pb2

    parsed = round_pb2.RoundMessage.FromString(wire.payload)
    assert (wire.event_id, wire.sequence, parsed.sender, parsed.round, parsed.metrics["loss"]) == ("id1", 3, "a", 2, 0.25)
    assert parsed.tensors[0].data == bytes(message.tensors[0].data) and parsed.body == message.body
    assert [t.name for t in parsed.tensors] == ["w", "empty"] and list(parsed.tensors[0].shape) == [50_000]
    back = codec.decode(data).event
    assert back == message and isinstance(back.body, bytes)  # roles parse bodies: bytes, not a view
    assert codec.round_message_from_bytes(codec.round_message_to_bytes(message)) == message


def test_a_chunk_body_stays_a_view_and_a_truncated_record_is_malformed():
    chunk = _model_message(tensors=(), body=bytes(100_000), payload_id="p1", chunk_count=2)
    data = codec.encode(e.Envelope(chunk, "id1", "t1", 1, "a", 7))
    back = codec.decode(data).event
    assert isinstance(back.body, memoryview) and back == chunk
    with pytest.raises(MalformedMessage):
        codec.decode(data[:-10])
