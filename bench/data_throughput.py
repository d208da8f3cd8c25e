"""Batch and import throughput of the party data store vs plain NumPy files.

    python bench/data_throughput.py [--quick] [--rows N] [--features F]

Readers, each over the same float32 synthetic rows (X: rows x F, y: int64):
  ferry      PartyDataset.batches over an LMDB party store
  npy-ram    np.load of X.npy/y.npy into memory, then slicing
  npy-mmap   np.load(mmap_mode="r"), then slicing
for batch sizes 256 and 4096, sequential and shuffled (shuffled readers all
follow the same block-window order from PartyDataset.epoch_order, so the
comparison is of storage, not of sampling schemes).

Mode "touch" sums every batch: every byte is computed on, as training would,
and GB/s counts them all. Mode "iter" only receives the batches (the cost of
the data layer itself), so its GB/s counts only the bytes the reader actually
copied: a zero-copy view (a slice of an in-RAM array, of a file map or of the
LMDB map) moves no bytes and counts 0. Its rows/s is the honest speed of
handing out views; `copied_share` says which part of the batches were copies.
All files are in the page cache (they were just written): these are
warm-cache numbers. Results go to bench/results/data_throughput.json with
top-level gb_per_s = ferry, sequential, batch 4096, touch, plus `commit` and
`clean_tree` (bench/_common.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import provenance  # noqa: E402

from services.executor.data import PartyDataset, PartyStore, Schema  # noqa: E402
from services.executor.data.sampling import batch_bounds  # noqa: E402
from services.executor.data.synthetic import SyntheticSpec, generate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "data_throughput.json"


def _consume(x: np.ndarray, y: np.ndarray, touch: bool) -> float:
    return float(x.sum()) + float(y[-1]) if touch else 0.0


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns `a`'s memory (np.load itself returns a reshaped view of one)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def copied_nbytes(a: np.ndarray, sources: tuple[np.ndarray, ...]) -> int:
    """a.nbytes if `a` lives in memory of its own (a copy), 0 if it is a view of one of `sources`
    or of memory numpy does not own (a file map, the LMDB map)."""
    root = _root(a)
    if root.base is not None or any(root is _root(s) for s in sources):
        return 0
    return a.nbytes


def _time_epochs(make_iter, epochs: int, touch: bool, sources: tuple[np.ndarray, ...]) -> tuple[float, int, int]:
    """Best-of-epochs seconds for one pass, bytes per pass, and bytes copied per pass."""
    best, nbytes, copied = float("inf"), 0, 0
    for e in range(epochs):
        nbytes, copied, t0 = 0, 0, time.perf_counter()
        for x, y in make_iter(e):
            _consume(x, y, touch)
            nbytes += x.nbytes + y.nbytes
            if not touch:  # outside the timed work that matters only by a pointer walk
                copied += copied_nbytes(x, sources) + copied_nbytes(y, sources)
        best = min(best, time.perf_counter() - t0)
    return best, nbytes, copied


def _array_batches(x: np.ndarray, y: np.ndarray, bs: int, order: np.ndarray | None):
    for a, b in batch_bounds(len(x), bs):
        if order is None:
            yield x[a:b], y[a:b]
        else:
            idx = order[a:b]
            yield x[idx], y[idx]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    epochs = 2 if args.quick else 5
    source = provenance()
    spec = SyntheticSpec(n_rows=args.rows, n_features=args.features, n_classes=10, seed=0)

    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        t0 = time.perf_counter()
        x, y = generate(spec)
        gen_s = time.perf_counter() - t0
        cols = {"X": x, "y": y}
        schema = Schema.infer(cols, label="y")
        imports = []
        for _ in range(1 if args.quick else 3):
            with PartyStore.open(Path(tmp) / "party", readonly=False, create=True) as store:
                t0 = time.perf_counter()
                store.put_dataset("bench", cols, schema)
                imports.append(time.perf_counter() - t0)
        import_s = min(imports)
        np.save(Path(tmp) / "X.npy", x)
        np.save(Path(tmp) / "y.npy", y)
        total_bytes = x.nbytes + y.nbytes
        del x, y, cols

        rows_out = []
        ds = PartyDataset.open(Path(tmp) / "party", "bench")
        t0 = time.perf_counter()
        xr, yr = np.load(Path(tmp) / "X.npy", allow_pickle=False), np.load(Path(tmp) / "y.npy", allow_pickle=False)
        load_s = time.perf_counter() - t0
        xm = np.load(Path(tmp) / "X.npy", mmap_mode="r", allow_pickle=False)
        ym = np.load(Path(tmp) / "y.npy", mmap_mode="r", allow_pickle=False)
        try:
            for touch in (True, False):
                for shuffle in (False, True):
                    for bs in (256, 4096):
                        orders = {e: ds.epoch_order(seed=0, epoch=e) if shuffle else None
                                  for e in range(epochs)}
                        readers = {
                            "ferry": lambda e: ds.batches(bs, shuffle=shuffle, seed=0, epoch=e),
                            "npy-ram": lambda e: _array_batches(xr, yr, bs, orders[e]),
                            "npy-mmap": lambda e: _array_batches(xm, ym, bs, orders[e]),
                        }
                        for name, make in readers.items():
                            secs, nbytes, copied = _time_epochs(make, epochs, touch, (xr, yr, xm, ym))
                            counted = nbytes if touch else copied  # computed on, or actually copied
                            rows_out.append({
                                "reader": name, "mode": "touch" if touch else "iter",
                                "order": "shuffled" if shuffle else "sequential", "batch": bs,
                                "seconds": secs, "rows_per_s": args.rows / secs,
                                "bytes_counted": counted, "copied_share": (copied / nbytes) if not touch else None,
                                "gb_per_s": counted / secs / 1e9})
        finally:
            ds.close()

    headline = next(r["gb_per_s"] for r in rows_out if r["reader"] == "ferry" and r["mode"] == "touch"
                    and r["order"] == "sequential" and r["batch"] == 4096)
    print(f"{args.rows} rows x {args.features} float32 + int64 label = {total_bytes / 1e6:.0f} MB; "
          f"best of {epochs} epochs; warm page cache")
    print("GB/s: touch = bytes summed; iter = bytes copied only (zero-copy views count 0)")
    print(f"{'reader':<10}{'mode':<7}{'order':<12}{'batch':>6}{'rows/s':>14}{'GB/s':>9}{'copied':>8}")
    for r in rows_out:
        share = "" if r["copied_share"] is None else f"{100 * r['copied_share']:.0f}%"
        print(f"{r['reader']:<10}{r['mode']:<7}{r['order']:<12}{r['batch']:>6}"
              f"{r['rows_per_s']:>14,.0f}{r['gb_per_s']:>9.2f}{share:>8}")
    imp = {"rows_per_s": args.rows / import_s, "gb_per_s": total_bytes / import_s / 1e9,
           "seconds": import_s, "generate_rows_per_s": args.rows / gen_s, "npy_load_seconds": load_s}
    print(f"import (put_dataset incl. statistics + commit): {imp['rows_per_s']:,.0f} rows/s, "
          f"{imp['gb_per_s']:.2f} GB/s; synthetic generation {imp['generate_rows_per_s']:,.0f} rows/s; "
          f"np.load of the same arrays {load_s:.3f} s")
    print(f"gb_per_s (ferry, sequential, batch 4096, touch) = {headline:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "gb_per_s": headline, **source, "rows": args.rows, "features": args.features, "quick": args.quick,
        "epochs": epochs, "bytes_per_epoch": total_bytes, "results": rows_out, "import": imp,
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "platform": platform.platform(), "processor": platform.processor()}},
        indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
