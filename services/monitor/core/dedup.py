"""Duplicate dropping by the envelope's per-(producer, key) sequence.

The sequences live in the entry an event belongs to (task or flow), so the
entry's snapshot carries its own dedup state and a restart neither loses nor
re-applies an event. A sequence of 0 means "not sequenced": always applied.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.monitor.core.draft import Draft
from services.monitor.core.effects import DuplicateDropped
from shared.events import Envelope


def duplicate(draft: Draft, sequences: Mapping[tuple[str, str], int]) -> bool:
    env = draft.env
    if env.sequence and env.sequence <= sequences.get((env.producer, env.key), 0):
        draft.emit(DuplicateDropped(env.producer, env.key, env.sequence,
                                    sequences[(env.producer, env.key)], env.event_id))
        return True
    return False


def seen(sequences: Mapping[tuple[str, str], int], env: Envelope) -> Mapping[tuple[str, str], int]:
    if not env.sequence:
        return sequences
    updated = dict(sequences)
    updated[(env.producer, env.key)] = env.sequence
    return updated
