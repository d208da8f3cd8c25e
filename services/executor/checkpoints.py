"""Round checkpoints of one algorithm task, as files in the party's checkpoint folder.

A checkpoint is named arrays (.npz, loaded with allow_pickle=False) plus JSON
metadata, written to a temporary name and renamed, so a crash mid-write
leaves the previous checkpoint intact. Checkpoints are per algorithm task,
not per attempt: a retry or a resume continues from the newest one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shared.errors import DataError


@dataclass(frozen=True)
class Checkpoint:
    sequence: int
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]


class FileCheckpointStore:
    def __init__(self, root: Path, algo_task_id: str, keep: int = 2):
        self._dir = Path(root) / algo_task_id
        self._keep = keep

    def _paths(self) -> list[tuple[int, Path]]:
        if not self._dir.exists():
            return []
        found = []
        for p in self._dir.glob("ckpt-*.json"):
            try:
                found.append((int(p.stem.split("-")[1]), p))
            except (IndexError, ValueError):
                continue
        return sorted(found)

    def save(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> int:
        self._dir.mkdir(parents=True, exist_ok=True)
        existing = self._paths()
        seq = existing[-1][0] + 1 if existing else 1
        base = self._dir / f"ckpt-{seq:08d}"
        tmp_npz = base.with_suffix(".npz.tmp")
        with open(tmp_npz, "wb") as fh:
            np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_npz, base.with_suffix(".npz"))
        # The JSON is written last: its presence marks the checkpoint complete.
        tmp_json = base.with_suffix(".json.tmp")
        tmp_json.write_text(json.dumps(dict(meta), sort_keys=True))
        os.replace(tmp_json, base.with_suffix(".json"))
        for old_seq, old in existing[: max(0, len(existing) + 1 - self._keep)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".npz").unlink(missing_ok=True)
        return seq

    def load_latest(self) -> Checkpoint | None:
        paths = self._paths()
        if not paths:
            return None
        seq, meta_path = paths[-1]
        npz = meta_path.with_suffix(".npz")
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"checkpoint {npz} is unreadable: {exc}") from exc
        return Checkpoint(seq, arrays, meta)
