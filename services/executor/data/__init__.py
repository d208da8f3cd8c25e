"""Party data: LMDB column-block stores, the PartyDataset view, importers, partitioning.

Layers: schema/stats/sampling/partition/synthetic/layout are pure numpy;
store.py is the only lmdb adapter; dataset.py is the object algorithms get;
importers/csv_source/cli are the file and command-line shell.
"""

from .dataset import PartyDataset
from .schema import ColumnSpec, DatasetMeta, Schema
from .stats import Histogram, LabelCounts, Moments, Summary, merge_moments, merge_summaries
from .store import DatasetReader, PartyStore

__all__ = ["ColumnSpec", "DatasetMeta", "DatasetReader", "Histogram", "LabelCounts", "Moments",
           "PartyDataset", "PartyStore", "Schema", "Summary", "merge_moments", "merge_summaries",
           "open_dataset"]


def open_dataset(store_dir, name: str) -> PartyDataset:
    """What an executor's data_opener calls: the party's dataset, read-only."""
    return PartyDataset.open(store_dir, name)
