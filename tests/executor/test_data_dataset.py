"""PartyDataset: batching determinism and coverage, views, statistics, torch."""

from __future__ import annotations

import numpy as np
import pytest

from services.executor.data import PartyDataset, PartyStore, Schema, merge_summaries
from services.executor.data.partition import iid
from shared.errors import ConfigurationError, DataError

N, BLOCK = 1000, 64


def _data(n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 3)).astype(np.float32) * [1, 5, 0.5] + [0, 100, -3]
    x[:, 0] = np.arange(n)  # feature 0 is the row id, so batches can be traced to rows
    return {"X": x.astype(np.float32), "y": np.arange(n) % 5}


def _write(path, cols, block_size=BLOCK, name="ds", **schema):
    with PartyStore.open(path, readonly=False, create=True) as store:
        store.put_dataset(name, cols, Schema.infer(cols, **(schema or {"label": "y"})),
                          block_size=block_size)


@pytest.fixture
def ds(tmp_path):
    _write(tmp_path / "p", _data())
    with PartyDataset.open(tmp_path / "p", "ds") as d:
        yield d


def _ids(batches) -> list[np.ndarray]:
    return [x[:, 0].astype(np.int64) for x, _ in batches]


def test_sequential_batches_are_the_array_and_views_when_inside_a_block(ds):
    cols = _data()
    got = list(ds.batches(32, shuffle=False))
    assert len(got) == -(-N // 32)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), cols["X"])
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), cols["y"])
    assert all(not x.flags.owndata and not x.flags.writeable for x, _ in got)
    assert len(ds) == N and ds.features().shape == (N, 3)


@pytest.mark.parametrize("batch", [1, 7, 64, 100, 5000])
@pytest.mark.parametrize("window", [1, 3, 100])
def test_shuffled_epoch_covers_every_row_once_in_epoch_order(ds, batch, window):
    batches = list(ds.batches(batch, shuffle=True, seed=3, epoch=2, window=window))
    ids = np.concatenate(_ids(batches))
    assert sorted(ids.tolist()) == list(range(N))
    np.testing.assert_array_equal(ids, ds.epoch_order(seed=3, epoch=2, window=window))
    assert all(len(x) == batch for x, _ in batches[:-1])
    for x, y in batches:  # labels travel with their rows
        np.testing.assert_array_equal(y, x[:, 0].astype(np.int64) % 5)


def test_drop_last_drops_only_the_partial_tail(ds):
    batches = list(ds.batches(300, shuffle=True, seed=0, drop_last=True))
    assert [len(x) for x, _ in batches] == [300, 300, 300]
    assert len(set(np.concatenate(_ids(batches)).tolist())) == 900
    assert [len(x) for x, _ in ds.batches(300, shuffle=False, drop_last=True)] == [300] * 3


def test_order_is_reproducible_per_seed_and_epoch_and_differs_otherwise(ds):
    def order(seed, epoch):
        return np.concatenate(_ids(ds.batches(50, shuffle=True, seed=seed, epoch=epoch)))
    np.testing.assert_array_equal(order(1, 0), order(1, 0))
    assert not np.array_equal(order(1, 0), order(1, 1))
    assert not np.array_equal(order(1, 0), order(2, 0))
    assert not np.array_equal(order(1, 0), np.arange(N))


def test_window_one_keeps_batches_inside_blocks_and_large_windows_mix(ds):
    one = ds.epoch_order(seed=0, epoch=0, window=1)
    # with window=1 each block's rows are consecutive in the order
    blocks = one // BLOCK
    assert np.count_nonzero(np.diff(blocks)) == -(-N // BLOCK) - 1
    full = ds.epoch_order(seed=0, epoch=0, window=10_000)
    assert len(np.unique(full[:BLOCK] // BLOCK)) > 8


def test_bad_batch_arguments(ds):
    with pytest.raises(ConfigurationError, match="batch_size"):
        next(ds.batches(0, shuffle=True))
    with pytest.raises(ConfigurationError, match="seed"):
        next(ds.batches(4, shuffle=True, seed=-1))


def test_train_test_split_is_disjoint_covering_and_seeded(ds):
    train, test = ds.train_test_split(0.25, seed=5)
    a, b = train.rows, test.rows
    assert len(test) == 250 and len(train) == 750 and not set(a) & set(b)
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(N))
    np.testing.assert_array_equal(test.features()[:, 0].astype(np.int64), b)
    np.testing.assert_array_equal(test.labels(), b % 5)
    np.testing.assert_array_equal(ds.train_test_split(0.25, seed=5)[1].rows, b)
    assert not np.array_equal(ds.train_test_split(0.25, seed=6)[1].rows, b)
    ids = np.concatenate(_ids(test.batches(16, shuffle=True, seed=1)))
    assert sorted(ids.tolist()) == sorted(b.tolist())
    with pytest.raises(ConfigurationError, match="test_fraction"):
        ds.train_test_split(1.0, seed=0)


def test_filter_and_map_compose_lazily(ds):
    evens = ds.filter(lambda x, y: y % 2 == 0)
    assert len(evens) == 600 and set(np.unique(evens.labels())) == {0, 2, 4}
    scaled = evens.map(lambda x: x * 2)
    np.testing.assert_array_equal(scaled.features(), evens.features() * 2)
    assert len(ds) == N and len(ds.features()) == N  # the source is untouched
    big = scaled.filter(lambda x, y: x[:, 0] >= 1000)  # predicate sees mapped features
    upper = np.arange(500, N)
    np.testing.assert_array_equal(big.rows, upper[upper % 5 % 2 == 0])
    np.testing.assert_array_equal(big.column("y"), big.rows % 5)
    with pytest.raises(ConfigurationError, match="bool mask"):
        ds.filter(lambda x, y: np.ones(3, bool))


def test_statistics_equal_numpy_on_the_full_array(ds):
    x = _data()["X"].astype(np.float64)
    s = ds.statistics(bins=6)
    assert s.moments.count == N
    np.testing.assert_allclose(s.moments.mean, x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(s.moments.variance, x.var(0), rtol=1e-9)
    np.testing.assert_array_equal(s.moments.minimum, x.min(0))
    np.testing.assert_array_equal(s.moments.maximum, x.max(0))
    for j in range(3):
        np.testing.assert_array_equal(s.histogram.counts[j],
                                      np.histogram(x[:, j], 6, (x[:, j].min(), x[:, j].max()))[0])
    assert s.labels.as_dict() == {k: 200 for k in range(5)}
    mapped = ds.map(lambda b: b[:, 1:] * 0.5).statistics()
    np.testing.assert_allclose(mapped.moments.mean, x[:, 1:].mean(0) * 0.5, rtol=1e-10)


def test_per_party_statistics_merge_to_pooled(tmp_path):
    cols = _data()
    parts = iid(N, 3, seed=1)
    summaries = []
    edges = np.linspace(-10, 1010, 9)  # agreed by the parties beforehand
    for i, rows in enumerate(parts):
        _write(tmp_path / f"p{i}", {k: v[rows] for k, v in cols.items()}, block_size=50)
        with PartyDataset.open(tmp_path / f"p{i}", "ds") as d:
            summaries.append(d.statistics(edges=edges))
    pooled = summaries[0]
    for s in summaries[1:]:
        pooled = merge_summaries(pooled, s)
    x = cols["X"].astype(np.float64)
    np.testing.assert_allclose(pooled.moments.mean, x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(pooled.moments.std, x.std(0), rtol=1e-9)
    np.testing.assert_array_equal(pooled.histogram.counts[0], np.histogram(x[:, 0], edges)[0])
    assert pooled.labels.total == N
    standardised = (x - pooled.moments.mean) / pooled.moments.std  # federated standardisation
    np.testing.assert_allclose(standardised.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(standardised.std(0), 1, rtol=1e-9)


def test_scalar_feature_columns_are_joined_in_schema_order(tmp_path):
    cols = {"b": np.arange(10, dtype=np.int32), "a": np.linspace(0, 1, 10), "t": np.ones(10, bool)}
    _write(tmp_path / "p", cols, block_size=4, label="t", features=["a", "b"])
    with PartyDataset.open(tmp_path / "p", "ds") as d:
        x = d.features()
        assert x.dtype == np.float64 and x.shape == (10, 2)
        np.testing.assert_array_equal(x, np.column_stack([cols["a"], cols["b"]]))
        np.testing.assert_array_equal(next(d.batches(3, shuffle=False))[0], x[:3])


def test_torch_tensors_and_deterministic_dataloader(ds):
    torch = pytest.importorskip("torch")
    X, y = ds.to_torch()
    assert X.dtype == torch.float32 and y.dtype == torch.int64 and X.shape == (N, 3)
    np.testing.assert_array_equal(X.numpy(), _data()["X"])
    X[0, 0] = -1  # the tensor owns its memory: writing does not touch the store
    assert ds.features()[0, 0] == 0

    def epochs(loader, n):
        return [torch.cat([xb[:, 0] for xb, _ in loader]) for _ in range(n)]
    a, b = epochs(ds.dataloader(128, shuffle=True, seed=9), 2), epochs(ds.dataloader(128, shuffle=True, seed=9), 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], a[1])
    assert sorted(a[1].long().tolist()) == list(range(N))
    loader = ds.dataloader(128, shuffle=True, seed=9)
    loader.dataset.set_epoch(1)  # resuming at epoch 1 replays epoch 1
    assert torch.equal(epochs(loader, 1)[0], a[1]) and len(loader) == 8


def test_reads_after_close_fail_cleanly(tmp_path):
    _write(tmp_path / "p", _data())
    d = PartyDataset.open(tmp_path / "p", "ds")
    view = d.train_test_split(0.5, seed=0)[0]
    d.close()
    with pytest.raises(DataError, match="reader is closed"):
        view.features()


def test_unknown_dataset_lists_known_ones(tmp_path):
    _write(tmp_path / "p", _data(), name="alpha")
    with pytest.raises(DataError, match=r"store .*/p: unknown dataset 'beta'; known: alpha"):
        PartyDataset.open(tmp_path / "p", "beta")
