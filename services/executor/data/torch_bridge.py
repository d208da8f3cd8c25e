"""PartyDataset -> torch: tensors and a deterministic DataLoader.

Batches are formed by PartyDataset.batches (block-aware, seeded), so the
DataLoader runs with batch_size=None (no re-batching) and no workers: an
LMDB read transaction must not cross a fork, and one process reading
mmap'd blocks is already faster than the collation workers would be.
Every tensor owns its memory: batches may be read-only views of the store's
map, which torch must not alias (it would warn, and a later in-place op
would fault).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

if TYPE_CHECKING:
    from .dataset import PartyDataset


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    if a is None:
        return None
    if a.dtype.kind in "iu" and a.dtype != np.uint8:
        a = a.astype(np.int64)  # what torch losses expect for class labels
    return torch.from_numpy(np.array(a, copy=True, order="C"))


def to_tensors(x: np.ndarray, y: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    return _tensor(x), _tensor(y)


class EpochBatches(IterableDataset):
    """Each iteration is one epoch; the epoch counter advances per iteration
    and can be set (set_epoch) when resuming from a checkpoint."""

    def __init__(self, data: "PartyDataset", batch_size: int, *, shuffle: bool, seed: int,
                 drop_last: bool):
        super().__init__()
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        for x, y in self.data.batches(self.batch_size, shuffle=self.shuffle, seed=self.seed,
                                      epoch=epoch, drop_last=self.drop_last):
            yield _tensor(x), _tensor(y)

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)


def make_dataloader(data: "PartyDataset", batch_size: int, *, shuffle: bool, seed: int,
                    drop_last: bool) -> DataLoader:
    source = EpochBatches(data, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    # collate_fn=None with batch_size=None would still convert; identity keeps our tensors.
    return DataLoader(source, batch_size=None, num_workers=0, collate_fn=lambda b: b)
