"""Data sources: folder, hub, filename, synthetic — one DatasetBundle type."""

from . import folder, hub, synthetic  # noqa: F401  (register the sources)
from .base import SOURCES, SPLITS, DatasetBundle, Record, readable_class_name

__all__ = ["SOURCES", "SPLITS", "DatasetBundle", "Record", "readable_class_name", "load_dataset"]


def load_dataset(cfg, seed: int) -> DatasetBundle:
    """Build the dataset the recipe's ``data`` section names."""
    return SOURCES.get(cfg.source)(cfg, seed)
