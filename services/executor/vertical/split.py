"""Vertical demo data: one table split by columns between a guest (label + some features)
and hosts (the other features), each keeping its own subset of the rows in its own order,
so that a PSI step has something to find. Used by the tests, the bench and `ferry`'s demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from services.executor.data.importers import Table, load_source, put_table
from services.executor.data.schema import Schema

GUEST, HOST, ARBITER = "hospital", "lab", "coordinator"


@dataclass(frozen=True)
class VerticalSplit:
    x: np.ndarray             # the whole table's features, rows by id
    y: np.ndarray             # labels by id
    columns: dict[str, list[int]]  # party -> feature indices it holds
    rows: dict[str, np.ndarray]    # party -> ids it holds, in its store order


def split_table(x: np.ndarray, y: np.ndarray, columns: dict[str, Sequence[int]], *, keep_fraction: float,
                seed: int, aligned: bool = False) -> VerticalSplit:
    """aligned=True: every party holds every row in id order (no PSI needed)."""
    rng = np.random.default_rng([seed, 0x5E27])
    n = len(x)
    rows = {}
    for party in columns:
        kept = rng.permutation(n)[: int(round(keep_fraction * n))]
        rows[party] = np.arange(n) if aligned else kept  # a shuffled subset: store order differs per party
    return VerticalSplit(x, y, {p: list(c) for p, c in columns.items()}, rows)


def party_table(split: VerticalSplit, party: str, *, label: bool) -> Table:
    ids = split.rows[party]
    columns = {"id": ids.astype(np.int64), "x": split.x[ids][:, split.columns[party]].astype(np.float32)}
    if label:
        columns["y"] = split.y[ids].astype(np.int64)
    schema = Schema.infer(columns, label="y" if label else None, features=("x",))
    return Table(columns, schema, {"vertical_columns": split.columns[party]})


def prepare_vertical_parties(work_dir: Path, *, dataset: str = "breast_cancer", guest_features: int = 15,
                             keep_fraction: float = 0.95, seed: int = 7, name: str | None = None,
                             aligned: bool = False) -> VerticalSplit:
    """The guest (GUEST: label + the first `guest_features` features) and one host (HOST: the
    rest), each with `keep_fraction` of the rows, as dataset `name` (default `<dataset>_v`)."""
    from services.scheduler.adapters.launchers import party_dirs

    table = load_source(f"sklearn:{dataset}")
    x = np.concatenate([np.asarray(table.columns[f], np.float64).reshape(table.n_rows, -1)
                        for f in table.schema.features], axis=1)
    y = np.asarray(table.columns[table.schema.label])
    width = x.shape[1]
    split = split_table(x, y, {GUEST: range(guest_features), HOST: range(guest_features, width)},
                        keep_fraction=keep_fraction, seed=seed, aligned=aligned)
    for party in (GUEST, HOST):
        put_table(party_dirs(work_dir, party)["data"], name or f"{dataset}_v", party_table(split, party, label=party == GUEST))
    return split
