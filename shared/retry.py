"""Explicit backoff policies; settings decide the numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class BackoffPolicy:
    initial_s: float = 0.2
    multiplier: float = 2.0
    max_delay_s: float = 10.0
    max_attempts: int = 8   # attempts in all, the first included

    def delays(self) -> Iterator[float]:
        """Delays before attempt 2, 3, ... max_attempts."""
        delay = self.initial_s
        for _ in range(self.max_attempts - 1):
            yield min(delay, self.max_delay_s)
            delay *= self.multiplier
