"""decide(): what one fact or command does to one algorithm task.

Order of the checks: commands read the table (terminal statuses reject them);
terminal statuses absorb every fact; a fact of another attempt is fenced off
(newer: anomaly; older: ignored, except the stop confirmation below); only
then does the table speak, with its rules resolved against the event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.monitor.core.liveness import heard_since
from services.monitor.core.state import AlgoTask
from services.monitor.core.transitions import (COMMAND_FACTS, PAST_TENSE, SIGNAL_EXITS, TABLE, ByDispatch,
                                               Fact, Rule)
from shared.events import JobEvent, Observation, Status
from shared.plain import slots_constructor


class Verdict(enum.Enum):
    APPLY = "apply"
    KEEP = "keep"
    IGNORE = "ignore"
    ANOMALY = "anomaly"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    to_status: Status | None = None
    attempt: int = 0
    reason: str = ""


_decision = slots_constructor(Decision)  # Decision(...), built without a frozen setattr per field: one per fact


KEEP = _decision(Verdict.KEEP)
TERMINAL = frozenset(s for s in Status if s.terminal)
COMMANDS = frozenset(COMMAND_FACTS.values())
_STOP_CONFIRMATIONS = {
    Status.SUSPENDING: (frozenset({Fact.JOB_SUSPENDED, Fact.SEEN_SUSPENDED}), Status.SUSPENDED),
    Status.CANCELLING: (frozenset({Fact.JOB_DELETED, Fact.SEEN_DELETED}), Status.CANCELLED),
}


def decide(algo: AlgoTask, fact: Fact, event, max_attempts: int) -> Decision:
    """What `fact` (carried by `event`) does to `algo`; the only reader of TABLE."""
    if fact in COMMANDS:
        return _decide_command(algo, fact)
    status = algo.status
    if status in TERMINAL:
        if fact is Fact.PROGRESS and event.attempt == algo.attempt:
            # An executor's final report may arrive after its exit was observed (other
            # topic): its metrics are facts worth keeping; the status stays terminal.
            return KEEP
        return _decision(Verdict.IGNORE, reason=f"{fact.value} after the terminal {status.name}")
    if event.attempt != algo.attempt:
        return _other_attempt(algo, fact, event.attempt)
    if heard_since(algo.updated_at_ms, event):
        return _decision(Verdict.IGNORE, reason="declared lost, but heard from since")
    outcome = TABLE[status][fact]
    if type(outcome) is Status:
        return _decision(Verdict.APPLY, outcome, algo.attempt, _because(fact, event))
    if outcome is Rule.KEEP:
        return KEEP
    if outcome is Rule.FAIL:
        return _fail(algo, fact, event, max_attempts)
    if outcome is Rule.STOPPED_EXIT:
        if event.exit_code in SIGNAL_EXITS or event.retriable:
            return _decision(Verdict.APPLY, Status.SUSPENDED, algo.attempt,
                            "executor stopped while suspending: " + _detail(event))
        return _fail(algo, fact, event, max_attempts)
    if outcome is Rule.LEFTOVER_EXIT:
        return KEEP if event.exit_code in SIGNAL_EXITS else _fail(algo, fact, event, max_attempts)
    return _decision(Verdict.ANOMALY, reason=f"{fact.value} is not expected while {status.name}")


def _other_attempt(algo: AlgoTask, fact: Fact, attempt: int) -> Decision:
    if attempt > algo.attempt:
        return _decision(Verdict.ANOMALY, reason=(
            f"{fact.value} for attempt {attempt}, but attempt {algo.attempt} is current"))
    # The scheduler suspends or cancels the attempt it dispatched last; if the
    # retry was never dispatched, that older attempt's stop is the confirmation.
    facts, target = _STOP_CONFIRMATIONS.get(algo.status, ((), None))
    if fact in facts and algo.job_attempt < algo.attempt:
        return _decision(Verdict.APPLY, target, algo.attempt, (
            f"{fact.value} for attempt {attempt}; attempt {algo.attempt} never had a job"))
    return _decision(Verdict.IGNORE, reason=(
        f"{fact.value} from stale attempt {attempt}; attempt {algo.attempt} is current"))


def _fail(algo: AlgoTask, fact: Fact, event, max_attempts: int) -> Decision:
    attempt, detail = algo.attempt, _because(fact, event)
    if event.retriable and attempt < max_attempts:
        return _decision(Verdict.APPLY, Status.RETRYING, attempt + 1, (
            f"attempt {attempt} failed ({detail}); retrying as attempt {attempt + 1} of {max_attempts}"))
    why = f"no attempts left of {max_attempts}" if event.retriable else "not retriable"
    return _decision(Verdict.APPLY, Status.FAILED, attempt, f"attempt {attempt} failed ({detail}); {why}")


def _decide_command(algo: AlgoTask, fact: Fact) -> Decision:
    status = algo.status
    outcome = Rule.REJECT if status in TERMINAL else TABLE[status][fact]
    if outcome is Rule.REJECT:
        return _decision(Verdict.REJECT, reason=why_not(fact, status))
    if type(outcome) is ByDispatch:
        outcome = outcome.had_job if algo.dispatched else outcome.never_had_job
    return _decision(Verdict.APPLY, outcome, algo.attempt, f"{fact.value} requested")


def why_not(fact: Fact, status: Status) -> str:
    allowed = [s.name for s, row in TABLE.items() if row[fact] is not Rule.REJECT]
    return (f"cannot {fact.value} a {status.name} task; only {', '.join(allowed)} "
            f"tasks can be {PAST_TENSE[fact]}")


def _because(fact: Fact, event) -> str:
    detail = _detail(event)
    return f"{fact.value}: {detail}" if detail else fact.value


def _detail(event) -> str:
    if type(event) is Observation:
        parts = [event.reason, f"exit code {event.exit_code}" if event.exit_code else "",
                 event.message[:300]]
        return "; ".join(p for p in parts if p)
    if type(event) is JobEvent:
        return event.reason
    return ""
