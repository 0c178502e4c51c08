"""Images for the explorer as small compressed files: JPEG for photos, WebP with alpha for
the maps laid over them, PNG for the mask outline. Returned as base64 text."""

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


def map_scale(attr: np.ndarray) -> float:
    """The value a map's colours top out at: its 99th percentile of |attribution| (its
    largest |value| where that is 0; 1 for an all-zero map)."""
    a = np.abs(np.nan_to_num(np.asarray(attr, dtype=np.float64)))
    return float(np.percentile(a, CLIP_PERCENTILE)) or float(a.max()) or 1.0


def _colours(attr: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, strength in [0, 1]): signed on blue–white–red centred at 0, else |map| on
    inferno; scaled by the map's own ``map_scale``."""
    a = np.nan_to_num(np.asarray(attr, dtype=np.float64))
    s = np.clip(a / map_scale(a), -1, 1)
    rgba = colormaps["bwr"]((s + 1) / 2) if signed else colormaps["inferno"](np.abs(s))
    return (rgba[..., :3] * 255).astype(np.uint8), np.abs(s)


def colour_map(attr: np.ndarray, signed: bool, side: int, quality: int = 85) -> str:
    """A 2-D map in colour as an opaque JPEG (a thumbnail where no photo is at hand)."""
    rgb, _ = _colours(attr, signed)
    return _b64(_fit(Image.fromarray(rgb), side, Image.Resampling.BILINEAR), "JPEG",
                quality=quality, optimize=True)


def overlay(attr: np.ndarray, signed: bool, side: int, quality: int = 80) -> str:
    """A map to lay over its photo, as WebP whose opacity is the map's strength: where the
    map is weak the photo shows through unchanged, instead of the whole photo darkening."""
    rgb, strength = _colours(attr, signed)
    alpha = (np.sqrt(strength) * 255).astype(np.uint8)  # √: mid values stay visible
    img = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return _b64(_fit(img, side, Image.Resampling.BILINEAR), "WEBP", quality=quality,
                alpha_quality=70, method=4)


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
