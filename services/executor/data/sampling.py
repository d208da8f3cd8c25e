"""Epoch orders for batching: pure functions of (layout, seed, epoch).

A full random permutation would make every batch touch up to batch_size
different blocks. Instead the shuffle is block-local with a window:

1. the order of the blocks is a seeded permutation;
2. consecutive permuted blocks are grouped into windows of ``window`` blocks;
3. the rows inside each window are permuted.

window=1 is a pure within-block shuffle; window >= number of blocks is a
full permutation. Each batch then reads from at most ``window`` (+1 at a
window edge) blocks, while rows from ``window`` random blocks mix, which
breaks up data stored sorted by label far better than window=1.

The generator is seeded with SeedSequence([seed, epoch]): the same (seed,
epoch, layout, window) gives the same order on every run and machine with
the same numpy major version, which is what resume-equals-uninterrupted
tests rely on.
"""

from __future__ import annotations

import numpy as np

from shared.errors import ConfigurationError

DEFAULT_WINDOW = 8


def segments_of(groups: np.ndarray) -> np.ndarray:
    """(k, 2) [start, stop) runs of equal values in a non-decreasing array of block ids."""
    groups = np.asarray(groups)
    if groups.size == 0:
        return np.empty((0, 2), np.int64)
    cuts = np.flatnonzero(np.diff(groups)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [groups.size]])
    return np.stack([starts, stops], axis=1).astype(np.int64)


def uniform_segments(n_rows: int, block_size: int) -> np.ndarray:
    starts = np.arange(0, n_rows, block_size, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + block_size, n_rows)], axis=1).reshape(-1, 2)


def window_plan(segments: np.ndarray, *, seed: int, epoch: int,
                window: int = DEFAULT_WINDOW) -> list[tuple[np.ndarray, np.ndarray]]:
    """The shuffle as windows: [(segments of the window in visiting order, permutation
    of the window's rows)], the rows being the segments' positions concatenated."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ConfigurationError(f"epoch must be a non-negative integer, got {epoch!r}")
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ConfigurationError(f"shuffle window must be >= 1 block, got {window!r}")
    segments = np.asarray(segments, np.int64).reshape(-1, 2)
    rng = np.random.default_rng([int(seed), int(epoch)])
    block_order = rng.permutation(len(segments))
    plan = []
    for w in range(0, len(block_order), window):
        chosen = segments[block_order[w:w + window]]
        plan.append((chosen, rng.permutation(int((chosen[:, 1] - chosen[:, 0]).sum()))))
    return plan


def epoch_order(segments: np.ndarray, *, seed: int, epoch: int,
                window: int = DEFAULT_WINDOW) -> np.ndarray:
    """A permutation of positions 0..n-1 (n = last stop), block-window shuffled."""
    parts = []
    for chosen, perm in window_plan(segments, seed=seed, epoch=epoch, window=window):
        rows = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in chosen])
        parts.append(rows[perm])
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def batch_bounds(n: int, batch_size: int, drop_last: bool = False) -> list[tuple[int, int]]:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
    stop = n - n % batch_size if drop_last else n
    return [(a, min(a + batch_size, n)) for a in range(0, stop, batch_size)]
