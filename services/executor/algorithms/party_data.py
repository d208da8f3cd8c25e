"""A party's training and test rows as arrays, standardised when the flow standardised them.

The held-out rows are the dataset's `split` column (1 = test) when the import
wrote one, so every party and the pooled baseline test on the same rows;
otherwise a seeded split of `test_fraction`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.errors import DataError

STANDARDISATION = "standardisation"


@dataclass(frozen=True)
class PartyArrays:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(initial=0), self.y_test.max(initial=0))) + 1


def _arrays(view) -> tuple[np.ndarray, np.ndarray]:
    labels = view.labels()
    if labels is None:
        raise DataError(f"dataset {view.name!r} has no label column; training needs one")
    return np.asarray(view.features(), np.float32), np.asarray(labels, np.int64)


def load_party_arrays(ctx, *, standardise_with: tuple[np.ndarray, np.ndarray] | None = None) -> PartyArrays:
    data = ctx.data
    if data is None:
        raise DataError(f"party {ctx.task.party} has no dataset for role {ctx.task.role} "
                        f"(data_ref {ctx.task.data_ref!r})")
    if "split" in [c.name for c in data.schema.columns]:
        is_test = np.asarray(data.column("split")) == 1
        x, y = _arrays(data)
        x_train, y_train, x_test, y_test = x[~is_test], y[~is_test], x[is_test], y[is_test]
    else:
        train, test = data.train_test_split(float(ctx.params.get("test_fraction", 0.2)), int(ctx.params.get("seed", 0)))
        (x_train, y_train), (x_test, y_test) = _arrays(train), _arrays(test)
    if standardise_with is None and ctx.artifacts.exists(STANDARDISATION):
        arrays, _ = ctx.artifacts.load(STANDARDISATION)
        standardise_with = (arrays["mean"], arrays["std"])
    if standardise_with is not None:
        mean, std = (np.asarray(a, np.float32) for a in standardise_with)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return PartyArrays(x_train, y_train, x_test, y_test)
