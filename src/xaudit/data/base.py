"""One Dataset type for every source: records of (image, label, optional masks, stable id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..registry import Registry

# An image reference: a file path, encoded bytes, a PIL image, or a function making one.
ImageRef = Path | bytes | Image.Image | np.ndarray | Callable[[], Any]

SPLITS = ("train", "val", "test")


@dataclass
class Record:
    """One image of a dataset.

    ``mask`` marks the evidence that should explain the label (lesions on a leaf; the object
    in a localisation set); ``object_mask`` marks the object (the leaf) for shortcut screening.
    """

    id: str
    label: int
    image: ImageRef
    mask: ImageRef | None = None
    object_mask: ImageRef | None = None
    source: str = ""  # human-readable origin (file path) for messages and skipped.csv


@dataclass
class DatasetBundle:
    """A dataset split into train / val / test, with its class names."""

    name: str
    classes: list[str]
    splits: dict[str, list[Record]]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file": ..., "reason": ...}
    info: dict[str, Any] = field(default_factory=dict)  # source-specific facts for the report

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for split, records in self.splits.items():
            per_class = {c: 0 for c in self.classes}
            for r in records:
                per_class[self.classes[r.label]] += 1
            out[split] = per_class
        return out

    def sizes(self) -> dict[str, int]:
        return {split: len(records) for split, records in self.splits.items()}

    @property
    def has_masks(self) -> bool:
        return any(r.mask is not None for rs in self.splits.values() for r in rs)


# A data source builds a DatasetBundle from the recipe's `data` section and the seed.
SOURCES: Registry[Callable[..., DatasetBundle]] = Registry("data source")


def readable_class_name(name: str) -> str:
    """PlantVillage-style ``Tomato___Early_blight`` -> ``Tomato: Early blight``."""
    if "___" in name:
        plant, _, disease = name.partition("___")
        return f"{plant.replace('_', ' ')}: {disease.replace('_', ' ')}"
    return name
