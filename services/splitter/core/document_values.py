"""Readers for the pieces of a flow document, each appending FieldErrors rather than raising,
so one pass over a document reports every problem in it."""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

from shared.events import FieldError, PartyRole

Errors = list[FieldError]
PARTY_ENTRY_KEYS = ("party", "data")
MAX_EXACT_INTEGER = 2**53  # protobuf Struct carries numbers as doubles


def kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def string(value: Any, path: str, errors: Errors) -> str:
    if value is None:
        return ""  # absent: check_keys reports a missing required key once
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be a string, got {kind(value)} {value!r}"))
        return ""
    return value


def check_keys(mapping: Mapping[Any, Any], path: str, allowed: tuple[str, ...], required: tuple[str, ...],
               errors: Errors) -> None:
    prefix = f"{path}." if path else ""
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
            errors.append(FieldError(f"{prefix}{key}", f"unknown key; {hint}"))
    for key in required:
        if mapping.get(key) is None:
            errors.append(FieldError(f"{prefix}{key}", "is required"))


def step_names(value: Any, path: str, errors: Errors) -> tuple[str, ...]:
    """A list of step names; a lone name stands for a list of one."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        errors.append(FieldError(path, f"must be a list of step names, got {kind(value)}"))
        return ()
    names = []
    for i, item in enumerate(value):
        if item is None:
            errors.append(FieldError(f"{path}[{i}]", "must be a step name, got null"))
        names.append(string(item, f"{path}[{i}]", errors))
    return tuple(names)


def party_list(value: Any, path: str, data_defaults: Mapping[str, str], errors: Errors) -> tuple[PartyRole, ...]:
    """`role -> parties` into PartyRoles, in document order, data_ref filled from the defaults."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        errors.append(FieldError(path, f"must map each role to its parties, e.g. {{client: [a, b]}}, "
                                       f"got {kind(value)}"))
        return ()
    parties: list[PartyRole] = []
    for role, entries in value.items():
        role_path = f"{path}.{role}"
        if not isinstance(role, str):
            errors.append(FieldError(role_path, f"role names must be strings, got {kind(role)}"))
            continue
        if isinstance(entries, (str, Mapping)):
            entries = [entries]
        if not isinstance(entries, list):
            errors.append(FieldError(role_path, f"must be a party or a list of parties, got {kind(entries)}"))
            continue
        for i, entry in enumerate(entries):
            party = _party_entry(entry, role, f"{role_path}[{i}]", data_defaults, errors)
            if party is not None:
                parties.append(party)
    return tuple(parties)


def _party_entry(entry: Any, role: str, path: str, data_defaults: Mapping[str, str],
                 errors: Errors) -> PartyRole | None:
    if isinstance(entry, str):
        return PartyRole(entry, role, data_defaults.get(entry, ""))
    if not isinstance(entry, Mapping):
        errors.append(FieldError(path, f"must be a party name or {{party: NAME, data: DATASET}}, got {kind(entry)}"))
        return None
    check_keys(entry, path, PARTY_ENTRY_KEYS, ("party",), errors)
    party = string(entry.get("party"), f"{path}.party", errors)
    if entry.get("data") is None:
        return PartyRole(party, role, data_defaults.get(party, ""))
    return PartyRole(party, role, string(entry["data"], f"{path}.data", errors))


def json_problems(value: Any, path: str) -> list[FieldError]:
    """Why `value` cannot travel in a protobuf Struct (JSON), if it cannot."""
    if value is None or isinstance(value, (bool, str)):
        return []
    if isinstance(value, int):
        return [] if abs(value) <= MAX_EXACT_INTEGER else [
            FieldError(path, f"integer {value} is too large to carry exactly (limit 2**53)")]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [FieldError(path, f"must be a finite number, got {value}")]
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in json_problems(item, f"{path}[{i}]")]
    if isinstance(value, Mapping):
        problems = [FieldError(f"{path}.{key}", f"keys must be strings, got {kind(key)}")
                    for key in value if not isinstance(key, str)]
        return problems + [e for key, item in value.items() if isinstance(key, str)
                           for e in json_problems(item, f"{path}.{key}")]
    return [FieldError(path, f"a {kind(value)} cannot be carried as JSON; quote it to pass it as a string")]

