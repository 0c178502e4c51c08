"""Similarity of two 2-D attribution maps (numpy arrays or tensors).

Every function returns NaN when either map is constant (all values equal, e.g. an all-zero
map from a dead network): correlation is undefined there, and the NaN is reported in the
tables rather than replaced by a made-up 0 or 1. Aggregates skip NaNs and say how many
images they used.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata
from skimage.feature import hog
from skimage.metrics import structural_similarity

METRICS = ("spearman_abs", "spearman_signed", "ssim", "hog_pearson")


def as_map(a) -> np.ndarray:
    """A float64 2-D numpy array from a tensor or array (leading singleton dims dropped)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {a.shape}")
    return a


def is_constant(a: np.ndarray) -> bool:
    return bool(np.ptp(a) == 0) or not np.all(np.isfinite(a))


def pearson(a, b) -> float:
    """Pearson correlation of the flattened maps; NaN if either is constant."""
    a, b = as_map(a).ravel(), as_map(b).ravel()
    return _pearson_flat(a, b)


def _pearson_flat(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if is_constant(a) or is_constant(b):
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    return float(np.clip((a @ b) / np.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


def spearman(a, b, absolute: bool = True) -> float:
    """Spearman rank correlation (ties get average ranks); on |maps| when ``absolute``."""
    a, b = as_map(a), as_map(b)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if is_constant(a) or is_constant(b):
        return float("nan")
    return _pearson_flat(rankdata(a.ravel()), rankdata(b.ravel()))


def normalise(a, absolute: bool = True) -> np.ndarray:
    """|a| / max|a| in [0, 1] (``absolute``) or a / max|a| in [-1, 1]: the common range."""
    a = as_map(a)
    if absolute:
        a = np.abs(a)
    scale = np.abs(a).max()
    return a / scale if scale > 0 else a


def ssim(a, b, absolute: bool = True) -> float:
    """SSIM of the maps after ``normalise`` (data range 1 for |maps|, 2 for signed maps)."""
    a, b = as_map(a), as_map(b)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if is_constant(a) or is_constant(b):
        return float("nan")
    win = min(7, min(a.shape))
    win = win if win % 2 == 1 else win - 1
    if win < 3:
        return float("nan")
    return float(
        structural_similarity(
            normalise(a, absolute),
            normalise(b, absolute),
            data_range=1.0 if absolute else 2.0,
            win_size=win,
        )
    )


def hog_features(a) -> np.ndarray:
    """HOG of the normalised |map|: 9 orientations, about 8×8 cells, 2×2 blocks."""
    a = normalise(a, absolute=True)
    cell = max(2, min(a.shape) // 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hog(a, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))


def hog_pearson(a, b) -> float:
    """Pearson correlation of the HOG features of both maps; NaN if either is constant."""
    a, b = as_map(a), as_map(b)
    if is_constant(a) or is_constant(b):
        return float("nan")
    return _pearson_flat(hog_features(a), hog_features(b))


def all_similarities(a, b) -> dict[str, float]:
    """Every metric of ``METRICS`` for one pair of maps."""
    return {
        "spearman_abs": spearman(a, b, absolute=True),
        "spearman_signed": spearman(a, b, absolute=False),
        "ssim": ssim(a, b),
        "hog_pearson": hog_pearson(a, b),
    }


def derangement(n: int, generator) -> list[int]:
    """A random permutation with no fixed point (for random-pair baselines); n >= 2."""
    import torch

    if n < 2:
        return list(range(n))
    perm = torch.randperm(n, generator=generator).tolist()
    # Shift along the random cycle order: image perm[i] is paired with perm[i+1].
    partner = [0] * n
    for i in range(n):
        partner[perm[i]] = perm[(i + 1) % n]
    return partner
