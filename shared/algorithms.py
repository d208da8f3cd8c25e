"""The algorithm plug-in API: the one module plug-in authors import.

An algorithm is declared by an `AlgorithmSpec` (name, version, roles, parameter
schema) registered under the entry-point group ``ferry.algorithms``. The spec
names each role's implementation as a "module:attribute" string, so that the
splitter can validate flows against every installed algorithm without
importing training code (torch, numpy) and the executor imports only the role
it runs.

A role implementation is an object with ``async def run(self, ctx) -> RoleResult``
(see `Role`); `ctx` is a `RoleContext`, the only door to data, checkpoints,
peers, the clock and the log. A role never touches Kafka, LMDB or Kubernetes.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from shared.events import FieldError

ENTRY_POINT_GROUP = "ferry.algorithms"
PARAM_TYPES = ("int", "float", "str", "bool", "list", "dict")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str                          # one of PARAM_TYPES
    default: Any = None                # None with required=False: the parameter is optional
    required: bool = False
    minimum: float | None = None       # inclusive, for int/float
    maximum: float | None = None       # inclusive, for int/float
    choices: tuple[Any, ...] = ()      # allowed values, when not empty
    help: str = ""


@dataclass(frozen=True)
class RoleSpec:
    name: str
    entry: str                         # "package.module:attribute" of the Role implementation
    min_parties: int = 1
    max_parties: int | None = None     # None: unbounded
    needs_data: bool = True            # a party in this role must name a data_ref
    help: str = ""


# A rule across parameters: given the parameters with defaults filled in, the
# problems as (parameter name, reason) pairs. Must stay cheap and import-free.
ParamCheck = Callable[[Mapping[str, Any]], Sequence[tuple[str, str]]]


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    version: str
    roles: tuple[RoleSpec, ...]
    params: tuple[ParamSpec, ...] = ()
    description: str = ""
    checks: tuple[ParamCheck, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    def role(self, name: str) -> RoleSpec | None:
        return next((r for r in self.roles if r.name == name), None)

    def with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a role sees: given ones plus defaults for the rest."""
        merged = {p.name: p.default for p in self.params if p.default is not None}
        merged.update(params)
        return merged


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, {"str": str, "bool": bool, "list": list, "dict": dict}[kind])


def validate_params(spec: AlgorithmSpec, params: Mapping[str, Any], path: str = "params") -> list[FieldError]:
    """Every problem with `params` against `spec`, each naming its field path."""
    errors: list[FieldError] = []
    declared = {p.name: p for p in spec.params}
    for name in params:
        if name not in declared:
            errors.append(FieldError(f"{path}.{name}",
                                     f"unknown parameter for {spec.name} {spec.version}; "
                                     f"known: {sorted(declared)}"))
    for p in spec.params:
        where = f"{path}.{p.name}"
        if p.name not in params:
            if p.required:
                errors.append(FieldError(where, "is required"))
            continue
        value = params[p.name]
        if not _type_ok(p.type, value):
            errors.append(FieldError(where, f"must be {p.type}, got {type(value).__name__} {value!r}"))
            continue
        if p.minimum is not None and value < p.minimum:
            errors.append(FieldError(where, f"must be >= {p.minimum}, got {value}"))
        if p.maximum is not None and value > p.maximum:
            errors.append(FieldError(where, f"must be <= {p.maximum}, got {value}"))
        if p.choices and value not in p.choices:
            errors.append(FieldError(where, f"must be one of {list(p.choices)}, got {value!r}"))
    if not errors:
        merged = spec.with_defaults(params)
        for check in spec.checks:
            errors.extend(FieldError(f"{path}.{name}", reason) for name, reason in check(merged))
    return errors


class AlgorithmRegistry:
    """Installed algorithms by (name, version)."""

    def __init__(self, specs: Sequence[AlgorithmSpec] = ()):
        self._specs: dict[tuple[str, str], AlgorithmSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: AlgorithmSpec) -> None:
        if spec.key in self._specs:
            raise ValueError(f"algorithm {spec.name} {spec.version} registered twice")
        self._specs[spec.key] = spec

    def get(self, name: str, version: str) -> AlgorithmSpec | None:
        return self._specs.get((name, version))

    def versions(self, name: str) -> list[str]:
        return sorted(v for (n, v) in self._specs if n == name)

    def names(self) -> list[str]:
        return sorted({n for (n, _) in self._specs})

    def __iter__(self):
        return iter(sorted(self._specs.values(), key=lambda s: s.key))

    @classmethod
    def from_entry_points(cls) -> "AlgorithmRegistry":
        """Every spec installed under the ``ferry.algorithms`` entry-point group.

        An entry point may name one AlgorithmSpec or a sequence of them.
        """
        specs: list[AlgorithmSpec] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            loaded = ep.load()
            specs.extend(loaded if isinstance(loaded, (list, tuple)) else [loaded])
        return cls(specs)


def load_role(role: RoleSpec) -> "Role":
    """Import a role's implementation; a class is instantiated without arguments."""
    module_name, _, attr = role.entry.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj() if isinstance(obj, type) else obj


@dataclass(frozen=True)
class RoleResult:
    metrics: Mapping[str, float] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)  # name -> artifact reference


@runtime_checkable
class RoleContext(Protocol):
    """What an algorithm role may use. Attributes are ports; adapters live in the executor."""

    task: Any            # shared.events.AlgorithmTaskSpec
    params: Mapping[str, Any]  # validated, defaults filled in
    data: Any            # the party's data object (None for roles with needs_data=False)
    checkpoints: Any     # save(arrays, meta) / load_latest() of this task, across attempts
    artifacts: Any       # save(name, arrays, meta) / load(name): this party's results of this flow
    peers: Any           # reserved for a communicator of the step's peers; None today (see docs)
    clock: Any           # shared.clock.Clock
    log: Any             # structlog logger bound to flow, task, party, role, attempt
    stop_requested: bool  # True once a stop (suspend, SIGTERM) was requested

    def check_stop(self) -> None:
        """Raise shared.errors.Suspended once a stop was requested; call it after each checkpoint."""

    async def sleep(self, seconds: float) -> None:
        """Sleep, but raise Suspended as soon as a stop is requested."""

    async def report(self, *, round: int = 0, total_rounds: int = 0, stage: str = "",
                     metrics: Mapping[str, float] | None = None) -> None:
        """Publish progress for the monitor and the API."""


@runtime_checkable
class Role(Protocol):
    async def run(self, ctx: RoleContext) -> RoleResult: ...
