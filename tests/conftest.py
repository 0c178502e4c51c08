"""Shared fixtures: small datasets written to tmp folders, offline and fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A noisy image whose dominant colour channel is the class: easy to learn."""
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    img[..., label % 3] += 150
    return img


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    """tmp/images/<class>/<i>.png for three classes, 10 images each, plus masks/."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label, cls in enumerate(["red", "green", "blue"]):
        for i in range(10):
            write_png(root / cls / f"{i:02d}.png", class_image(label, rng))
            mask = np.zeros((32, 32), np.uint8)
            mask[8:24, 8:24] = 255
            write_png(tmp_path / "masks" / cls / f"{i:02d}.png", mask)
    return root
