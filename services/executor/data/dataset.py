"""PartyDataset: the data object algorithms receive.

A PartyDataset is an immutable view: a DatasetReader (one read transaction
on the party store), an optional strictly increasing array of store rows
(``index``; None = all rows) and a tuple of feature transforms. Splits and
filters make new index arrays, ``map`` appends a transform; none of them
copies stored data.

Arrays come back as zero-copy, read-only views of the store's memory map
whenever the rows are contiguous inside one block (sequential batches with
batch_size dividing block_size); otherwise as one copy. Views are valid
until the dataset opened with ``open`` is closed: copy what you keep.

Transforms given to ``map`` must be row-wise (a row's output does not depend
on the other rows in its batch), since batches of different sizes and
orders go through them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from shared.errors import ConfigurationError

from .sampling import (DEFAULT_WINDOW, batch_bounds, epoch_order, segments_of, uniform_segments,
                       window_plan)
from .schema import DatasetMeta, Schema
from .stats import (Histogram, Moments, Summary, histogram_of, label_counts_of, merge_histograms,
                    merge_label_counts, merge_moments, moments_of, uniform_edges)
from .store import DatasetReader, PartyStore

Batch = tuple[np.ndarray, np.ndarray | None]
Location = tuple[int, int] | np.ndarray  # contiguous store rows [a, b) or explicit rows
_SPLIT_TAG = 0x53504C54  # keeps split streams apart from batch-order streams of the same seed


@dataclass(frozen=True, eq=False)
class PartyDataset:
    reader: DatasetReader
    index: np.ndarray | None = None
    transforms: tuple[Callable[[np.ndarray], np.ndarray], ...] = ()
    owner: PartyStore | None = None  # set only on the dataset `open` returned

    @classmethod
    def open(cls, store_dir: str | Path, name: str) -> "PartyDataset":
        store = PartyStore.open(store_dir)
        try:
            return cls(store.reader(name), owner=store)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Closes the store; a no-op on views (they share their root's store)."""
        if self.owner is not None:
            self.reader.close()
            self.owner.close()

    def __enter__(self) -> "PartyDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def meta(self) -> DatasetMeta:
        return self.reader.meta

    @property
    def schema(self) -> Schema:
        return self.reader.meta.schema

    @property
    def name(self) -> str:
        return self.reader.meta.name

    def __len__(self) -> int:
        return self.meta.n_rows if self.index is None else len(self.index)

    def __repr__(self) -> str:
        kind = "all rows" if self.index is None else "view"
        return f"PartyDataset({self.name!r}, {len(self)} rows, {kind}, {len(self.transforms)} transforms)"

    @property
    def rows(self) -> np.ndarray:
        """Store row numbers of this view, in order."""
        return np.arange(self.meta.n_rows) if self.index is None else self.index

    # -- reading ----------------------------------------------------------
    def _locate(self, a: int, b: int) -> Location:
        """Store rows of view positions [a, b)."""
        if self.index is None:
            return (a, b)
        rows = self.index[a:b]
        # index is strictly increasing, so equal span and length means contiguous.
        if rows.size and rows[-1] - rows[0] == rows.size - 1:
            return (int(rows[0]), int(rows[-1]) + 1)
        return rows

    def _read(self, column: str, loc: Location) -> np.ndarray:
        if isinstance(loc, tuple):
            return self.reader.slice(column, *loc)
        return self.reader.take(column, loc)

    def _assemble(self, parts: list[np.ndarray]) -> np.ndarray:
        """Feature columns -> (rows, F): a view for one column, else one joined copy."""
        n = len(parts[0])
        if len(parts) == 1:
            return parts[0].reshape(n, -1)
        return np.concatenate([p.reshape(n, -1) for p in parts], axis=1)

    def _feature_names(self) -> tuple[str, ...]:
        if not self.schema.features:
            raise ConfigurationError(f"dataset {self.name!r} declares no feature columns")
        return self.schema.features

    def _transform(self, x: np.ndarray) -> np.ndarray:
        for fn in self.transforms:
            x = fn(x)
        return x

    def _features(self, loc: Location) -> np.ndarray:
        return self._transform(self._assemble([self._read(c, loc) for c in self._feature_names()]))

    def _labels(self, loc: Location) -> np.ndarray | None:
        return None if self.schema.label is None else self._read(self.schema.label, loc)

    def column(self, name: str) -> np.ndarray:
        """A raw stored column for this view's rows (no transforms)."""
        self.schema.column(name)
        return self._read(name, self._locate(0, len(self)))

    def features(self) -> np.ndarray:
        """(rows, F): feature columns flattened per row and joined, transforms applied."""
        return self._features(self._locate(0, len(self)))

    def labels(self) -> np.ndarray | None:
        return self._labels(self._locate(0, len(self)))

    def _segments(self) -> np.ndarray:
        if self.index is None:
            return uniform_segments(self.meta.n_rows, self.meta.block_size)
        return segments_of(self.index // self.meta.block_size)

    def epoch_order(self, *, seed: int, epoch: int, window: int = DEFAULT_WINDOW) -> np.ndarray:
        """Positions of this view in the order shuffled batches visit them."""
        return epoch_order(self._segments(), seed=seed, epoch=epoch, window=window)

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                drop_last: bool = False, window: int = DEFAULT_WINDOW) -> Iterator[Batch]:
        """(X, y) batches; every row once per epoch (less a partial last batch if drop_last).

        shuffle=False: store order, zero-copy where a batch lies in one block.
        shuffle=True: rows in the order epoch_order(seed, epoch, window) gives
        (a seeded permutation of blocks, then of the rows within each window of
        ``window`` blocks); batches are copies.
        """
        if not shuffle:
            for a, b in batch_bounds(len(self), batch_size, drop_last):
                loc = self._locate(a, b)
                yield self._features(loc), self._labels(loc)
            return
        batch_bounds(0, batch_size)  # validates batch_size before any work
        yield from self._shuffled(batch_size, seed, epoch, window, drop_last)

    def _shuffled(self, batch_size: int, seed: int, epoch: int, window: int,
                  drop_last: bool) -> Iterator[Batch]:
        # Each window's blocks are copied once into a small contiguous buffer
        # (window x block rows) and batches are gathered from it: one fancy
        # index per column per batch instead of one per block per batch.
        names, label = self._feature_names(), self.schema.label
        pending: list[tuple[np.ndarray, np.ndarray | None]] = []
        have = 0
        for segs, perm in window_plan(self._segments(), seed=seed, epoch=epoch, window=window):
            locs = [self._locate(int(a), int(b)) for a, b in segs]
            xw = self._assemble([self._gather(c, locs) for c in names])
            yw = None if label is None else self._gather(label, locs)
            start = 0
            while start < perm.size:
                take = perm[start:start + batch_size - have]
                pending.append((xw[take], None if yw is None else yw[take]))
                have, start = have + take.size, start + take.size
                if have == batch_size:
                    yield self._emit(pending)
                    pending, have = [], 0
        if pending and not drop_last:
            yield self._emit(pending)

    def _gather(self, column: str, locs: list[Location]) -> np.ndarray:
        parts = [self._read(column, loc) for loc in locs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _emit(self, pending: list[tuple[np.ndarray, np.ndarray | None]]) -> Batch:
        if len(pending) == 1:
            x, y = pending[0]
        else:
            x = np.concatenate([p[0] for p in pending])
            y = None if pending[0][1] is None else np.concatenate([p[1] for p in pending])
        return self._transform(x), y

    # -- derived views ----------------------------------------------------
    def _view(self, positions: np.ndarray) -> "PartyDataset":
        rows = positions if self.index is None else self.index[positions]
        return replace(self, index=np.asarray(rows, np.int64), owner=None)

    def train_test_split(self, test_fraction: float, seed: int) -> tuple["PartyDataset", "PartyDataset"]:
        """Seeded random split into disjoint (train, test) index views covering all rows."""
        if not 0.0 < float(test_fraction) < 1.0:
            raise ConfigurationError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        n = len(self)
        n_test = int(round(n * float(test_fraction)))
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)  # both sides non-empty when possible
        perm = np.random.default_rng([int(seed), _SPLIT_TAG]).permutation(n)
        return self._view(np.sort(perm[n_test:])), self._view(np.sort(perm[:n_test]))

    def filter(self, predicate: Callable[[np.ndarray, np.ndarray | None], Any]) -> "PartyDataset":
        """A view of the rows where predicate(X, y) -> bool mask is True (one streaming pass)."""
        kept = []
        for start, (x, y) in zip(range(0, len(self), self.meta.block_size),
                                 self.batches(self.meta.block_size, shuffle=False)):
            mask = np.asarray(predicate(x, y))
            if mask.dtype != np.bool_ or mask.shape != (len(x),):
                raise ConfigurationError(f"filter predicate must return a bool mask of shape "
                                         f"({len(x)},), got {mask.dtype} {mask.shape}")
            kept.append(np.flatnonzero(mask) + start)
        return self._view(np.concatenate(kept) if kept else np.empty(0, np.int64))

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> "PartyDataset":
        """A lazily transformed dataset: fn runs on each feature batch when it is read."""
        return replace(self, transforms=self.transforms + (fn,), owner=None)

    # -- statistics and torch ---------------------------------------------
    def statistics(self, bins: int | None = None, *, edges: np.ndarray | None = None) -> Summary:
        """Streaming count/mean/variance/min/max of the features, label counts and,
        with ``bins`` (uniform over each feature's min..max, a second pass) or
        ``edges`` (shared or per feature; e.g. agreed across parties), a histogram."""
        bs = self.meta.block_size
        moments, labels = Moments.empty(), None
        for x, y in self.batches(bs, shuffle=False):
            m = moments_of(x)
            moments = m if moments.count == 0 else merge_moments(moments, m)
            if y is not None:
                c = label_counts_of(y)
                labels = c if labels is None else merge_label_counts(labels, c)
        hist: Histogram | None = None
        if bins is not None or edges is not None:
            if edges is None:
                edges = uniform_edges(moments.minimum, moments.maximum, int(bins))
            for x, _ in self.batches(bs, shuffle=False):
                h = histogram_of(x, edges)
                hist = h if hist is None else merge_histograms(hist, h)
        return Summary(moments, hist, labels)

    def to_torch(self) -> tuple[Any, Any]:
        """(X, y) as torch tensors owning their memory (y is None without a label)."""
        # Imported here because torch takes seconds to import and most users of
        # the data layer (CLI, statistics, partitioning) never need it.
        from .torch_bridge import to_tensors
        return to_tensors(self.features(), self.labels())

    def dataloader(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                   drop_last: bool = False) -> Any:
        """A torch DataLoader over batches(); epoch e of iteration uses (seed, e)."""
        from .torch_bridge import make_dataloader
        return make_dataloader(self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
