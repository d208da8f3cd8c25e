"""What guest and host roles of ferry.hetero_lr share: their aligned rows, the agreed
start epoch, epoch checkpoints, and the backend the arbiter's key makes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from services.executor.vertical import lr
from services.executor.vertical.alignment import aligned_rows, read_rows
from services.executor.vertical.paillier import PaillierBackend, PlainBackend
from shared.errors import DataError

CHECKPOINT_PARAMS = ("align_with", "batch_size", "lr", "lr_schedule", "lr_decay", "alpha", "seed",
                     "test_fraction", "standardise", "encryption")


@dataclass(frozen=True)
class LocalRows:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray | None
    y_test: np.ndarray | None
    standardiser: lr.Standardiser
    features: list[str]
    id_column: str
    n_rows: int


def load_local_rows(ctx, *, label: bool, intercept: bool) -> LocalRows:
    """This party's aligned rows, split and standardised with its own training rows' statistics."""
    data, p = ctx.data, ctx.params
    if data is None:
        raise DataError(f"party {ctx.task.party} has no dataset for role {ctx.task.role} (data_ref {ctx.task.data_ref!r})")
    id_column = p["id_column"]
    if p.get("align_with"):
        rows, meta = aligned_rows(ctx, p["align_with"])
        id_column = meta.get("id_column", id_column)
    else:  # the parties promise their datasets are already in one order
        rows = np.arange(len(data))
    x, y, names = read_rows(data, rows, id_column, label=label)
    train, test = lr.split_positions(len(rows), float(p["test_fraction"]), int(p["seed"]))
    standardiser = lr.Standardiser.fit(x[train]) if p["standardise"] else lr.Standardiser.identity(x.shape[1])
    x = standardiser.apply(x)
    if intercept:
        x = lr.with_intercept(x)
    return LocalRows(x[train], x[test], None if y is None else y[train], None if y is None else y[test],
                     standardiser, names, id_column, len(rows))


def check_rows(conv, mine: int, who: list[str]) -> None:
    theirs = {p: int(conv.hello[p]["rows"]) for p in who}
    if any(n != mine for n in theirs.values()):
        raise DataError(f"parties hold different numbers of aligned rows ({ {**theirs, conv.ctx.task.party: mine} }); "
                        f"align them with a ferry.psi step and name it in params.align_with")


def start_epoch(conv, mine: int) -> int:
    """The first epoch to run: the fewest any party has finished (one may be an epoch ahead)."""
    return min([mine] + [int(info.get("done", 0)) for info in conv.hello.values()])


def identity(params) -> dict:
    return {k: params.get(k) for k in CHECKPOINT_PARAMS}


class EpochCheckpoints:
    """Weights after the last two finished epochs, so a party one epoch ahead can step back."""

    def __init__(self, ctx, width: int):
        self.ctx, self.width = ctx, width
        self.done, self.w, self.w_prev = 0, np.zeros(width), np.zeros(width)
        saved = ctx.checkpoints.load_latest()
        if saved is not None and saved.meta.get("params") == identity(ctx.params) and saved.arrays["w"].shape == (width,):
            self.done, self.w, self.w_prev = int(saved.meta["done"]), saved.arrays["w"], saved.arrays["w_prev"]

    def weights_for(self, start: int) -> np.ndarray:
        if start == self.done:
            return self.w.copy()
        if start == self.done - 1:
            return self.w_prev.copy()
        raise DataError(f"party {self.ctx.task.party} finished {self.done} epochs but the step resumes at "
                        f"epoch {start}: its checkpoint does not belong to this run")

    def save(self, epoch: int, w: np.ndarray, w_before: np.ndarray, converged: bool) -> None:
        self.done, self.w, self.w_prev = epoch + 1, w, w_before
        self.ctx.checkpoints.save({"w": w, "w_prev": w_before},
                                  {"done": epoch + 1, "converged": converged, "params": identity(self.ctx.params)})


async def receive_backend(conv, arbiter: str, min_bits: int):
    arrays, metrics = await conv.expect(arbiter, "key", 0)
    if metrics.get("encrypted", 1.0):
        return PaillierBackend.from_key_wire(arrays, arbiter, min_bits), metrics
    return PlainBackend(), metrics


async def off_loop(fn, *args):
    """CPU-heavy crypto off the event loop: other parties' executors share it when embedded."""
    return await asyncio.to_thread(fn, *args)
