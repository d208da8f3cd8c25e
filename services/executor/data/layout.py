"""Key layout of a party store and the pure steps from arrays to stored blocks.

    environment   <party store dir>/data.mdb            one per party
    sub-db        "__meta__"                            key <dataset> -> metadata JSON
    sub-db        "dataset:<dataset>"                   one per dataset
      key         "<dataset>/<column>/<block:08d>"      -> rows [block*N, (block+1)*N)
                                                           of that column, raw
                                                           little-endian, C order

Zero-padded block numbers make byte order equal block order, so a dataset is
written with append-only puts and a column's blocks sit next to each other.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from .schema import DatasetMeta, Schema, check_columns, check_dataset_name, storage_dtype
from .stats import label_counts_of, merge_label_counts, merge_moments, Moments, moments_of

META_DB = b"__meta__"
DEFAULT_BLOCK_SIZE = 4096


def dataset_db(name: str) -> bytes:
    return b"dataset:" + name.encode()


def block_key(dataset: str, column: str, block: int) -> bytes:
    return f"{dataset}/{column}/{block:08d}".encode()


def build_meta(name: str, columns: Mapping[str, np.ndarray], schema: Schema, *,
               block_size: int = DEFAULT_BLOCK_SIZE, attrs: Mapping | None = None) -> DatasetMeta:
    """Validate the arrays and compute per-column statistics, block by block.

    Streaming per block bounds the float64 scratch memory to one block, so
    importing millions of rows does not double their size in memory.
    """
    check_dataset_name(name)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    n_rows = check_columns(columns, schema)
    stats: dict[str, Moments] = {}
    for spec in schema.columns:
        arr = columns[spec.name]
        m = Moments.empty(spec.shape)
        for start in range(0, n_rows, block_size):
            m = merge_moments(m, moments_of(arr[start:start + block_size]))
        stats[spec.name] = m
    labels = None
    if schema.label is not None:
        y = columns[schema.label]
        labels = label_counts_of(y[:0])
        for start in range(0, n_rows, block_size):
            labels = merge_label_counts(labels, label_counts_of(y[start:start + block_size]))
    return DatasetMeta(name, schema, n_rows, block_size, stats, labels, dict(attrs or {}))


def encode_blocks(meta: DatasetMeta, columns: Mapping[str, np.ndarray]) -> Iterator[tuple[bytes, memoryview]]:
    """(key, value) pairs in key order; values are views of the input when it is
    already little-endian and C-contiguous (no copy), converted otherwise."""
    # Sort by "<column>/" (not by name) because that is the byte order of the keys.
    for spec in sorted(meta.schema.columns, key=lambda c: (c.name + "/").encode()):
        arr = np.ascontiguousarray(columns[spec.name], dtype=storage_dtype(spec.dtype, spec.name))
        flat = arr.reshape(arr.shape[0], spec.row_size) if arr.ndim > 1 else arr
        for b in range(meta.n_blocks):
            start = b * meta.block_size
            block = flat[start:start + meta.block_size]
            yield block_key(meta.name, spec.name, b), memoryview(block).cast("B")


def encoded_size(meta: DatasetMeta) -> int:
    return sum(spec.row_nbytes for spec in meta.schema.columns) * meta.n_rows
