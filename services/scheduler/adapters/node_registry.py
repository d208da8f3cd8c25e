"""The data-node registry: where each party's executor runs and where its data lives.

A YAML file (FERRY_SCHEDULER__NODE_REGISTRY, format in docs/node-registry.md)
maps every party to a Kubernetes namespace, a node placement, the volume with
its LMDB store, a checkpoint volume and resources. It is read once at start and
checked field by field, so a typo fails the scheduler's start with the file,
party and field named instead of failing every Job at creation time.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from shared.errors import ConfigurationError

DEFAULT_DATA_MOUNT = "/var/lib/ferry/data"
DEFAULT_STATE_MOUNT = "/var/lib/ferry/state"

# Kubernetes quantities ("500m", "2Gi", "1e3"): checked here so "2 GB" fails at load.
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
_FIELDS = ("namespace", "node_selector", "node_affinity", "data_volume", "data_mount_path",
           "checkpoint_volume", "checkpoint_mount_path", "resources", "tolerations", "service_account")


class NodeRegistryError(ConfigurationError):
    """The registry file is missing, unreadable or has a bad field."""


class UnknownParty(ConfigurationError):
    """A task names a party the registry does not place: the task fails instead of pending forever."""

    def __init__(self, party: str, known: tuple[str, ...], source: str):
        self.party, self.known = party, known
        listed = ", ".join(known) or "none"
        super().__init__(f"party {party!r} is not in the node registry {source}; known parties: {listed}")


@dataclass(frozen=True)
class Volume:
    """One Kubernetes volume source (exactly one key, e.g. persistentVolumeClaim) and where it is mounted."""

    source: Mapping[str, Any]
    mount_path: str


@dataclass(frozen=True)
class PartyNode:
    """Placement and storage of one party. Mappings hold Kubernetes JSON; treat them as read-only."""

    party: str
    namespace: str
    node_selector: Mapping[str, str]
    node_affinity: Mapping[str, Any] | None
    data: Volume | None
    checkpoints: Volume | None
    resources: Mapping[str, Mapping[str, str]]
    tolerations: tuple[Mapping[str, Any], ...] = ()
    service_account: str | None = None


@dataclass(frozen=True)
class NodeRegistry:
    parties: Mapping[str, PartyNode]
    source: str = "<registry>"

    def node_for(self, party: str) -> PartyNode:
        node = self.parties.get(party)
        if node is None:
            raise UnknownParty(party, tuple(sorted(self.parties)), self.source)
        return node

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(node.namespace for node in self.parties.values())


class _Where:
    """Builds error messages that name the file, the party and the field."""

    def __init__(self, source: str, party: str):
        self.source, self.party = source, party

    def fail(self, field: str, problem: str) -> NodeRegistryError:
        return NodeRegistryError(f"{self.source}: party {self.party!r}: {field}: {problem}")


def load_node_registry(path: Path | str, default_namespace: str | None = None) -> NodeRegistry:
    """Read and check the registry; `default_namespace` fills parties that name none."""
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise NodeRegistryError(f"{source}: cannot read the node registry: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise NodeRegistryError(f"{source}: not valid YAML: {exc}") from exc
    return parse_node_registry(doc, source, default_namespace)


def parse_node_registry(doc: Any, source: str = "<registry>",
                        default_namespace: str | None = None) -> NodeRegistry:
    if not isinstance(doc, dict) or not isinstance(doc.get("parties"), dict) or not doc["parties"]:
        raise NodeRegistryError(f"{source}: expected a mapping with a non-empty 'parties' mapping "
                                "(party name -> placement); see docs/node-registry.md")
    extra = sorted(set(doc) - {"parties"})
    if extra:
        raise NodeRegistryError(f"{source}: unknown top-level field(s) {', '.join(map(str, extra))}; "
                                "only 'parties' is read")
    parties = {}
    for party, entry in doc["parties"].items():
        parties[str(party)] = _party(str(party), entry, _Where(source, str(party)), default_namespace)
    return NodeRegistry(parties, source)


def _party(party: str, entry: Any, where: _Where, default_namespace: str | None) -> PartyNode:
    if not isinstance(entry, dict):
        raise where.fail("(entry)", f"expected a mapping of fields, got {type(entry).__name__}")
    for key in entry:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(_FIELDS)}"
            raise where.fail(str(key), "unknown field" + hint)
    namespace = entry.get("namespace", default_namespace)
    if not isinstance(namespace, str) or not namespace:
        raise where.fail("namespace", "required (a Kubernetes namespace name)")
    selector = _string_map(entry.get("node_selector", {}), where, "node_selector")
    affinity = entry.get("node_affinity")
    if affinity is not None and (not isinstance(affinity, dict) or not affinity):
        raise where.fail("node_affinity", "expected a Kubernetes NodeAffinity mapping, e.g. "
                                          "{requiredDuringSchedulingIgnoredDuringExecution: ...}")
    if not selector and not affinity:
        # Without placement an executor may land on a node that cannot reach the party's data.
        raise where.fail("node_selector", "a party needs node_selector and/or node_affinity")
    data = _volume(entry, "data_volume", "data_mount_path", DEFAULT_DATA_MOUNT, where)
    state = _volume(entry, "checkpoint_volume", "checkpoint_mount_path", DEFAULT_STATE_MOUNT, where)
    if data and state and data.mount_path == state.mount_path:
        raise where.fail("checkpoint_mount_path", f"must differ from data_mount_path ({data.mount_path})")
    account = entry.get("service_account")
    if account is not None and (not isinstance(account, str) or not account):
        raise where.fail("service_account", "expected a ServiceAccount name")
    return PartyNode(party, namespace, selector, affinity, data, state, _resources(entry.get("resources"), where),
                     _tolerations(entry.get("tolerations"), where), account)


def _string_map(value: Any, where: _Where, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise where.fail(field, f"expected a mapping of strings, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(item, str):
            # YAML turns `true`/`1` into non-strings; Kubernetes label values must be strings.
            raise where.fail(f"{field}.{key}", f"expected a string, got {item!r} (quote it in YAML)")
    return {str(k): v for k, v in value.items()}


def _volume(entry: dict, field: str, mount_field: str, default_mount: str, where: _Where) -> Volume | None:
    source = entry.get(field)
    mount = entry.get(mount_field, default_mount)
    if source is None:
        if mount_field in entry:
            raise where.fail(mount_field, f"set, but {field} is missing")
        return None
    # A volume source is a one-of in Kubernetes: exactly one key naming its type.
    if not isinstance(source, dict) or len(source) != 1:
        raise where.fail(field, "expected one volume source, e.g. {persistentVolumeClaim: {claimName: x}} "
                                "or {hostPath: {path: /data}}")
    kind, spec = next(iter(source.items()))
    if kind == "name" or not isinstance(spec, dict):
        raise where.fail(f"{field}.{kind}", "expected a volume source mapping (the volume's name is Ferry's)")
    if not isinstance(mount, str) or not mount.startswith("/"):
        raise where.fail(mount_field, f"expected an absolute path, got {mount!r}")
    return Volume({str(kind): spec}, mount.rstrip("/") or "/")


def _resources(value: Any, where: _Where) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.fail("resources", "expected {requests: {...}, limits: {...}}")
    out: dict[str, dict[str, str]] = {}
    for group, amounts in value.items():
        if group not in ("requests", "limits"):
            raise where.fail(f"resources.{group}", "unknown; use requests and/or limits")
        if not isinstance(amounts, dict):
            raise where.fail(f"resources.{group}", "expected a mapping of resource name to quantity")
        out[group] = {}
        for name, amount in amounts.items():
            # YAML reads `cpu: 1` as a number; the API wants quantities as strings.
            text = str(amount) if isinstance(amount, (int, float, str)) and not isinstance(amount, bool) else ""
            if not _QUANTITY.match(text):
                raise where.fail(f"resources.{group}.{name}", f"not a Kubernetes quantity: {amount!r} "
                                                             "(e.g. 500m, 2, 4Gi)")
            out[group][str(name)] = text
    return out


def _tolerations(value: Any, where: _Where) -> tuple[dict, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise where.fail("tolerations", "expected a list of Kubernetes toleration mappings")
    return tuple(value)
