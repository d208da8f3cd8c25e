"""A party's rows in the order a PSI step agreed: the aligned view later steps train on.

The PSI step leaves artifact `psi-<step>` in the party's own artifact store:
the store rows of the shared ids, in the shared order (every party of the
step holds the same ids at the same positions). The store itself is not
rewritten: on Kubernetes the data volume is mounted read-only, and a view
costs no copy.
"""

from __future__ import annotations

import numpy as np

from shared.errors import ConfigurationError, DataError


def artifact_name(psi_step: str) -> str:
    return f"psi-{psi_step}"


def aligned_rows(ctx, psi_step: str) -> tuple[np.ndarray, dict]:
    """(store rows in shared order, the PSI step's metadata) for this party's dataset."""
    name = artifact_name(psi_step)
    if not ctx.artifacts.exists(name):
        raise ConfigurationError(f"params.align_with is {psi_step!r}, but party {ctx.task.party} has no result "
                                 f"of a ferry.psi step of that name in this flow (artifact {name!r}); "
                                 f"name the PSI step, and make this step depend on it")
    arrays, meta = ctx.artifacts.load(name)
    if meta.get("dataset") != ctx.task.data_ref:
        raise ConfigurationError(f"PSI step {psi_step!r} aligned dataset {meta.get('dataset')!r} of party "
                                 f"{ctx.task.party}, but this step reads {ctx.task.data_ref!r}")
    rows = np.asarray(arrays["rows"], np.int64)
    if ctx.data is not None and rows.size and (rows.min() < 0 or rows.max() >= len(ctx.data)):
        raise DataError(f"PSI result {name!r} names rows outside dataset {ctx.task.data_ref!r} "
                        f"({len(ctx.data)} rows): was the dataset replaced after the PSI step?")
    return rows, meta


def feature_columns(data, id_column: str) -> list[str]:
    """The dataset's feature columns less the id and the import's split marker."""
    return [c for c in data.schema.features if c not in (id_column, "split")]


def read_rows(data, rows: np.ndarray, id_column: str, *, label: bool) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(features float64 (rows, F), labels or None, feature names) of `rows` in that order."""
    names = feature_columns(data, id_column)
    if not names:
        raise DataError(f"dataset {data.name!r} has no feature columns besides {id_column!r}")
    parts = [np.asarray(data.reader.take(c, rows), np.float64).reshape(len(rows), -1) for c in names]
    x = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    y = None
    if label:
        if data.schema.label is None:
            raise DataError(f"dataset {data.name!r} has no label column; the guest holds the label")
        y = np.asarray(data.reader.take(data.schema.label, rows))
    return x, y, names
