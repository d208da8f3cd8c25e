"""Reading YAML (and so JSON) text the way a flow document needs it read.

Stricter than yaml.safe_load in two ways. Duplicate keys are an error, not a
silent "last one wins". Aliases may not expand the document past
MAX_EXPANDED_NODES: each alias is cheap to load but everything downstream
(validation, JSON and protobuf encoding) walks the expanded tree, so ten
nested levels of ten aliases (the "billion laughs") would cost 10^10 steps.
"""

from __future__ import annotations

from typing import Any, Hashable

import yaml

from shared.errors import ValidationFailed
from shared.events import FieldError

MAX_EXPANDED_NODES = 1_000_000  # well above any flow within FlowLimits' 1 MB
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(text: str | bytes) -> Any:
    """The value `text` holds; raises ValidationFailed at path "$" saying where it is broken."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
                raise _problem(f"aliases expand the document past {MAX_EXPANDED_NODES} nodes "
                               "(or an alias refers to itself)")
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError as exc:
        raise _problem(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise _problem(f"not valid YAML or JSON{where}: {what}") from exc
    except yaml.YAMLError as exc:
        raise _problem(f"not valid YAML or JSON: {exc}") from exc
    except RecursionError as exc:
        raise _problem("nested too deeply (or an alias refers to itself)") from exc


def _problem(reason: str) -> ValidationFailed:
    return ValidationFailed([FieldError("$", reason)])


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in the tree with every alias expanded; shared nodes are measured once."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_EXPANDED_NODES + 1  # seen again while measuring: it contains itself
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *defaults` may be overridden by explicit keys; that is its purpose
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # the base constructor reports unhashable keys
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
