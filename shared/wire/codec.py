"""The one place where protobuf meets domain types.

`encode(envelope) -> bytes` and `decode(bytes) -> Envelope`; everything else
in Ferry sees only the frozen dataclasses of shared.events. The conversion is
driven by field names: each domain dataclass has a wire message of the same
name whose fields carry the same names, and domain IntEnums use the wire
enum numbers (0 is always "unspecified" on the wire and None in the domain).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import cache
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError, Message

from shared import events
from shared.errors import MalformedMessage
from shared.wire.pb import dead_letter_pb2, envelope_pb2, flow_pb2, round_pb2, task_pb2

SCHEMA_VERSION = 1
_PB_MODULES = (flow_pb2, task_pb2, round_pb2, dead_letter_pb2)


@cache
def _wire_class(domain_cls: type) -> type[Message]:
    for module in _PB_MODULES:
        cls = getattr(module, domain_cls.__name__, None)
        if cls is not None:
            return cls
    raise KeyError(domain_cls.__name__)


EVENT_TYPES: dict[str, type] = {
    _wire_class(cls).DESCRIPTOR.full_name: cls for cls in typing.get_args(events.Event)
}


@cache
def _field_types(domain_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(domain_cls)


def to_wire(obj: Any) -> Message:
    msg = _wire_class(type(obj))()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        target = getattr(msg, f.name)
        if isinstance(value, enum.Enum):
            setattr(msg, f.name, int(value))
        elif value is None:
            continue
        elif isinstance(target, struct_pb2.Struct):
            target.update(dict(value))
        elif isinstance(value, tuple):
            for item in value:
                if dataclasses.is_dataclass(item):
                    target.add().CopyFrom(to_wire(item))
                else:
                    target.append(item)
        elif isinstance(value, typing.Mapping):
            target.update(value)
        elif dataclasses.is_dataclass(value):
            target.CopyFrom(to_wire(value))
        else:
            setattr(msg, f.name, value)
    return msg


def _plain(value: Any) -> Any:
    """Struct values come back as floats; integral ones were ints when sent."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _from_field(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        inner = next(a for a in args if a is not type(None))
        if isinstance(inner, type) and issubclass(inner, enum.Enum) and value == 0:
            return None
        return _from_field(inner, value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value == 0:
            raise MalformedMessage(f"enum {hint.__name__} is unspecified")
        try:
            return hint(value)
        except ValueError as exc:
            raise MalformedMessage(f"unknown {hint.__name__} value {value}") from exc
    if isinstance(value, struct_pb2.Struct):
        return _plain(dict(_struct_to_python(value)))
    if origin is tuple:
        item = args[0]
        if dataclasses.is_dataclass(item):
            return tuple(from_wire(item, v) for v in value)
        return tuple(value)
    if origin in (typing.Mapping, dict) or hint is typing.Mapping:
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return from_wire(hint, value)
    return value


def _struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(struct)


def from_wire(domain_cls: type, msg: Message) -> Any:
    hints = _field_types(domain_cls)
    kwargs = {f.name: _from_field(hints[f.name], getattr(msg, f.name))
              for f in dataclasses.fields(domain_cls)}
    return domain_cls(**kwargs)


def encode(envelope: events.Envelope) -> bytes:
    wire = envelope_pb2.Envelope(
        event_id=envelope.event_id,
        type=_wire_class(type(envelope.event)).DESCRIPTOR.full_name,
        key=envelope.key,
        sequence=envelope.sequence,
        producer=envelope.producer,
        timestamp_ms=envelope.timestamp_ms,
        schema_version=envelope.schema_version,
        payload=to_wire(envelope.event).SerializeToString(deterministic=True),
    )
    return wire.SerializeToString(deterministic=True)


def decode(data: bytes) -> events.Envelope:
    """Bytes from the wire to an Envelope, or MalformedMessage saying why not."""
    wire = envelope_pb2.Envelope()
    try:
        wire.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedMessage(f"not a ferry.v1.Envelope: {exc}") from exc
    if not wire.type:
        raise MalformedMessage("envelope.type is empty")
    domain_cls = EVENT_TYPES.get(wire.type)
    if domain_cls is None:
        raise MalformedMessage(f"envelope.type {wire.type!r} is not a known event type")
    if wire.schema_version > SCHEMA_VERSION:
        raise MalformedMessage(
            f"envelope.schema_version {wire.schema_version} is newer than {SCHEMA_VERSION}")
    payload = _wire_class(domain_cls)()
    try:
        payload.ParseFromString(wire.payload)
    except DecodeError as exc:
        raise MalformedMessage(f"payload is not a {wire.type}: {exc}") from exc
    event = from_wire(domain_cls, payload)
    return events.Envelope(
        event=event, event_id=wire.event_id, key=wire.key, sequence=wire.sequence,
        producer=wire.producer, timestamp_ms=wire.timestamp_ms,
        schema_version=wire.schema_version,
    )


def spec_to_text(spec: events.AlgorithmTaskSpec) -> str:
    """An algorithm task as one environment-variable-safe string (base64 protobuf)."""
    import base64

    return base64.b64encode(to_wire(spec).SerializeToString(deterministic=True)).decode()


def spec_from_text(text: str) -> events.AlgorithmTaskSpec:
    import base64
    import binascii

    try:
        raw = base64.b64decode(text, validate=True)
        msg = _wire_class(events.AlgorithmTaskSpec)()
        msg.ParseFromString(raw)
    except (binascii.Error, DecodeError) as exc:
        raise MalformedMessage(f"FERRY_TASK_SPEC is not a base64 ferry.v1.AlgorithmTaskSpec: {exc}") from exc
    return from_wire(events.AlgorithmTaskSpec, msg)


def round_message_to_bytes(message: events.RoundMessage) -> bytes:
    """A RoundMessage as bytes, for splitting a large one into chunks."""
    return to_wire(message).SerializeToString(deterministic=True)


def round_message_from_bytes(data: bytes) -> events.RoundMessage:
    msg = _wire_class(events.RoundMessage)()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedMessage(f"reassembled payload is not a ferry.v1.RoundMessage: {exc}") from exc
    return from_wire(events.RoundMessage, msg)
