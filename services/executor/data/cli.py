"""`ferry data import|info`: main(argv) -> exit code; the lead wires it into `ferry`.

argv starts at the subcommand (``["import", "--store", ...]``); a leading
"data" is accepted too. Errors print one line naming store, key and problem
to stderr and return the error's exit code (ConfigurationError 2,
DataError 3), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import numpy as np

from shared.errors import ConfigurationError, FerryError

from .importers import import_partitioned, load_source, put_table, split_from_column, with_test_split
from .layout import DEFAULT_BLOCK_SIZE
from .schema import DatasetMeta
from .store import PartyStore


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferry data", description="party data stores")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="load a dataset into a party store (or one per party)")
    imp.add_argument("--store", help="party store directory (created if missing)")
    imp.add_argument("--dataset", required=True)
    imp.add_argument("--source", required=True,
                     help="csv:PATH | npz:PATH | npy:PATH | sklearn:NAME | synthetic:k=v,...")
    imp.add_argument("--label", help="label column (default: the source's convention, e.g. y)")
    imp.add_argument("--features", help="comma-separated feature columns (default: all but label and split)")
    held = imp.add_mutually_exclusive_group()
    held.add_argument("--split", metavar="COLUMN",
                      help="a source column marking held-out test rows (1/0, true/false or test/train); "
                           "stored as the dataset's `split` column, which training uses instead of test_fraction")
    held.add_argument("--test-fraction", type=float, metavar="F",
                      help="hold out this share of rows (seeded by --seed, chosen before --parties "
                           "partitioning, so every party and a pooled baseline test on the same rows)")
    imp.add_argument("--dtypes", help="comma-separated col=dtype, e.g. x=float32,y=int64")
    imp.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    imp.add_argument("--parties", help="comma-separated party names: partition across them")
    imp.add_argument("--partition", choices=("iid", "dirichlet"), default="iid")
    imp.add_argument("--alpha", type=float, default=0.5)
    imp.add_argument("--seed", type=int, default=0)
    imp.add_argument("--stores-root", help="with --parties: stores go to STORES_ROOT/<party>")
    info = sub.add_parser("info", help="print datasets, schema, counts and statistics")
    info.add_argument("--store", required=True)
    info.add_argument("--dataset")
    info.add_argument("--verify", action="store_true", help="read every block and check it")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def _dtypes(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    out = {}
    for item in _csv(text) or []:
        col, eq, dt = item.partition("=")
        if not eq:
            raise ConfigurationError(f"--dtypes: expected col=dtype, got {item!r}")
        out[col.strip()] = dt.strip()
    return out


def _import(a: argparse.Namespace, out: TextIO) -> None:
    parties = _csv(a.parties)
    if not parties and not a.store:
        raise ConfigurationError("import needs --store, or --parties with --stores-root")
    if parties and not a.stores_root:
        raise ConfigurationError("--parties needs --stores-root (one store per party below it)")
    features = _csv(a.features)
    if a.split and features is not None and a.split not in features:
        features = features + [a.split]  # keep it through loading; it leaves the features below
    table = load_source(a.source, label=a.label, features=features, dtypes=_dtypes(a.dtypes), split=a.split)
    if a.split:
        table = split_from_column(table, a.split)
    elif a.test_fraction is not None:
        table = with_test_split(table, a.test_fraction, a.seed)
    if a.store:
        meta = put_table(a.store, a.dataset, table, block_size=a.block_size, attrs={"source": a.source})
        print(f"{a.store}: {meta.name}: {meta.n_rows} rows imported", file=out)
    if parties:
        metas = import_partitioned(a.stores_root, parties, a.dataset, table, scheme=a.partition,
                                   alpha=a.alpha, seed=a.seed, block_size=a.block_size,
                                   source=a.source)
        for party, meta in metas.items():
            print(f"{a.stores_root}/{party}: {meta.name}: {meta.n_rows} rows ({a.partition})", file=out)


def _describe(meta: DatasetMeta) -> dict[str, Any]:
    return {"name": meta.name, "rows": meta.n_rows, "block_size": meta.block_size,
            "schema": meta.schema.to_dict(),
            "stats": {k: m.to_dict() for k, m in meta.stats.items()},
            "labels": meta.labels.to_dict() if meta.labels else None, "attrs": dict(meta.attrs)}


def _fmt(v: Any) -> str:
    a = np.asarray(v, dtype=np.float64)
    return np.array2string(a, precision=4, threshold=8, edgeitems=3, max_line_width=100)


def _print_meta(meta: DatasetMeta, out: TextIO) -> None:
    print(f"dataset {meta.name}: {meta.n_rows} rows, {meta.n_blocks} blocks of {meta.block_size}", file=out)
    s = meta.schema
    print(f"  label: {s.label}   features: {', '.join(s.features)}", file=out)
    for c in s.columns:
        m = meta.stats.get(c.name)
        print(f"  column {c.name}: {c.dtype} {list(c.shape)}", file=out)
        if m is not None and m.count:
            print(f"    mean {_fmt(m.mean)}  std {_fmt(m.std)}", file=out)
            print(f"    min {_fmt(m.minimum)}  max {_fmt(m.maximum)}", file=out)
    if meta.labels is not None:
        print(f"  label counts: {meta.labels.as_dict()}", file=out)


def _info(a: argparse.Namespace, out: TextIO) -> None:
    with PartyStore.open(a.store) as store:
        names = [a.dataset] if a.dataset else store.datasets()
        metas = [store.meta(n) for n in names]
        if a.verify:
            for n in names:
                r = store.reader(n)
                try:
                    r.verify()
                finally:
                    r.close()
    if a.json:
        print(json.dumps({"store": a.store, "datasets": [_describe(m) for m in metas]}, indent=1), file=out)
        return
    print(f"store {a.store}: {len(metas)} dataset(s)" + (" (verified)" if a.verify else ""), file=out)
    for m in metas:
        _print_meta(m, out)


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    argv = list(argv)
    if argv[:1] == ["data"]:
        argv = argv[1:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage
        return int(exc.code or 0)
    try:
        (_import if args.command == "import" else _info)(args, out)
    except FerryError as exc:
        print(f"ferry data {args.command}: error: {exc}", file=err)
        return exc.exit_code
    return 0


if __name__ == "__main__":  # python -m services.executor.data.cli import ...
    raise SystemExit(main(sys.argv[1:]))
