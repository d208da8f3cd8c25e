"""Where a step's round messages live on ferry.rounds: one inbox and one outbox partition per party.

A message addressed to a party goes to that party's inbox; a message to everyone
(recipient "") goes to its sender's outbox. A party reads its own inbox and the
outboxes of the others, so a client fetches the global model once and the
messages addressed to it, never another client's update; the aggregator fetches
the updates. Bytes fetched per round grow linearly with the number of parties
(docs/data-plane.md has the design and the alternatives).

Partitions are assigned explicitly, not by key hash: with 2 x parties <= the
topic's partition count no two of a step's streams share a partition (hashing
N+1 keys into 64 partitions collides more often than not at N = 10). A topic
with fewer partitions still works, the streams wrap around and share
partitions, and receivers drop what is not theirs, at the cost of fetching it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class RoundLayout:
    partitions: int
    base: int
    parties: tuple[str, ...]    # sorted, so every peer derives the same layout

    @classmethod
    def of(cls, task_id: str, parties: Iterable[str], partitions: int) -> "RoundLayout":
        if partitions < 1:
            raise ValueError(f"a rounds topic needs at least one partition, not {partitions}")
        return cls(partitions, zlib.crc32(task_id.encode()) % partitions, tuple(sorted(set(parties))))

    def _index(self, party: str) -> int:
        try:
            return self.parties.index(party)
        except ValueError:
            raise ValueError(f"party {party!r} is not a peer of this step (peers: {list(self.parties)})") from None

    def inbox(self, party: str) -> int:
        return (self.base + 2 * self._index(party)) % self.partitions

    def outbox(self, party: str) -> int:
        return (self.base + 2 * self._index(party) + 1) % self.partitions

    def destination(self, sender: str, recipient: str) -> int:
        return self.inbox(recipient) if recipient else self.outbox(sender)

    def listens(self, party: str) -> tuple[int, ...]:
        """The partitions `party` reads: its inbox and every other party's outbox."""
        return tuple(sorted({self.inbox(party)} | {self.outbox(p) for p in self.parties if p != party}))

    @property
    def overlapping(self) -> bool:
        """True when the topic is too small to give every stream of this step its own partition."""
        return 2 * len(self.parties) > self.partitions
