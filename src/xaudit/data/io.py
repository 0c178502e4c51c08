"""Safe image and mask loading (minimal version; hardened by the bad-input catalogue)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class BadImageError(DataError):
    """An image file that cannot be used; ``reason`` is a short phrase for skipped.csv."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"bad image {source}: {reason}")
        self.source = source
        self.reason = reason


def load_rgb(source, max_pixels: int | None = None, name: str = "") -> Image.Image:
    """Decode ``source`` (path, bytes, PIL image, array or callable) to an RGB PIL image."""
    name = name or str(source if isinstance(source, (str, Path)) else "<in-memory image>")
    if callable(source) and not isinstance(source, (Image.Image, np.ndarray)):
        source = source()
    if isinstance(source, np.ndarray):
        return Image.fromarray(source).convert("RGB")
    if isinstance(source, Image.Image):
        img = source
    else:
        try:
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            img.load()
        except Exception as err:  # PIL raises many types for broken files
            raise BadImageError(name, f"cannot be decoded ({type(err).__name__})") from None
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def load_mask(source, name: str = "") -> np.ndarray:
    """A boolean H×W mask from a path, bytes, PIL image, array or callable."""
    if callable(source) and not isinstance(source, (Image.Image, np.ndarray)):
        source = source()
    if isinstance(source, np.ndarray):
        arr = source
    else:
        img = source if isinstance(source, Image.Image) else Image.open(
            io.BytesIO(source) if isinstance(source, bytes) else source
        )
        arr = np.asarray(img.convert("L"))
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    return arr > (0.5 if arr.dtype == bool or arr.max() <= 1 else 127)
