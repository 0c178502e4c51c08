"""Images for the explorer as small compressed files: JPEG for photos, grey WebP for the
maps (coloured by the page's script), PNG for the mask outline. Returned as base64 text."""

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


def colour_map(attr: np.ndarray, signed: bool, side: int, quality: int = 85) -> str:
    """A map in colour as an opaque JPEG (a thumbnail where no photo is at hand): signed on
    blue–white–red centred at 0, else |map| on inferno; scaled by its own ``map_scale``."""
    a = np.nan_to_num(np.asarray(attr, dtype=np.float64))
    s = np.clip(a / map_scale(a), -1, 1)
    rgba = colormaps["bwr"]((s + 1) / 2) if signed else colormaps["inferno"](np.abs(s))
    rgb = (rgba[..., :3] * 255).astype(np.uint8)
    return _b64(_fit(Image.fromarray(rgb), side, Image.Resampling.BILINEAR), "JPEG",
                quality=quality, optimize=True)


def coded_map(attr: np.ndarray, side: int, quality: int = 80) -> str:
    """A map as one grey WebP: 0 at 128, ±``map_scale`` at 0 and 255. The page's script
    colours it (signed, or |map|) and makes weak areas transparent, so one small image per
    map serves both views (a colour image with alpha per view was 5-10 times the bytes)."""
    a = np.nan_to_num(np.asarray(attr, dtype=np.float64))
    code = np.rint((np.clip(a / map_scale(a), -1, 1) + 1) * 127.5).astype(np.uint8)
    return _b64(_fit(Image.fromarray(code, "L"), side, Image.Resampling.BILINEAR), "WEBP",
                quality=quality, method=4)


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
