"""CSV with a header row -> one numeric array per column.

Types: a declared dtype wins; otherwise int64 if every value is an integer,
else float64 (empty cells become NaN). A non-numeric label column is
encoded as int64 codes over its sorted distinct values, which are recorded
in attrs["label_names"]; a non-numeric feature is an error naming the file,
line and column, because silently encoding features would invent an order.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shared.errors import DataError

from .schema import storage_dtype

_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def read_csv(path: Path, *, keep: Sequence[str] | None = None, dtypes: Mapping[str, str] | None = None,
             label: str | None = None, text: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """`text`: columns kept as strings when not numeric (a split column of test/train words)."""
    if not path.is_file():
        raise DataError(f"csv {path}: no such file")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise DataError(f"csv {path}: empty file, expected a header row")
        header = [h.strip() for h in header]
        rows, lines = [], []  # lines: source line of each row, for error messages
        for line, row in enumerate(reader, start=2):
            if not row:
                continue  # blank line
            if len(row) != len(header):
                raise DataError(f"csv {path}: line {line}: {len(row)} fields, header has {len(header)}")
            rows.append(row)
            lines.append(line)
    names = [h for h in header if keep is None or h in keep]
    for name in ([label] if label else []) + list(keep or []) + list(dtypes or {}):
        if name not in header:
            raise DataError(f"csv {path}: column {name!r} missing; header: {', '.join(header)}")
    columns = list(zip(*rows)) if rows else [() for _ in header]
    out: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {}
    for name in names:
        values = columns[header.index(name)]
        where = f"csv {path}: column {name!r}"
        if dtypes and name in dtypes:
            out[name] = _declared(values, storage_dtype(dtypes[name], name), where, lines)
        else:
            arr = _inferred(values)
            if arr is None and name in text:
                out[name] = np.array([v.strip() for v in values], dtype=str)
            elif arr is None:
                if name != label:
                    _raise_first_bad(values, np.float64, where, lines)
                out[name], attrs["label_names"] = _codes(values)
            else:
                out[name] = arr
    return out, attrs


def _inferred(values: Sequence[str]) -> np.ndarray | None:
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(v) if v.strip() else np.nan for v in values], dtype=np.float64)
    except ValueError:
        return None


def _declared(values: Sequence[str], dt: np.dtype, where: str, lines: list[int]) -> np.ndarray:
    try:
        if dt.kind == "b":
            return np.array([_BOOL[v.strip().lower()] for v in values], dtype=dt)
        if dt.kind == "f":
            return np.array([float(v) if v.strip() else np.nan for v in values], dtype=dt)
        return np.array([int(v) for v in values], dtype=dt)
    except (ValueError, KeyError, OverflowError):
        _raise_first_bad(values, dt, where, lines)
        raise  # unreachable: _raise_first_bad always raises


def _raise_first_bad(values: Sequence[str], dt: np.dtype, where: str, lines: list[int]) -> None:
    conv = {"b": lambda v: _BOOL[v.strip().lower()],
            "f": lambda v: float(v) if v.strip() else np.nan}.get(np.dtype(dt).kind, int)
    for line, v in zip(lines, values):
        try:
            np.array(conv(v), dtype=dt)
        except (ValueError, KeyError, OverflowError):
            raise DataError(f"{where}: line {line}: {v!r} is not a valid {np.dtype(dt)}") from None
    raise DataError(f"{where}: values do not convert to {np.dtype(dt)}")


def _codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    names, codes = np.unique(np.array(values, dtype=str), return_inverse=True)
    return codes.astype(np.int64), [str(n) for n in names]
