"""LMDB adapter of a party data store: the only module that imports lmdb.

Writes: a whole dataset (blocks + metadata) in one write transaction, so a
reader sees the old version or the new one, never half. The map grows
before the write from the size estimate, and again on MapFullError.

Reads: a DatasetReader holds one read transaction (buffers=True) for its
whole life. Blocks come back as np.frombuffer views of LMDB's memory map:
no copy, read-only, and valid until the reader (or its store) is closed;
copy anything you keep beyond that. A long-lived read transaction pins its
snapshot, which is what training wants (the data cannot change mid-epoch),
at the price of a writer not reusing those pages until the reader closes.

Handles on one directory within a process share one LMDB environment (LMDB
forbids opening it twice); a writer cannot join a read-only environment, so
close readers of a store before writing to it in the same process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Mapping

import lmdb
import numpy as np

from shared.errors import ConfigurationError, DataError

from .layout import (DEFAULT_BLOCK_SIZE, META_DB, block_key, build_meta, dataset_db,
                     encode_blocks, encoded_size)
from .schema import DatasetMeta, Schema, check_dataset_name

MAX_DATASETS = 1024  # named sub-databases per environment (LMDB needs a bound at open)
_MIN_MAP = 64 << 20


class _Shared:
    """One open environment per store directory and process, shared by handles."""

    def __init__(self, key: Path, env: "lmdb.Environment", readonly: bool):
        self.key, self.env, self.readonly, self.users = key, env, readonly, 0
        self.readers = 0  # open DatasetReaders: their views die if the map is remapped


# LMDB must not open one environment twice in a process (its file locks are
# per process, so closing one copy would drop the other's locks): handles on
# the same directory share one environment, closed with the last handle.
_OPEN: dict[Path, _Shared] = {}
_OPEN_LOCK = threading.Lock()


class PartyStore:
    """A handle on one party's data: one LMDB environment in one directory."""

    def __init__(self, path: Path, shared: _Shared, readonly: bool):
        self.path, self._shared, self._env, self.readonly = path, shared, shared.env, readonly
        self._meta_db = shared.env.open_db(META_DB, create=not shared.readonly)

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = True, create: bool = False,
             map_size: int = _MIN_MAP) -> "PartyStore":
        path = Path(path)
        if not path.is_dir():
            if not create:
                raise DataError(f"store {path}: no such directory")
            path.mkdir(parents=True)
        elif not (path / "data.mdb").exists() and not create:
            raise DataError(f"store {path}: not a data store (no data.mdb)")
        key = path.resolve()
        with _OPEN_LOCK:
            shared = _OPEN.get(key)
            if shared is not None and shared.readonly and not readonly:
                raise ConfigurationError(f"store {path}: already open read-only in this process; "
                                         "close its readers before writing")
            if shared is None:
                try:
                    env = lmdb.open(str(path), readonly=readonly, create=create,
                                    max_dbs=MAX_DATASETS, map_size=map_size, subdir=True)
                except lmdb.Error as exc:
                    raise DataError(f"store {path}: cannot open: {exc}") from exc
                shared = _OPEN[key] = _Shared(key, env, readonly)
            shared.users += 1
        try:
            return cls(path, shared, readonly)
        except lmdb.NotFoundError:
            cls._release(shared)
            raise DataError(f"store {path}: key {META_DB.decode()!r}: metadata sub-database "
                            "missing: not a Ferry data store") from None

    @staticmethod
    def _release(shared: _Shared) -> None:
        with _OPEN_LOCK:
            shared.users -= 1
            if shared.users == 0:
                _OPEN.pop(shared.key, None)
                shared.env.close()

    def close(self) -> None:
        if self._shared is not None:
            self._release(self._shared)
            self._shared = None

    def __enter__(self) -> "PartyStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _err(self, key: bytes | str, problem: str) -> DataError:
        key = key.decode(errors="replace") if isinstance(key, bytes) else key
        return DataError(f"store {self.path}: key {key!r}: {problem}")

    def datasets(self) -> list[str]:
        with self._env.begin() as txn, txn.cursor(self._meta_db) as cur:
            return [k.decode() for k in cur.iternext(keys=True, values=False)]

    def meta(self, name: str) -> DatasetMeta:
        with self._env.begin() as txn:
            return self._meta_in(txn, name)

    def _meta_in(self, txn: "lmdb.Transaction", name: str) -> DatasetMeta:
        raw = txn.get(name.encode(), db=self._meta_db)
        if raw is None:
            known = ", ".join(self.datasets()) or "none"
            raise DataError(f"store {self.path}: unknown dataset {name!r}; known: {known}")
        try:
            return DatasetMeta.from_json(raw)
        except DataError as exc:
            raise self._err(f"{META_DB.decode()}:{name}", str(exc)) from exc

    def put_dataset(self, name: str, columns: Mapping[str, np.ndarray], schema: Schema, *,
                    block_size: int = DEFAULT_BLOCK_SIZE, attrs: Mapping | None = None) -> DatasetMeta:
        """Write (or replace) a dataset atomically; returns its metadata with statistics."""
        if self.readonly:
            raise ConfigurationError(f"store {self.path}: opened read-only, cannot write {name!r}")
        try:
            meta = build_meta(name, columns, schema, block_size=block_size, attrs=attrs)
        except DataError as exc:
            raise DataError(f"store {self.path}: dataset {name!r}: {exc}") from exc
        # Per value: up to one page of slack and a page header; plus B-tree pages.
        psize = self._env.stat()["psize"]
        n_values = meta.n_blocks * len(schema.columns)
        self._ensure_room(encoded_size(meta) + n_values * 2 * psize + (1 << 20))
        for _ in range(8):
            try:
                return self._write(meta, columns)
            except lmdb.MapFullError:
                self._grow(self._env.info()["map_size"] * 2)
        raise DataError(f"store {self.path}: dataset {name!r}: map still full after growing")

    def _write(self, meta: DatasetMeta, columns: Mapping[str, np.ndarray]) -> DatasetMeta:
        db = self._env.open_db(dataset_db(meta.name), create=True)
        with self._env.begin(write=True) as txn:
            txn.drop(db, delete=False)  # replacing: old blocks go in the same transaction
            with txn.cursor(db) as cur:
                # append=True: keys arrive sorted into an empty sub-db, no B-tree searches.
                _, added = cur.putmulti(encode_blocks(meta, columns), append=True)
            # An out-of-order key is skipped, not raised, by append mode: count them.
            if added != meta.n_blocks * len(meta.schema.columns):
                raise DataError(f"store {self.path}: dataset {meta.name!r}: wrote {added} of "
                                f"{meta.n_blocks * len(meta.schema.columns)} blocks; nothing committed")
            txn.put(meta.name.encode(), meta.to_json(), db=self._meta_db)
        return meta

    def _ensure_room(self, extra: int) -> None:
        info, psize = self._env.info(), self._env.stat()["psize"]
        # Copy-on-write: a replaced dataset's old pages are freed only after
        # commit, so the new copy needs room next to everything now in use.
        need = (info["last_pgno"] + 1) * psize + int(extra * 1.1)
        if need > info["map_size"]:
            self._grow(need)

    def _grow(self, size: int) -> None:
        # Growing remaps the file: numpy views held by open readers would then
        # point at unmapped memory, so refuse rather than crash them later.
        if self._shared.readers:
            raise DataError(f"store {self.path}: cannot grow the map to {size} bytes while "
                            f"{self._shared.readers} reader(s) are open in this process")
        try:
            self._env.set_mapsize(size)
        except lmdb.Error as exc:  # LMDB refuses while this process has open transactions
            raise DataError(f"store {self.path}: cannot grow the map to {size} bytes: {exc}") from exc

    def delete_dataset(self, name: str) -> None:
        if self.readonly:
            raise ConfigurationError(f"store {self.path}: opened read-only, cannot delete {name!r}")
        check_dataset_name(name)
        self.meta(name)  # unknown dataset -> DataError listing known ones
        db = self._env.open_db(dataset_db(name), create=False)
        with self._env.begin(write=True) as txn:
            txn.drop(db, delete=True)
            txn.delete(name.encode(), db=self._meta_db)

    def reader(self, name: str) -> "DatasetReader":
        check_dataset_name(name)
        meta = self.meta(name)  # unknown dataset -> DataError listing known ones
        try:
            # Opened outside the reader's transaction: a handle first opened in a
            # transaction that is later aborted would be closed with it.
            db = self._env.open_db(dataset_db(name), create=False)
        except lmdb.NotFoundError:
            raise self._err(dataset_db(name), "dataset sub-database missing") from None
        try:
            txn = self._env.begin(buffers=True)
        except lmdb.MapResizedError:
            # Another process grew the map: adopt its size (a remap, so only
            # when no reader of this process holds views of the old mapping).
            if self._shared.readers:
                raise DataError(f"store {self.path}: grown by another process while readers "
                                "are open here; close them and reopen the store") from None
            self._env.set_mapsize(0)
            txn = self._env.begin(buffers=True)
        try:
            meta = self._meta_in(txn, name)  # the snapshot's own metadata
        except BaseException:
            txn.abort()
            raise
        with _OPEN_LOCK:
            self._shared.readers += 1
        return DatasetReader(self, txn, db, meta)


class DatasetReader:
    """Zero-copy access to one dataset's blocks inside one long-lived read transaction."""

    def __init__(self, store: PartyStore, txn: "lmdb.Transaction", db, meta: DatasetMeta):
        self.store, self.meta, self._shared = store, meta, store._shared
        self._txn, self._db = txn, db
        self._blocks: dict[tuple[str, int], np.ndarray] = {}

    def close(self) -> None:
        if self._txn is not None:
            self._blocks.clear()
            self._txn.abort()  # read-only: abort == commit, and never fails
            self._txn = None
            with _OPEN_LOCK:
                self._shared.readers -= 1

    def block(self, column: str, b: int) -> np.ndarray:
        """Rows of one block as a read-only view of the map, shape (rows, *row_shape)."""
        cached = self._blocks.get((column, b))
        if cached is not None:
            return cached
        if self._txn is None:
            raise DataError(f"store {self.store.path}: dataset {self.meta.name!r}: reader is closed")
        spec, meta = self.meta.schema.column(column), self.meta
        if not 0 <= b < meta.n_blocks:
            raise IndexError(f"block {b} outside 0..{meta.n_blocks - 1}")
        key = block_key(meta.name, column, b)
        buf = self._txn.get(key, db=self._db)
        if buf is None:
            raise self.store._err(key, f"block missing (dataset declares {meta.n_blocks} blocks)")
        rows, got = meta.block_rows(b), len(buf)
        if got != rows * spec.row_nbytes:
            why = ("truncated block value" if got % spec.row_nbytes else "block row count mismatch")
            raise self.store._err(key, f"{why}: {got} bytes, expected {rows} rows x {spec.row_nbytes}"
                                       f" bytes ({spec.dtype} x {list(spec.shape)}) = "
                                       f"{rows * spec.row_nbytes}")
        arr = np.frombuffer(buf, dtype=spec.np_dtype).reshape((rows, *spec.shape))
        self._blocks[(column, b)] = arr
        return arr

    def slice(self, column: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop): a view when inside one block, else one concatenated copy."""
        bs, n = self.meta.block_size, self.meta.n_rows
        start, stop = max(0, start), min(stop, n)
        if stop <= start:
            spec = self.meta.schema.column(column)
            return np.empty((0, *spec.shape), spec.np_dtype)
        first, last = start // bs, (stop - 1) // bs
        if first == last:
            return self.block(column, first)[start - first * bs:stop - first * bs]
        parts = [self.block(column, b)[max(start - b * bs, 0):stop - b * bs]
                 for b in range(first, last + 1)]
        return np.concatenate(parts)

    def take(self, column: str, rows: np.ndarray) -> np.ndarray:
        """Rows at arbitrary indices (a copy), grouped per block: one fancy index per block."""
        rows = np.asarray(rows, dtype=np.int64)
        spec, bs = self.meta.schema.column(column), self.meta.block_size
        if rows.size and (rows.min() < 0 or rows.max() >= self.meta.n_rows):
            raise IndexError(f"row index outside 0..{self.meta.n_rows - 1}")
        blocks = rows // bs
        if rows.size and blocks[0] == blocks[-1] and (blocks == blocks[0]).all():
            return self.block(column, int(blocks[0]))[rows - blocks[0] * bs]
        out = np.empty((len(rows), *spec.shape), spec.np_dtype)
        order = np.argsort(blocks, kind="stable")
        sorted_blocks = blocks[order]
        cuts = np.flatnonzero(np.diff(sorted_blocks)) + 1
        for seg in np.split(order, cuts):
            if seg.size:
                b = int(blocks[seg[0]])
                out[seg] = self.block(column, b)[rows[seg] - b * bs]
        return out

    def verify(self) -> None:
        """Read every block once: raises the first DataError (missing or truncated key)."""
        for spec in self.meta.schema.columns:
            for b in range(self.meta.n_blocks):
                self.block(spec.name, b)
