"""Importers: every source round-trips into a party store; bad input is named precisely."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import datasets as skd

from services.executor.data import PartyDataset, PartyStore
from services.executor.data.importers import import_partitioned, import_source, load_source, split_rows
from services.executor.data.synthetic import SyntheticSpec, generate
from shared.errors import ConfigurationError, DataError

CSV = """sepal, width ,kind,id
1.5,2,setosa,1
2.5,,virginica,2

3.0,4.25,setosa,3
"""


def _open(path, name="ds"):
    return PartyDataset.open(path, name)


def test_csv_round_trip_with_string_labels_and_declared_dtypes(tmp_path):
    (tmp_path / "f.csv").write_text(CSV)
    meta = import_source(tmp_path / "p", "ds", f"csv:{tmp_path / 'f.csv'}", label="kind",
                         features=["sepal", "width", "id"], dtypes={"sepal": "float32"}, block_size=2)
    assert meta.n_rows == 3 and meta.attrs["label_names"] == ["setosa", "virginica"]
    with _open(tmp_path / "p") as d:
        s = d.schema
        assert [(c.name, c.dtype) for c in s.columns] == [
            ("kind", "<i8"), ("sepal", "<f4"), ("width", "<f8"), ("id", "<i8")]
        np.testing.assert_array_equal(d.labels(), [0, 1, 0])
        np.testing.assert_array_equal(d.column("sepal"), np.array([1.5, 2.5, 3.0], np.float32))
        assert np.isnan(d.column("width")[1]) and d.column("width")[2] == 4.25  # empty cell -> NaN
        np.testing.assert_array_equal(d.features(), [[1.5, 2, 1], [2.5, np.nan, 2], [3.0, 4.25, 3]])


@pytest.mark.parametrize("text, kwargs, problem", [
    ("a,b\n1,2\n3\n", {}, r"line 3: 1 fields, header has 2"),
    ("a,b\n1,2\n3,x\n", {"label": "a"}, r"column 'b': line 3: 'x' is not a valid float64"),
    ("a,b\n1,2\n\n3,2.5\n", {"dtypes": {"b": "int32"}}, r"column 'b': line 4: '2.5' is not a valid int32"),
    ("a,b\n1,2\n", {"label": "c"}, r"column 'c' missing; header: a, b"),
    ("a,b\n1,2\n", {"label": "a", "features": ["z"]}, r"column 'z' missing"),
    ("", {}, "empty file"),
])
def test_csv_errors_name_file_line_and_column(tmp_path, text, kwargs, problem):
    (tmp_path / "f.csv").write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        load_source(f"csv:{tmp_path / 'f.csv'}", **kwargs)
    assert str(tmp_path / "f.csv") in str(err.value)


def test_npz_round_trip_default_and_named_columns(tmp_path):
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(50, 4)), rng.integers(0, 3, 50), rng.random(50).astype(np.float32)
    np.savez(tmp_path / "a.npz", X=X, y=y, w=w)
    import_source(tmp_path / "p", "ds", f"npz:{tmp_path / 'a.npz'}", block_size=16)
    with _open(tmp_path / "p") as d:
        assert d.schema.label == "y" and d.schema.features == ("X", "w")
        np.testing.assert_array_equal(d.features(), np.column_stack([X, w]))
        np.testing.assert_array_equal(d.labels(), y)
    import_source(tmp_path / "q", "ds", f"npz:{tmp_path / 'a.npz'}", label="w", features=["X"])
    with _open(tmp_path / "q") as d:
        assert d.schema.names == ("w", "X")
        np.testing.assert_array_equal(d.labels(), w)
    np.savez(tmp_path / "u.npz", emb=X)
    import_source(tmp_path / "q", "unlabelled", f"npz:{tmp_path / 'u.npz'}")
    with _open(tmp_path / "q", "unlabelled") as d:
        assert d.schema.label is None and d.schema.features == ("emb",)


def test_npz_mismatch_and_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", X=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"npz .*bad.npz: schema mismatch: column 'X' has 5 rows, column 'y' has 4"):
        load_source(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}, None], dtype=object))  # pickled by numpy
    with pytest.raises(DataError, match=r"key 'X'.*allow_pickle=False"):
        load_source(f"npz:{tmp_path / 'obj.npz'}")
    with pytest.raises(DataError, match="no such file"):
        load_source(f"npz:{tmp_path / 'missing.npz'}")


def test_npy_with_and_without_label_column(tmp_path):
    a = np.column_stack([np.random.default_rng(1).normal(size=(30, 3)), np.arange(30) % 2]).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    import_source(tmp_path / "p", "plain", f"npy:{tmp_path / 'a.npy'}")
    import_source(tmp_path / "p", "labelled", f"npy:{tmp_path / 'a.npy'}", label="-1")
    with _open(tmp_path / "p", "plain") as d:
        assert d.schema.label is None and d.labels() is None
        np.testing.assert_array_equal(d.features(), a)
    with _open(tmp_path / "p", "labelled") as d:
        assert d.schema.column("y").dtype == "<i8"
        np.testing.assert_array_equal(d.features(), a[:, :3])
        np.testing.assert_array_equal(d.labels(), np.arange(30) % 2)
    with pytest.raises(ConfigurationError, match="column index"):
        load_source(f"npy:{tmp_path / 'a.npy'}", label="y")


@pytest.mark.parametrize("name", ["breast_cancer", "digits", "wine", "iris"])
def test_sklearn_bundled_datasets_round_trip(tmp_path, name):
    ref = getattr(skd, f"load_{name}")()
    meta = import_source(tmp_path / "p", name, f"sklearn:{name}", block_size=100)
    assert meta.n_rows == len(ref.target) and meta.attrs["source"] == f"sklearn:{name}"
    assert meta.attrs["feature_names"] == [str(f) for f in ref.feature_names]
    with _open(tmp_path / "p", name) as d:
        np.testing.assert_array_equal(d.features(), ref.data)
        np.testing.assert_array_equal(d.labels(), ref.target)
    with pytest.raises(ConfigurationError, match="known: breast_cancer, digits, wine, iris"):
        load_source("sklearn:mnist")


def test_synthetic_is_seeded_and_shaped(tmp_path):
    spec = "n_rows=70000,n_features=5,n_classes=3,seed=4"
    meta = import_source(tmp_path / "p", "syn", f"synthetic:{spec}")
    x, y = generate(SyntheticSpec.parse(spec))
    assert meta.n_rows == 70000 and x.dtype == np.float32 and set(np.unique(y)) == {0, 1, 2}
    with _open(tmp_path / "p", "syn") as d:
        np.testing.assert_array_equal(d.features(), x)
        np.testing.assert_array_equal(d.labels(), y)
    x2, _ = generate(SyntheticSpec.parse(spec.replace("seed=4", "seed=5")))
    assert not np.array_equal(x, x2)
    # clusters are separated: class means differ by more than the noise
    centres = np.stack([x[y == c].mean(0) for c in range(3)])
    assert np.linalg.norm(centres[0] - centres[1]) > 1.0
    for bad in ("n_rows=x", "bogus=1", "n_features=0"):
        with pytest.raises(ConfigurationError, match="synthetic spec"):
            SyntheticSpec.parse(bad)


def test_partitioned_import_writes_each_party_its_rows(tmp_path):
    table = load_source("sklearn:wine")
    parts = split_rows(table, 3, "dirichlet", alpha=0.3, seed=2)
    metas = import_partitioned(tmp_path / "stores", ["a", "b", "c"], "wine", table,
                               scheme="dirichlet", alpha=0.3, seed=2, block_size=32)
    assert sum(m.n_rows for m in metas.values()) == 178
    for party, rows in zip("abc", parts):
        assert metas[party].attrs["partition"] == {"scheme": "dirichlet", "alpha": 0.3, "seed": 2,
                                                   "party": party, "index": "abc".index(party), "of": 3}
        with _open(tmp_path / "stores" / party, "wine") as d:
            np.testing.assert_array_equal(d.features(), table.columns["X"][rows])
            np.testing.assert_array_equal(d.labels(), table.columns["y"][rows])
    with pytest.raises(ConfigurationError, match="party names"):
        import_partitioned(tmp_path / "s2", ["a", "a"], "wine", table, scheme="iid")
    unlabelled = load_source("synthetic:n_rows=10", label=None)
    with pytest.raises(ConfigurationError, match="unknown partition scheme"):
        split_rows(unlabelled, 2, "random")


def test_unknown_source_kind_and_unknown_dtype():
    with pytest.raises(ConfigurationError, match="expected one of csv:"):
        load_source("parquet:/x")
    with pytest.raises(ConfigurationError, match="unknown dtype 'float99'"):
        load_source("synthetic:n_rows=5", dtypes={"X": "float99"})


def test_object_dtype_rejected_by_the_store(tmp_path):
    with PartyStore.open(tmp_path / "p", readonly=False, create=True) as store:
        from services.executor.data.schema import ColumnSpec, Schema
        schema = Schema((ColumnSpec("X", "<f8"),), None, ("X",))
        with pytest.raises(DataError, match="column 'X': unsupported dtype object"):
            store.put_dataset("ds", {"X": np.array([1.0, "a"], dtype=object)}, schema)
