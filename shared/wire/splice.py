"""Protobuf's wire format at the byte level, for the fields that carry whole models.

protobuf's Python runtime copies a bytes field every time it crosses the API:
into the message when it is set or parsed, into a new bytes object when it is
read or serialized. A 40 MB model on the round path went through a dozen such
copies per message on each side. The wire format lets us do better without
leaving it: a message's fields may come in any order, and a length-delimited
field's bytes are taken verbatim. So shared/wire/codec.py serializes the small
fields with protobuf and *splices* the large ones (Tensor.data,
RoundMessage.body, Envelope.payload) around them as (header, bytes) pairs, and
when decoding *carves* those fields out as memoryviews of the record before
protobuf parses what is left. What goes on the wire is a valid encoding of the
same message for any protobuf parser; only the field order differs from
protobuf's own serializer.
"""

from __future__ import annotations

from typing import Iterable

from shared.errors import MalformedMessage

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def header(field: int, length: int) -> bytes:
    """The tag and length that precede a length-delimited field's `length` bytes."""
    return varint(field << 3 | _LENGTH_DELIMITED) + varint(length)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise MalformedMessage("truncated or overlong varint in a protobuf message")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def carve(buf: memoryview, fields: Iterable[int]) -> tuple[bytes, dict[int, list[memoryview]]]:
    """(the message without `fields`, as bytes; each carved field's values as views of `buf`, in order).

    Only top-level fields are walked; nested messages stay opaque bytes. A carved field must be
    length-delimited. For a singular bytes field protobuf keeps the last value; callers do too.
    """
    wanted = frozenset(fields)
    kept: list[memoryview] = []
    found: dict[int, list[memoryview]] = {}
    pos, end, kept_from = 0, len(buf), 0
    while pos < end:
        start = pos
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _read_varint(buf, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, pos = _read_varint(buf, pos)
            if field in wanted:
                if pos + length > end:
                    raise MalformedMessage(f"field {field} runs past the end of its message")
                kept.append(buf[kept_from:start])
                found.setdefault(field, []).append(buf[pos:pos + length])
                pos += length
                kept_from = pos
                continue
            pos += length
        else:
            raise MalformedMessage(f"field {field} has wire type {wire_type}, which ferry.v1 never uses")
        if field == 0 or pos > end:
            raise MalformedMessage("a protobuf field runs past the end of its message")
        if field in wanted:
            raise MalformedMessage(f"field {field} is not length-delimited")
    kept.append(buf[kept_from:end])
    return b"".join(kept), found


def last(found: dict[int, list[memoryview]], field: int) -> memoryview | bytes:
    values = found.get(field)
    return values[-1] if values else b""
