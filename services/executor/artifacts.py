"""A party's artifacts of one flow: models and transforms that later steps read.

Steps of a flow hand results to each other through the party's own artifact
folder (never through another party): a training step leaves the final model
as `model-<step>`, federated standardisation leaves `standardisation`. Arrays
are .npz loaded with allow_pickle=False, metadata JSON, written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shared.errors import DataError


class ArtifactStore:
    def __init__(self, root: Path, flow_id: str):
        self._dir = Path(root) / flow_id

    def save(self, name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> Path:
        self._dir.mkdir(parents=True, exist_ok=True)
        target = self._dir / f"{name}.npz"
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        os.replace(tmp, target)
        meta_tmp = self._dir / f"{name}.json.tmp"
        meta_tmp.write_text(json.dumps(dict(meta or {}), sort_keys=True))
        os.replace(meta_tmp, self._dir / f"{name}.json")
        return target

    def exists(self, name: str) -> bool:
        return (self._dir / f"{name}.json").exists()

    def load(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        path = self._dir / f"{name}.npz"
        if not self.exists(name):
            known = sorted(p.stem for p in self._dir.glob("*.json")) if self._dir.exists() else []
            raise DataError(f"artifact {name!r} not found in {self._dir}; present: {known}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            return arrays, json.loads((self._dir / f"{name}.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"artifact {path} is unreadable: {exc}") from exc
