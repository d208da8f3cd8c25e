"""The rules about who takes part in a step: party names, roles, counts and data.

Paths name a party the way a flow document does, by role and position within
the role, e.g. ``steps[2].parties.client[1]``; `FlowSubmitted` keeps the
parties of a step as one flat tuple, and the k-th PartyRole with role r is
entry k of r's list in the document.
"""

from __future__ import annotations

import difflib
from collections import Counter

from services.splitter.core.naming import SAFE_NAME_RULE, is_safe_name
from shared.algorithms import AlgorithmSpec
from shared.events import FieldError, StepSpec


def party_errors(step: StepSpec, path: str, spec: AlgorithmSpec | None, known_parties: frozenset[str] | None,
                 max_parties: int) -> list[FieldError]:
    """Every problem with the parties of `step` (at `path`, e.g. "steps[2]")."""
    where = f"{path}.parties"
    if not step.parties:
        return [FieldError(where, "a step needs at least one party")]
    errors = []
    if len(step.parties) > max_parties:
        errors.append(FieldError(where, f"has {len(step.parties)} parties; the limit is {max_parties}"))
    errors += _entry_errors(step, where, spec, known_parties)
    if spec is not None:
        errors += _role_errors(step, where, spec)
    return errors


def _entry_errors(step: StepSpec, where: str, spec: AlgorithmSpec | None,
                  known_parties: frozenset[str] | None) -> list[FieldError]:
    errors = []
    first_seen: dict[str, str] = {}
    position_in_role: Counter[str] = Counter()
    for entry in step.parties:
        path = f"{where}.{entry.role}[{position_in_role[entry.role]}]"
        position_in_role[entry.role] += 1
        if not entry.party:
            errors.append(FieldError(path, "party name must not be empty"))
            continue
        if not is_safe_name(entry.party):
            errors.append(FieldError(path, f"party name '{entry.party}' {SAFE_NAME_RULE}"))
        elif known_parties is not None and entry.party not in known_parties:
            errors.append(FieldError(path, f"unknown party '{entry.party}'{_suggestion(entry.party, known_parties)}"))
        if entry.party in first_seen:
            # a party is one peer per step: messages between peers are addressed by party
            errors.append(FieldError(path, f"party '{entry.party}' is already in this step at "
                                           f"{first_seen[entry.party]}; a party takes one role per step"))
        else:
            first_seen[entry.party] = path
        role = spec.role(entry.role) if spec is not None else None
        if role is not None and role.needs_data and not entry.data_ref:
            errors.append(FieldError(path, f"role '{entry.role}' of {spec.name} needs data: add "
                                           f"{{party: {entry.party}, data: DATASET}} here or a default "
                                           f"under parties.{entry.party}.data"))
    return errors


def _role_errors(step: StepSpec, where: str, spec: AlgorithmSpec) -> list[FieldError]:
    counts = Counter(entry.role for entry in step.parties)
    declared = [r.name for r in spec.roles]
    errors = []
    for role in counts:
        if spec.role(role) is None:
            close = difflib.get_close_matches(role, declared, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            errors.append(FieldError(f"{where}.{role}", f"role '{role}' is not defined by {spec.name} "
                                                        f"{spec.version}{hint} (roles: {', '.join(declared)})"))
    for role in spec.roles:
        got = counts.get(role.name, 0)
        if got < role.min_parties:
            errors.append(FieldError(f"{where}.{role.name}", f"{spec.name} needs at least {role.min_parties} "
                                                             f"{_parties(role.min_parties)} as '{role.name}', "
                                                             f"got {got}"))
        if role.max_parties is not None and got > role.max_parties:
            errors.append(FieldError(f"{where}.{role.name}", f"{spec.name} allows at most {role.max_parties} "
                                                             f"{_parties(role.max_parties)} as '{role.name}', "
                                                             f"got {got}"))
    return errors


def _suggestion(party: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(party, sorted(known), n=3)
    if close:
        return f"; did you mean {' or '.join(repr(c) for c in close)}?"
    if len(known) > 20:
        return f" ({len(known)} parties are known)"
    return f"; known: {', '.join(sorted(known)) or 'none'}"


def _parties(count: int) -> str:
    return "party" if count == 1 else "parties"
