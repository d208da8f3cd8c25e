"""`ferry data import|info`: output, partitioned import, exit codes and error messages."""

from __future__ import annotations

import io
import json

import lmdb  # only to corrupt a block from the outside
import numpy as np

from services.executor.data import PartyDataset
from services.executor.data.cli import main
from services.executor.data.layout import dataset_db


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_import_then_info_text_and_json(tmp_path):
    store = str(tmp_path / "p")
    rc, out, err = _run("data", "import", "--store", store, "--dataset", "wine", "--source", "sklearn:wine")
    assert (rc, err) == (0, "") and "wine: 178 rows imported" in out
    rc, out, _ = _run("info", "--store", store, "--verify")
    assert rc == 0
    assert "1 dataset(s) (verified)" in out and "dataset wine: 178 rows, 1 blocks of 4096" in out
    assert "label counts: {0: 59, 1: 71, 2: 48}" in out and "column X: <f8 [13]" in out
    rc, out, _ = _run("info", "--store", store, "--dataset", "wine", "--json")
    (d,) = json.loads(out)["datasets"]
    assert d["rows"] == 178 and d["schema"]["label"] == "y"
    assert d["stats"]["y"]["count"] == 178 and d["labels"]["counts"] == [59, 71, 48]


def test_partitioned_import_writes_one_store_per_party(tmp_path):
    root = tmp_path / "stores"
    rc, out, err = _run("import", "--dataset", "syn", "--source",
                        "synthetic:n_rows=5000,n_features=4,n_classes=5,seed=1",
                        "--parties", "h1,h2,h3", "--partition", "dirichlet", "--alpha", "0.2",
                        "--seed", "3", "--stores-root", str(root), "--block-size", "512")
    assert rc == 0, err
    sizes = {}
    for party in ("h1", "h2", "h3"):
        assert f"{root}/{party}: syn:" in out
        with PartyDataset.open(root / party, "syn") as d:
            sizes[party] = len(d)
            assert d.meta.block_size == 512 and d.meta.attrs["partition"]["party"] == party
    assert sum(sizes.values()) == 5000


def test_csv_import_with_features_and_dtypes(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,c,label\n1,2,3,x\n4,5,6,y\n")
    rc, _, err = _run("import", "--store", str(tmp_path / "p"), "--dataset", "t", "--source",
                      f"csv:{tmp_path / 't.csv'}", "--label", "label", "--features", "a,c",
                      "--dtypes", "a=float32,c=int16")
    assert rc == 0, err
    with PartyDataset.open(tmp_path / "p", "t") as d:
        assert [c.dtype for c in d.schema.columns] == ["<i8", "<f4", "<i2"]
        np.testing.assert_array_equal(d.features(), [[1, 3], [4, 6]])


def test_errors_name_store_key_and_problem_and_exit_non_zero(tmp_path):
    store = str(tmp_path / "p")
    rc, out, err = _run("info", "--store", store)
    assert rc == 3 and out == "" and f"store {store}: no such directory" in err
    _run("import", "--store", store, "--dataset", "iris", "--source", "sklearn:iris")
    rc, _, err = _run("info", "--store", store, "--dataset", "irs")
    assert rc == 3 and "unknown dataset 'irs'; known: iris" in err

    env = lmdb.open(store, max_dbs=8)
    db = env.open_db(dataset_db("iris"))
    with env.begin(write=True) as txn:
        txn.put(b"iris/X/00000000", txn.get(b"iris/X/00000000", db=db)[:-3], db=db)
    env.close()
    rc, _, err = _run("info", "--store", store, "--verify")
    assert rc == 3 and f"store {store}: key 'iris/X/00000000': truncated block value" in err
    assert "Traceback" not in err


def test_usage_errors_return_two(tmp_path):
    rc, _, err = _run("import", "--store", str(tmp_path / "p"), "--dataset", "x", "--source", "hdf5:x")
    assert rc == 2 and "expected one of csv:" in err
    rc, _, err = _run("import", "--dataset", "x", "--source", "sklearn:iris", "--parties", "a,b")
    assert rc == 2 and "--stores-root" in err
    rc, _, err = _run("import", "--store", str(tmp_path / "p"), "--dataset", "../x", "--source", "sklearn:iris")
    assert rc == 2 and "invalid dataset name" in err
    assert _run("frobnicate")[0] == 2


def test_a_split_column_from_the_source_marks_the_held_out_rows(tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,y,fold\n" + "".join(f"{i},{i * 2},{i % 2},{'test' if i % 4 == 0 else 'train'}\n"
                                           for i in range(40)))
    store = str(tmp_path / "p")
    rc, out, err = _run("import", "--store", store, "--dataset", "d", "--source", f"csv:{csv}", "--label", "y",
                        "--features", "a,b", "--split", "fold")
    assert (rc, err) == (0, ""), err
    with PartyDataset.open(store, "d") as data:
        assert data.schema.features == ("a", "b") and "fold" not in [c.name for c in data.schema.columns]
        split = np.array(data.column("split"))
    assert split.tolist() == [1 if i % 4 == 0 else 0 for i in range(40)]
    csv.write_text("a,y,fold\n1,0,maybe\n")
    rc, _, err = _run("import", "--store", store, "--dataset", "e", "--source", f"csv:{csv}", "--label", "y",
                      "--split", "fold")
    assert rc != 0 and "'fold' row 0 is 'maybe'" in err
    csv.write_text("a,y\n1,0\n")
    rc, _, err = _run("import", "--store", store, "--dataset", "e", "--source", f"csv:{csv}", "--label", "y",
                      "--split", "nope")
    assert rc != 0 and "column 'nope' is not in the source" in err, err


def test_a_held_out_fraction_is_chosen_once_before_partitioning(tmp_path):
    root = tmp_path / "stores"
    rc, _, err = _run("import", "--dataset", "bc", "--source", "sklearn:breast_cancer", "--parties", "h1,h2",
                      "--stores-root", str(root), "--test-fraction", "0.25", "--seed", "3")
    assert (rc, err) == (0, "")
    held = 0
    for party in ("h1", "h2"):
        with PartyDataset.open(str(root / party), "bc") as data:
            held += int(np.array(data.column("split")).sum())
    assert held == round(0.25 * 569)
    rc, _, err = _run("import", "--store", str(tmp_path / "x"), "--dataset", "bc", "--source",
                      "sklearn:breast_cancer", "--split", "y", "--test-fraction", "0.2")
    assert rc == 2  # argparse: --split and --test-fraction exclude each other
