"""Schema and metadata of a stored dataset, and the rules columns must obey. Pure.

A column is an array whose first axis is rows; every row has the same
shape (``()`` for scalars, ``(32,)`` for a feature vector, ``(8, 8)`` for an
image). Only fixed-size numeric kinds are stored (bool, signed/unsigned
integers, floats): they round-trip as raw little-endian bytes, which is what
keeps reads zero-copy and the store free of pickles.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from shared.errors import ConfigurationError, DataError

from .stats import LabelCounts, Moments

FORMAT = 1  # bump when the key layout or metadata changes incompatibly
SUPPORTED_KINDS = {"b": "bool", "i": "signed int", "u": "unsigned int", "f": "float"}
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not _DATASET_NAME.match(name):
        raise ConfigurationError(
            f"invalid dataset name {name!r}: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit")
    return name


def storage_dtype(dtype: Any, column: str = "?") -> np.dtype:
    """The little-endian dtype a column is stored as; rejects what cannot be raw bytes."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ConfigurationError(f"column {column!r}: unknown dtype {dtype!r}") from None
    if dt.kind not in SUPPORTED_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise DataError(
            f"column {column!r}: unsupported dtype {dt} (kind {dt.kind!r}); stored columns must "
            f"be {', '.join(SUPPORTED_KINDS.values())}: encode strings/objects as numbers first")
    return dt.newbyteorder("<") if dt.itemsize > 1 else dt


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    dtype: str  # little-endian numpy dtype string, e.g. "<f4", "|b1"
    shape: tuple[int, ...] = ()  # of one row

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def row_nbytes(self) -> int:
        return self.np_dtype.itemsize * math.prod(self.shape)

    @property
    def row_size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Schema:
    columns: tuple[ColumnSpec, ...]
    label: str | None = None
    features: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise DataError(f"unknown column {name!r}; columns: {', '.join(self.names)}")

    @classmethod
    def infer(cls, columns: Mapping[str, np.ndarray], *, label: str | None = None,
              features: tuple[str, ...] | list[str] | None = None) -> "Schema":
        """Column specs from the arrays; features default to every column but the label."""
        specs = tuple(ColumnSpec(n, storage_dtype(a.dtype, n).str, tuple(np.shape(a)[1:]))
                      for n, a in columns.items())
        feats = tuple(features) if features is not None else tuple(n for n in columns if n != label)
        schema = cls(specs, label, feats)
        schema.check()
        return schema

    def check(self) -> None:
        names = self.names
        if len(set(names)) != len(names):
            raise DataError(f"duplicate column names in {list(names)}")
        for c in self.columns:
            if not c.name or "/" in c.name or len(c.name.encode()) > 200:
                raise DataError(f"invalid column name {c.name!r}: 1-200 bytes, no '/'")
            storage_dtype(c.dtype, c.name)
        if self.label is not None:
            if self.label not in names:
                raise DataError(f"label column {self.label!r} missing; columns: {', '.join(names)}")
            if self.column(self.label).shape != ():
                raise DataError(f"label column {self.label!r} must hold one value per row")
            if self.label in self.features:
                raise DataError(f"label column {self.label!r} is also listed as a feature")
        for f in self.features:
            if f not in names:
                raise DataError(f"feature column {f!r} missing; columns: {', '.join(names)}")

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [{"name": c.name, "dtype": c.dtype, "shape": list(c.shape)}
                            for c in self.columns],
                "label": self.label, "features": list(self.features)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Schema":
        cols = tuple(ColumnSpec(c["name"], c["dtype"], tuple(int(s) for s in c["shape"]))
                     for c in d["columns"])
        return cls(cols, d.get("label"), tuple(d.get("features", ())))


def check_columns(columns: Mapping[str, np.ndarray], schema: Schema) -> int:
    """Arrays agree with the schema; returns the row count."""
    schema.check()
    extra = sorted(set(columns) - set(schema.names))
    if extra:
        raise DataError(f"schema mismatch: columns {extra} are not in the schema")
    n_rows = None
    for spec in schema.columns:
        if spec.name not in columns:
            raise DataError(f"schema mismatch: column {spec.name!r} missing from the data")
        arr = np.asarray(columns[spec.name])
        storage_dtype(arr.dtype, spec.name)
        if arr.ndim == 0:
            raise DataError(f"schema mismatch: column {spec.name!r} is a scalar, not rows")
        if storage_dtype(arr.dtype) != spec.np_dtype or arr.shape[1:] != spec.shape:
            raise DataError(f"schema mismatch: column {spec.name!r} is {arr.dtype}{list(arr.shape[1:])}"
                            f" per row, schema says {spec.np_dtype}{list(spec.shape)}")
        if n_rows is None:
            n_rows, first = arr.shape[0], spec.name
        elif arr.shape[0] != n_rows:
            raise DataError(f"schema mismatch: column {spec.name!r} has {arr.shape[0]} rows, "
                            f"column {first!r} has {n_rows}")
    return n_rows or 0


@dataclass(frozen=True)
class DatasetMeta:
    """What the metadata sub-database holds for one dataset (as JSON)."""

    name: str
    schema: Schema
    n_rows: int
    block_size: int
    stats: Mapping[str, Moments] = field(default_factory=dict)  # per column, at import
    labels: LabelCounts | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_size)

    def block_rows(self, block: int) -> int:
        return min(self.block_size, self.n_rows - block * self.block_size)

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "name": self.name, "schema": self.schema.to_dict(),
            "n_rows": self.n_rows, "block_size": self.block_size,
            "stats": {k: m.to_dict() for k, m in self.stats.items()},
            "labels": self.labels.to_dict() if self.labels else None,
            "attrs": dict(self.attrs)}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "DatasetMeta":
        """Raises DataError (the caller adds store and key) on anything malformed."""
        try:
            d = json.loads(bytes(raw))
            if d.get("format") != FORMAT:
                raise DataError(f"metadata format {d.get('format')!r}, this reader knows {FORMAT}")
            meta = cls(d["name"], Schema.from_dict(d["schema"]), int(d["n_rows"]),
                       int(d["block_size"]), {k: Moments.from_dict(v) for k, v in d["stats"].items()},
                       LabelCounts.from_dict(d["labels"]) if d.get("labels") else None,
                       d.get("attrs") or {})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"malformed metadata: {exc!r}") from exc
        meta.schema.check()
        if meta.n_rows < 0 or meta.block_size < 1:
            raise DataError(f"malformed metadata: n_rows={meta.n_rows} block_size={meta.block_size}")
        return meta
