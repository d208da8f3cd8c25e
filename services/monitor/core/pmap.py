"""A persistent (copy-on-write) hash map for the monitor's state.

step() must return a new state per event without copying every task: a plain
dict copy costs O(tasks), about a millisecond at 100k tasks. This map is a
two-level trie of 64-way tuples over small dict leaves (4096 leaves), so
replacing one entry copies two 64-slot tuples and one leaf of ~n/4096 entries.
Keys only need to be hashable; the layout depends on hash(), so it lives in
memory only (snapshots store the items, never the structure).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_FANOUT = 64
_BITS = 6
_MASK = _FANOUT - 1
_EMPTY_ROW: tuple[Any, ...] = (None,) * _FANOUT


class PMap(Mapping[K, V]):
    __slots__ = ("_root", "_len")

    def __init__(self, _root: tuple[Any, ...] = _EMPTY_ROW, _len: int = 0):
        self._root = _root
        self._len = _len

    @classmethod
    def from_items(cls, items: Iterable[tuple[K, V]]) -> PMap[K, V]:
        rows: list[list[dict | None] | None] = [None] * _FANOUT
        size = 0
        for key, value in items:
            h = hash(key)
            row = rows[(h >> _BITS) & _MASK]
            if row is None:
                row = rows[(h >> _BITS) & _MASK] = [None] * _FANOUT
            leaf = row[h & _MASK]
            if leaf is None:
                leaf = row[h & _MASK] = {}
            size += key not in leaf
            leaf[key] = value
        root = tuple(None if row is None else tuple(row) for row in rows)
        return cls(root, size)

    def get(self, key: K, default: Any = None) -> Any:
        h = hash(key)
        row = self._root[(h >> _BITS) & _MASK]
        if row is None:
            return default
        leaf = row[h & _MASK]
        if leaf is None:
            return default
        return leaf.get(key, default)

    def __getitem__(self, key: K) -> V:
        marker = _MISSING
        value = self.get(key, marker)
        if value is marker:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        for row in self._root:
            if row is not None:
                for leaf in row:
                    if leaf:
                        yield from leaf

    def items(self) -> Iterator[tuple[K, V]]:  # type: ignore[override]
        for row in self._root:
            if row is not None:
                for leaf in row:
                    if leaf:
                        yield from leaf.items()

    def values(self) -> Iterator[V]:  # type: ignore[override]
        for row in self._root:
            if row is not None:
                for leaf in row:
                    if leaf:
                        yield from leaf.values()

    def set(self, key: K, value: V) -> PMap[K, V]:
        h = hash(key)
        i, j = (h >> _BITS) & _MASK, h & _MASK
        row = self._root[i]
        leaf = None if row is None else row[j]
        if leaf is None:
            new_leaf, grew = {key: value}, 1
        else:
            grew = key not in leaf
            new_leaf = leaf.copy()
            new_leaf[key] = value
        new_row = list(_EMPTY_ROW if row is None else row)
        new_row[j] = new_leaf
        new_root = list(self._root)
        new_root[i] = tuple(new_row)
        return PMap(tuple(new_root), self._len + grew)

    def update(self, changes: Mapping[K, V]) -> PMap[K, V]:
        """Many replacements at once: each touched leaf and row is copied once."""
        if len(changes) == 1:
            (key, value), = changes.items()
            return self.set(key, value)
        root = list(self._root)
        rows: dict[int, list[Any]] = {}
        leaves: dict[tuple[int, int], dict] = {}
        size = self._len
        for key, value in changes.items():
            h = hash(key)
            i, j = (h >> _BITS) & _MASK, h & _MASK
            leaf = leaves.get((i, j))
            if leaf is None:
                row = rows.get(i)
                if row is None:
                    row = rows[i] = list(_EMPTY_ROW if root[i] is None else root[i])
                leaf = leaves[(i, j)] = dict(row[j] or ())
                row[j] = leaf
            size += key not in leaf
            leaf[key] = value
        for i, row in rows.items():
            root[i] = tuple(row)
        return PMap(tuple(root), size)

    def __repr__(self) -> str:
        return f"PMap({dict(self.items())!r})"


_MISSING: Any = object()
EMPTY: PMap[Any, Any] = PMap()
