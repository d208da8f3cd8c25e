"""The monitor's local LMDB: entity snapshots and consumed offsets, written in one transaction.

Because state and offsets commit together, a crash at any point leaves a
store whose snapshots are exactly the fold of everything before its offsets:
on restart the monitor restores them and seeks to those offsets, so no event
is lost and none is applied twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import lmdb

from shared.bus.port import TopicPartition


class MonitorStateStore:
    def __init__(self, path: Path, map_size: int = 1 << 30):
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size, max_dbs=2, subdir=True, sync=True)
        self._snapshots = self._env.open_db(b"snapshots")
        self._offsets = self._env.open_db(b"offsets")

    def snapshots(self) -> Iterator[bytes]:
        with self._env.begin(db=self._snapshots) as txn:
            for _, value in txn.cursor():
                yield bytes(value)

    def offsets(self) -> dict[TopicPartition, int]:
        out = {}
        with self._env.begin(db=self._offsets) as txn:
            for key, value in txn.cursor():
                topic, _, partition = bytes(key).decode().rpartition(":")
                out[TopicPartition(topic, int(partition))] = int(bytes(value))
        return out

    def save(self, snapshots: Mapping[str, bytes], offsets: Mapping[TopicPartition, int]) -> None:
        try:
            self._write(snapshots, offsets)
        except lmdb.MapFullError:
            self._env.set_mapsize(self._env.info()["map_size"] * 2)
            self._write(snapshots, offsets)

    def _write(self, snapshots: Mapping[str, bytes], offsets: Mapping[TopicPartition, int]) -> None:
        with self._env.begin(write=True) as txn:
            for key, blob in snapshots.items():
                txn.put(key.encode(), blob, db=self._snapshots)
            for tp, offset in offsets.items():
                txn.put(f"{tp.topic}:{tp.partition}".encode(), str(offset).encode(), db=self._offsets)

    def close(self) -> None:
        self._env.close()
