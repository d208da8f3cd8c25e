"""Seeded synthetic classification data (Gaussian clusters). Pure.

Spec text: ``n_rows=1000000,n_features=32,n_classes=4,seed=0`` with optional
``separation=3.0`` (distance scale of the class centres, in noise standard
deviations). Rows are generated in fixed chunks, each from its own
generator seeded with (seed, chunk): output depends on the spec only, never
on memory or chunking, and millions of rows generate in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from shared.errors import ConfigurationError

_CHUNK = 1 << 16
_CENTRES_TAG = 0xC3  # separates the centres' stream from the rows' streams


@dataclass(frozen=True)
class SyntheticSpec:
    n_rows: int = 1000
    n_features: int = 8
    n_classes: int = 2
    seed: int = 0
    separation: float = 3.0

    @classmethod
    def parse(cls, text: str) -> "SyntheticSpec":
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, int | float] = {}
        for item in filter(None, (s.strip() for s in text.split(","))):
            key, eq, raw = item.partition("=")
            key = key.strip()
            if not eq or key not in known:
                raise ConfigurationError(f"synthetic spec: bad item {item!r}; "
                                         f"expected key=value with key in {sorted(known)}")
            try:
                values[key] = float(raw) if key == "separation" else int(raw)
            except ValueError:
                raise ConfigurationError(f"synthetic spec: {key}={raw!r} is not a number") from None
        spec = cls(**values)
        if spec.n_rows < 0 or spec.n_features < 1 or spec.n_classes < 1 or spec.seed < 0:
            raise ConfigurationError(f"synthetic spec out of range: {spec}")
        return spec


def generate(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """X float32 (n_rows, n_features) and y int64 (n_rows,)."""
    centres = np.random.default_rng([spec.seed, _CENTRES_TAG]).normal(
        0.0, spec.separation, (spec.n_classes, spec.n_features)).astype(np.float32)
    x = np.empty((spec.n_rows, spec.n_features), np.float32)
    y = np.empty(spec.n_rows, np.int64)
    for c, start in enumerate(range(0, spec.n_rows, _CHUNK)):
        stop = min(start + _CHUNK, spec.n_rows)
        rng = np.random.default_rng([spec.seed, c])
        y[start:stop] = rng.integers(0, spec.n_classes, stop - start)
        rng.standard_normal(out=x[start:stop], dtype=np.float32)
        x[start:stop] += centres[y[start:stop]]
    return x, y
