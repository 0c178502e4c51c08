"""Images for the explorer as small compressed files: JPEG for photos and colour maps, PNG
where transparency is needed (the mask outline). Returned as base64 text."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib import colormaps
from PIL import Image

# Maps are scaled per map and clipped at this percentile of |attribution| (as the figures).
CLIP_PERCENTILE = 99.0


def _b64(img: Image.Image, fmt: str, **kw) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fit(img: Image.Image, side: int, resample: Image.Resampling) -> Image.Image:
    w, h = img.size
    scale = side / max(w, h)
    if scale >= 1:
        return img
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample=resample)


def photo(pixels: np.ndarray, side: int, quality: int = 85) -> str:
    """An H×W×3 uint8 (or [0, 1] float) image as JPEG, longest side at most ``side``."""
    arr = pixels if pixels.dtype == np.uint8 else (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    return _b64(_fit(Image.fromarray(arr), side, Image.Resampling.BILINEAR), "JPEG",
                quality=quality, optimize=True)


def colour_map(attr: np.ndarray, signed: bool, side: int, quality: int = 85) -> str:
    """A 2-D map in colour: signed on a blue–white–red scale centred at 0, else |map| on
    inferno; scaled by its own 99th percentile of |attribution|."""
    a = np.nan_to_num(np.asarray(attr, dtype=np.float64))
    scale = float(np.percentile(np.abs(a), CLIP_PERCENTILE)) or float(np.abs(a).max()) or 1.0
    if signed:
        rgba = colormaps["bwr"]((np.clip(a / scale, -1, 1) + 1) / 2)
    else:
        rgba = colormaps["inferno"](np.clip(np.abs(a) / scale, 0, 1))
    arr = (rgba[..., :3] * 255).astype(np.uint8)
    return _b64(_fit(Image.fromarray(arr), side, Image.Resampling.BILINEAR), "JPEG",
                quality=quality, optimize=True)


def outline(mask: np.ndarray, side: int, colour: tuple[int, int, int] = (0, 230, 64)) -> str:
    """The boundary of a boolean mask as a transparent PNG (one-pixel line, in ``colour``)."""
    m = _fit(Image.fromarray(mask.astype(np.uint8) * 255), side, Image.Resampling.NEAREST)
    b = np.asarray(m) > 127
    inner = b.copy()
    inner[1:, :] &= b[:-1, :]
    inner[:-1, :] &= b[1:, :]
    inner[:, 1:] &= b[:, :-1]
    inner[:, :-1] &= b[:, 1:]
    edge = b & ~inner
    rgba = np.zeros((*b.shape, 4), dtype=np.uint8)
    rgba[edge] = (*colour, 255)
    return _b64(Image.fromarray(rgba, "RGBA"), "PNG", optimize=True)
