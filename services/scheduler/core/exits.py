"""What an executor's exit means, given what the scheduler asked of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.errors import ConfigurationError, DataError, Suspended, TransientError
from shared.events import Phase

Intent = Literal["run", "suspend", "cancel"]
SIGTERM_EXITS = (Suspended.exit_code, -15)
SIGKILL_EXITS = (137, -9)


@dataclass(frozen=True)
class ExitMeaning:
    phase: Phase
    retriable: bool = False
    reason: str = ""


def classify_exit(code: int, intent: Intent) -> ExitMeaning:
    if code == 0:
        return ExitMeaning(Phase.SUCCEEDED)
    if intent == "cancel":
        return ExitMeaning(Phase.DELETED, reason="cancelled")
    if intent == "suspend" and (code in SIGTERM_EXITS or code in SIGKILL_EXITS):
        return ExitMeaning(Phase.SUSPENDED, reason="suspended")
    if code == TransientError.exit_code:
        return ExitMeaning(Phase.FAILED, True, "transient failure")
    if code in SIGTERM_EXITS or code in SIGKILL_EXITS:
        # Killed from outside without our asking: like a lost node or an eviction.
        return ExitMeaning(Phase.FAILED, True, f"executor killed (exit {code})")
    if code == ConfigurationError.exit_code:
        return ExitMeaning(Phase.FAILED, False, "configuration error")
    if code == DataError.exit_code:
        return ExitMeaning(Phase.FAILED, False, "data error")
    return ExitMeaning(Phase.FAILED, False, f"executor exited with {code}")
