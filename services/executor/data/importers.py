"""Load datasets from files, scikit-learn or a generator, into party stores.

Sources (``--source`` on the CLI):
    csv:PATH          header row; --label and --features name columns; each
                      feature becomes its own scalar column
    npz:PATH          named arrays become columns; label defaults to "y"
    npy:PATH          one array -> column "X"; --label K (an integer) splits
                      column K of a 2-D array off as label "y"
    sklearn:NAME      breast_cancer | digits | wine | iris -> "X", "y"
    synthetic:SPEC    see synthetic.py -> "X" float32, "y" int64

Loaders return a Table (arrays + schema + attrs); put_table/import_source
write it, import_partitioned splits it across party stores first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shared.errors import ConfigurationError, DataError

from . import csv_source, partition, synthetic
from .layout import DEFAULT_BLOCK_SIZE
from .schema import DatasetMeta, Schema, check_columns, storage_dtype
from .store import PartyStore

SKLEARN_DATASETS = ("breast_cancer", "digits", "wine", "iris")
_PARTY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Table:
    columns: Mapping[str, np.ndarray]
    schema: Schema
    attrs: Mapping[str, Any]

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def take(self, rows: np.ndarray) -> "Table":
        return Table({k: v[rows] for k, v in self.columns.items()}, self.schema, self.attrs)


def make_table(columns: Mapping[str, np.ndarray], *, label: str | None,
               features: Sequence[str] | None, dtypes: Mapping[str, str] | None = None,
               attrs: Mapping[str, Any] | None = None, origin: str = "") -> Table:
    """Keep the label and feature columns, apply declared dtypes, infer the schema."""
    try:
        if label is not None and label not in columns:
            raise DataError(f"label column {label!r} missing; columns: {', '.join(columns)}")
        feats = list(features) if features is not None else [c for c in columns if c != label]
        missing = [f for f in feats if f not in columns]
        if missing:
            raise DataError(f"feature columns {missing} missing; columns: {', '.join(columns)}")
        keep = ([label] if label is not None else []) + [f for f in feats if f != label]
        cols = {}
        for name in keep:
            arr = np.asarray(columns[name])
            if dtypes and name in dtypes:
                arr = arr.astype(storage_dtype(dtypes[name], name))
            cols[name] = arr
        unknown = sorted(set(dtypes or {}) - set(cols))
        if unknown:
            raise ConfigurationError(f"dtypes given for unknown columns {unknown}")
        schema = Schema.infer(cols, label=label, features=feats)
        check_columns(cols, schema)  # equal row counts, before any store is touched
        return Table(cols, schema, dict(attrs or {}))
    except DataError as exc:
        raise DataError(f"{origin}: {exc}" if origin else str(exc)) from exc


def parse_source(text: str) -> tuple[str, str]:
    kind, sep, arg = text.partition(":")
    kinds = ("csv", "npz", "npy", "sklearn", "synthetic")
    if not sep or kind not in kinds:
        raise ConfigurationError(f"source {text!r}: expected one of "
                                 f"{', '.join(k + ':...' for k in kinds)}")
    return kind, arg


def load_source(text: str, *, label: str | None = None, features: Sequence[str] | None = None,
                dtypes: Mapping[str, str] | None = None, split: str | None = None) -> Table:
    """`split`: a source column that will become the split column (split_from_column); a CSV
    may spell it in words."""
    kind, arg = parse_source(text)
    if kind == "csv":
        cols, attrs = csv_source.read_csv(Path(arg), keep=_wanted(label, features), dtypes=dtypes,
                                          label=label, text=(split,) if split else ())
        if split and split in cols:
            cols[split] = split_codes(cols[split], split)
        return make_table(cols, label=label, features=features, attrs=attrs, origin=f"csv {arg}")
    if kind == "npz":
        cols = _read_npz(Path(arg))
        if label is None and "y" in cols:
            label = "y"  # the X, y convention; a file without "y" is unlabelled
        return make_table(cols, label=label, features=features, dtypes=dtypes, origin=f"npz {arg}")
    if kind == "npy":
        cols, lab = _read_npy(Path(arg), label)
        return make_table(cols, label=lab, features=features, dtypes=dtypes, origin=f"npy {arg}")
    if kind == "sklearn":
        cols, attrs = _read_sklearn(arg)
        return make_table(cols, label=label or "y", features=features, dtypes=dtypes,
                          attrs=attrs, origin=text)
    spec = synthetic.SyntheticSpec.parse(arg)
    x, y = synthetic.generate(spec)
    return make_table({"X": x, "y": y}, label=label or "y", features=features, dtypes=dtypes,
                      attrs={"synthetic": arg}, origin=text)


def _wanted(label: str | None, features: Sequence[str] | None) -> list[str] | None:
    return None if features is None else ([label] if label else []) + list(features)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"npz {path}: no such file")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                try:
                    out[key] = z[key]
                except ValueError as exc:  # object arrays need pickles: refused
                    raise DataError(f"npz {path}: key {key!r}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"npz {path}: unreadable: {exc}") from exc
    return out


def _read_npy(path: Path, label: str | None) -> tuple[dict[str, np.ndarray], str | None]:
    if not path.is_file():
        raise DataError(f"npy {path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"npy {path}: unreadable: {exc}") from exc
    if label is None:
        return {"X": arr}, None
    try:
        k = int(label)
    except ValueError:
        raise ConfigurationError(f"npy {path}: --label must be a column index, got {label!r}") from None
    if arr.ndim != 2 or not -arr.shape[1] <= k < arr.shape[1]:
        raise DataError(f"npy {path}: label column {k} outside array of shape {arr.shape}")
    y = arr[:, k]
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)  # class ids stored in a float matrix
    return {"X": np.delete(arr, k, axis=1), "y": y}, "y"


def _read_sklearn(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if name not in SKLEARN_DATASETS:
        raise ConfigurationError(f"sklearn dataset {name!r}: known: {', '.join(SKLEARN_DATASETS)}")
    # Imported here: sklearn takes a second to import and only this source needs it.
    from sklearn import datasets
    bunch = getattr(datasets, f"load_{name}")()
    attrs = {"source": f"sklearn:{name}",
             "feature_names": [str(f) for f in bunch.feature_names],
             "target_names": [str(t) for t in bunch.target_names]}
    return {"X": np.asarray(bunch.data), "y": np.asarray(bunch.target, np.int64)}, attrs


def put_table(store_dir: str | Path, dataset: str, table: Table, *,
              block_size: int = DEFAULT_BLOCK_SIZE, attrs: Mapping[str, Any] | None = None) -> DatasetMeta:
    with PartyStore.open(store_dir, readonly=False, create=True) as store:
        return store.put_dataset(dataset, table.columns, table.schema, block_size=block_size,
                                 attrs={**table.attrs, **(attrs or {})})


def import_source(store_dir: str | Path, dataset: str, source: str, *, label: str | None = None,
                  features: Sequence[str] | None = None, dtypes: Mapping[str, str] | None = None,
                  block_size: int = DEFAULT_BLOCK_SIZE) -> DatasetMeta:
    table = load_source(source, label=label, features=features, dtypes=dtypes)
    return put_table(store_dir, dataset, table, block_size=block_size, attrs={"source": source})


def split_rows(table: Table, n_parties: int, scheme: str, *, alpha: float = 0.5,
               seed: int = 0) -> list[np.ndarray]:
    if scheme == "iid":
        return partition.iid(table.n_rows, n_parties, seed)
    if scheme == "dirichlet":
        if table.schema.label is None:
            raise ConfigurationError("dirichlet partitioning needs a label column (--label)")
        return partition.dirichlet(table.columns[table.schema.label], n_parties, alpha, seed)
    raise ConfigurationError(f"unknown partition scheme {scheme!r}; use iid or dirichlet")


def import_partitioned(stores_root: str | Path, parties: Sequence[str], dataset: str, table: Table,
                       *, scheme: str, alpha: float = 0.5, seed: int = 0,
                       block_size: int = DEFAULT_BLOCK_SIZE, source: str = "") -> dict[str, DatasetMeta]:
    """One store per party at stores_root/<party>, each with its share of the rows."""
    bad = [p for p in parties if not _PARTY.match(p)]
    if bad or len(set(parties)) != len(parties) or not parties:
        raise ConfigurationError(f"party names must be distinct and match {_PARTY.pattern}; "
                                 f"got {list(parties)}")
    parts = split_rows(table, len(parties), scheme, alpha=alpha, seed=seed)
    out = {}
    for i, (party, rows) in enumerate(zip(parties, parts)):
        info = {"source": source, "partition": {"scheme": scheme, "alpha": alpha, "seed": seed,
                                                "party": party, "index": i, "of": len(parties)}}
        out[party] = put_table(Path(stores_root) / party, dataset, table.take(rows),
                               block_size=block_size, attrs=info)
    return out


def with_test_split(table: Table, test_fraction: float, seed: int) -> Table:
    """The table plus a `split` column (1 = held-out test row), chosen before partitioning,
    so that every party and a pooled baseline evaluate on the same rows."""
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigurationError(f"test_fraction must be in [0, 1), got {test_fraction}")
    # A stream of its own: partitioning with the same seed must not pick the same rows.
    order = np.random.default_rng([seed, 0x7E57]).permutation(table.n_rows)
    split = np.zeros(table.n_rows, np.uint8)
    split[order[: int(round(test_fraction * table.n_rows))]] = 1
    columns = {**table.columns, "split": split}
    return Table(columns, Schema.infer(columns, label=table.schema.label, features=table.schema.features),
                 {**table.attrs, "test_fraction": test_fraction, "split_seed": seed})


_TEST_WORDS = {"1": 1, "0": 0, "true": 1, "false": 0, "test": 1, "train": 0}


def split_from_column(table: Table, column: str) -> Table:
    """The table with source column `column` (1/0, true/false or test/train) as its `split`
    column (1 = held-out test row), no longer a feature."""
    if column not in table.columns:
        raise ConfigurationError(f"--split: column {column!r} is not in the source; columns: "
                                 f"{', '.join(table.columns)}")
    if column == table.schema.label:
        raise ConfigurationError(f"--split: column {column!r} is the label")
    columns = {k: v for k, v in table.columns.items() if k != column}
    columns["split"] = split_codes(table.columns[column], column)
    features = [f for f in table.schema.features if f not in (column, "split")]
    return Table(columns, Schema.infer(columns, label=table.schema.label, features=features),
                 {**table.attrs, "split_column": column})


def split_codes(raw, column: str) -> np.ndarray:
    """1 (held-out test row) or 0 per row, from 1/0, true/false or test/train."""
    raw = np.asarray(raw)
    if raw.dtype.kind in "biuf":
        values = raw.astype(np.float64)
        bad = ~np.isin(values, (0.0, 1.0))
        split = values.astype(np.uint8)
    else:
        words = np.char.lower(np.char.strip(raw.astype(str)))
        bad = ~np.isin(words, list(_TEST_WORDS))
        split = np.array([_TEST_WORDS.get(w, 0) for w in words], np.uint8)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"--split: column {column!r} row {row} is {raw[row].item()!r}; expected 1/0, "
                        f"true/false or test/train")
    return split
