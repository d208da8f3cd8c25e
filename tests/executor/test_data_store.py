"""LMDB party store: round-trips, key layout, zero-copy reads, growth, corruption errors."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import lmdb  # only to inspect and corrupt stores from the outside
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from services.executor.data import ColumnSpec, PartyStore, Schema
from services.executor.data.layout import META_DB, block_key, dataset_db
from shared.errors import ConfigurationError, DataError


def _columns(n: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(n, 3)).astype(np.float32),
            "img": rng.integers(0, 255, (n, 2, 2), dtype=np.uint8),
            "flag": rng.random(n) > 0.5,
            "big": rng.normal(size=n).astype(">f8"),  # big-endian input is stored little-endian
            "y": (np.arange(n) % 4).astype(np.int16)}


def _put(path: Path, cols=None, name: str = "ds", block_size: int = 16, **kw):
    cols = _columns() if cols is None else cols
    with PartyStore.open(path, readonly=False, create=True, **kw) as store:
        return store.put_dataset(name, cols, Schema.infer(cols, label="y"), block_size=block_size)


def _raw_env(path: Path):
    return lmdb.open(str(path), max_dbs=16)


def test_round_trip_every_column_and_metadata(tmp_path):
    cols = _columns(100)
    meta = _put(tmp_path / "p", cols, block_size=16)
    assert (meta.n_rows, meta.block_size, meta.n_blocks) == (100, 16, 7)
    with PartyStore.open(tmp_path / "p") as store:
        got = store.meta("ds")
        assert got.schema == meta.schema and got.n_rows == 100
        assert got.schema.column("big").dtype == "<f8" and got.schema.column("img").shape == (2, 2)
        np.testing.assert_allclose(got.stats["X"].mean, cols["X"].astype(np.float64).mean(0))
        np.testing.assert_allclose(got.stats["X"].variance, cols["X"].astype(np.float64).var(0))
        assert got.labels.as_dict() == {0: 25, 1: 25, 2: 25, 3: 25}
        r = store.reader("ds")
        for name, arr in cols.items():
            out = r.slice(name, 0, 100)
            assert out.dtype == arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
            np.testing.assert_array_equal(out, arr)
        idx = np.array([99, 3, 17, 17, 64, 0])
        np.testing.assert_array_equal(r.take("img", idx), cols["img"][idx])
        r.verify()
        r.close()


def test_key_layout_is_documented_one(tmp_path):
    _put(tmp_path / "p", block_size=40)
    env = _raw_env(tmp_path / "p")
    db, meta_db = env.open_db(dataset_db("ds")), env.open_db(META_DB)
    with env.begin() as txn:
        keys = [k.decode() for k in txn.cursor(db).iternext(values=False)]
        meta = json.loads(txn.get(b"ds", db=meta_db))
        first = txn.get(b"ds/X/00000000", db=db)
    env.close()
    assert keys == [f"ds/{c}/{b:08d}" for c in ("X", "big", "flag", "img", "y") for b in range(3)]
    assert block_key("ds", "X", 2) == b"ds/X/00000002"
    assert meta["n_rows"] == 100 and meta["schema"]["label"] == "y"
    assert len(first) == 40 * 3 * 4  # 40 rows x 3 float32, raw


def test_column_names_that_sort_around_the_separator(tmp_path):
    # "a b" < "a" + "/" < "a0" as bytes: block keys must still be written in key order.
    cols = {"a": np.arange(50), "a b": np.arange(50) * 2, "a0": np.arange(50) * 3, "y": np.zeros(50)}
    _put(tmp_path / "p", cols, block_size=8)
    with PartyStore.open(tmp_path / "p") as store:
        r = store.reader("ds")
        for name, arr in cols.items():
            np.testing.assert_array_equal(r.slice(name, 0, 50), arr)
        r.close()


def test_slices_inside_a_block_are_zero_copy_views(tmp_path):
    cols = _columns(100)
    _put(tmp_path / "p", cols, block_size=32)
    with PartyStore.open(tmp_path / "p") as store:
        r = store.reader("ds")
        inside = r.slice("X", 33, 60)
        assert not inside.flags.owndata and not inside.flags.writeable
        assert np.shares_memory(inside, r.block("X", 1))
        across = r.slice("X", 20, 70)  # spans blocks 0..2: one copy
        assert not np.shares_memory(across, r.block("X", 1))
        np.testing.assert_array_equal(across, cols["X"][20:70])
        assert r.slice("X", 90, 200).shape == (10, 3) and r.slice("X", 50, 50).shape == (0, 3)
        r.close()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 60), block=st.integers(1, 9), data=st.data(),
       dtype=st.sampled_from(["<f4", "<i8", "|u1", "|b1", "<f2", ">i4"]))
def test_any_slice_equals_numpy(n, block, data, dtype):
    arr = (np.arange(n * 2) % 7).astype(dtype).reshape(n, 2)
    with tempfile.TemporaryDirectory() as tmp:
        _put(Path(tmp), {"a": arr, "y": np.zeros(n, np.int8)}, block_size=block)
        with PartyStore.open(tmp) as store:
            r = store.reader("ds")
            start = data.draw(st.integers(0, n))
            stop = data.draw(st.integers(start, n))
            np.testing.assert_array_equal(r.slice("a", start, stop), arr[start:stop])
            r.close()


def test_replace_is_atomic_and_drops_old_blocks(tmp_path):
    _put(tmp_path / "p", _columns(100), block_size=10)
    new = _columns(15, seed=1)
    _put(tmp_path / "p", new, block_size=10)
    env = _raw_env(tmp_path / "p")
    db = env.open_db(dataset_db("ds"))
    with env.begin() as txn:
        keys = list(txn.cursor(db).iternext(values=False))
    env.close()
    assert len(keys) == 5 * 2  # 5 columns x 2 blocks; the old 10 blocks are gone
    with PartyStore.open(tmp_path / "p") as store:
        r = store.reader("ds")
        np.testing.assert_array_equal(r.slice("X", 0, 15), new["X"])
        r.close()


def test_several_datasets_list_and_delete(tmp_path):
    _put(tmp_path / "p", name="b")
    _put(tmp_path / "p", name="a")
    with PartyStore.open(tmp_path / "p", readonly=False) as store:
        assert store.datasets() == ["a", "b"]
        store.delete_dataset("a")
        assert store.datasets() == ["b"]
        with pytest.raises(DataError, match="unknown dataset 'a'; known: b"):
            store.reader("a")


def test_map_grows_beyond_initial_size(tmp_path):
    cols = {"X": np.ones((200_000, 8), np.float32), "y": np.zeros(200_000, np.int64)}  # 8 MB
    meta = _put(tmp_path / "p", cols, block_size=4096, map_size=1 << 20)
    with PartyStore.open(tmp_path / "p") as store:
        assert store._env.info()["map_size"] > 8 << 20
        r = store.reader("ds")
        assert r.slice("X", 0, meta.n_rows).sum() == 200_000 * 8
        r.close()


def test_handles_on_one_directory_share_one_environment(tmp_path):
    _put(tmp_path / "p", name="a")
    _put(tmp_path / "p", name="b")
    first, second = PartyStore.open(tmp_path / "p"), PartyStore.open(tmp_path / "p")
    ra, rb = first.reader("a"), second.reader("b")
    with pytest.raises(ConfigurationError, match="already open read-only"):
        PartyStore.open(tmp_path / "p", readonly=False)
    ra.close()
    first.close()
    first.close()  # idempotent; the other handle's environment stays open
    assert rb.slice("X", 0, 3).shape == (3, 3)
    rb.close()
    second.close()
    with PartyStore.open(tmp_path / "p", readonly=False) as writer:  # all readers gone
        writer.delete_dataset("a")


def test_growing_the_map_under_open_readers_is_refused(tmp_path):
    # A remap would leave the readers' zero-copy views pointing at unmapped memory.
    small = _columns(10)
    with PartyStore.open(tmp_path / "p", readonly=False, create=True, map_size=1 << 20) as store:
        store.put_dataset("a", small, Schema.infer(small, label="y"))
        reader = store.reader("a")
        view = reader.slice("X", 0, 10)
        big = {"X": np.ones((100_000, 8)), "y": np.zeros(100_000)}  # 7 MB > 1 MB map
        with pytest.raises(DataError, match=r"cannot grow the map .* 1 reader\(s\) are open"):
            store.put_dataset("b", big, Schema.infer(big, label="y"))
        np.testing.assert_array_equal(view, small["X"])  # still mapped, still intact
        reader.close()
        assert store.put_dataset("b", big, Schema.infer(big, label="y")).n_rows == 100_000


def test_read_only_store_refuses_writes(tmp_path):
    _put(tmp_path / "p")
    with PartyStore.open(tmp_path / "p") as store:
        with pytest.raises(ConfigurationError, match="read-only"):
            store.put_dataset("z", _columns(), Schema.infer(_columns(), label="y"))


def test_missing_or_foreign_store_dirs(tmp_path):
    with pytest.raises(DataError, match=f"store {tmp_path / 'nope'}: no such directory"):
        PartyStore.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a data store"):
        PartyStore.open(tmp_path / "empty")


def _corrupt(path: Path, key: bytes, value: bytes | None) -> None:
    env = _raw_env(path)
    db = env.open_db(dataset_db("ds"))
    with env.begin(write=True) as txn:
        txn.delete(key, db=db) if value is None else txn.put(key, value, db=db)
    env.close()


@pytest.mark.parametrize("mutate, problem", [
    (lambda v: v[:-1], r"truncated block value: 191 bytes, expected 16 rows x 12 bytes"),
    (lambda v: v[:-12], r"block row count mismatch: 180 bytes"),
    (lambda v: None, r"block missing \(dataset declares 7 blocks\)"),
])
def test_corrupt_blocks_are_named(tmp_path, mutate, problem):
    _put(tmp_path / "p", block_size=16)
    env = _raw_env(tmp_path / "p")
    db = env.open_db(dataset_db("ds"))
    with env.begin() as txn:
        value = txn.get(b"ds/X/00000001", db=db)
    env.close()
    _corrupt(tmp_path / "p", b"ds/X/00000001", mutate(value))
    with PartyStore.open(tmp_path / "p") as store:
        r = store.reader("ds")
        r.slice("X", 0, 16)  # other blocks still read
        with pytest.raises(DataError) as err:
            r.slice("X", 10, 20)
        msg = str(err.value)
        assert f"store {tmp_path / 'p'}" in msg and "key 'ds/X/00000001'" in msg
        assert re.search(problem, msg), msg
        with pytest.raises(DataError, match="ds/X/00000001"):
            r.verify()
        r.close()


def test_malformed_metadata_names_its_key(tmp_path):
    _put(tmp_path / "p")
    env = _raw_env(tmp_path / "p")
    meta_db = env.open_db(META_DB)
    with env.begin(write=True) as txn:
        txn.put(b"ds", b"{not json", db=meta_db)
    env.close()
    with PartyStore.open(tmp_path / "p") as store:
        with pytest.raises(DataError, match=r"key '__meta__:ds': malformed metadata"):
            store.meta("ds")


_GOOD = Schema.infer({"X": np.zeros((5, 2)), "y": np.zeros(5)}, label="y")


@pytest.mark.parametrize("cols, schema, problem", [
    ({"X": np.zeros((5, 2)), "y": np.zeros(4)}, _GOOD, "column 'y' has 4 rows, column 'X' has 5"),
    ({"X": np.zeros((5, 2))}, Schema((ColumnSpec("X", "<f8", (2,)),), "y", ("X",)),
     "label column 'y' missing; columns: X"),
    ({"X": np.array([[object()] * 2] * 5), "y": np.zeros(5)}, _GOOD, "unsupported dtype object"),
    ({"X": np.array([["a"] * 2] * 5), "y": np.zeros(5)}, _GOOD, "unsupported dtype <U1"),
    ({"X": np.zeros((5, 2), np.float32), "y": np.zeros(5)}, _GOOD,
     "column 'X' is float32[2] per row, schema says float64[2]"),
    ({"X": np.zeros((5, 2)), "y": np.zeros((5, 2))},
     Schema((ColumnSpec("X", "<f8", (2,)), ColumnSpec("y", "<f8", (2,))), "y", ("X",)),
     "label column 'y' must hold one value per row"),
])
def test_schema_mismatch_on_put_names_store_dataset_and_problem(tmp_path, cols, schema, problem):
    with PartyStore.open(tmp_path / "p", readonly=False, create=True) as store:
        with pytest.raises(DataError) as err:
            store.put_dataset("ds", cols, schema)
        assert f"store {tmp_path / 'p'}: dataset 'ds': " in str(err.value)
        assert problem in str(err.value)
        assert store.datasets() == []


def test_schema_infer_rejects_object_columns():
    with pytest.raises(DataError, match="column 'X': unsupported dtype object"):
        Schema.infer({"X": np.array([None, 1], dtype=object)})


def test_invalid_dataset_name(tmp_path):
    with PartyStore.open(tmp_path / "p", readonly=False, create=True) as store:
        with pytest.raises(ConfigurationError, match="invalid dataset name"):
            store.put_dataset("../x", _columns(), Schema.infer(_columns(), label="y"))
