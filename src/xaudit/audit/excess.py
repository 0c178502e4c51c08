"""The randomization checks' paired yardstick: per image, how much more a map still resembles
its trained self than it resembles the trained maps of the other images.

For image i with the trained map a_i and the map b_i of a changed model (re-initialised blocks,
shuffled labels, another class), the excess similarity is

    d_i = sim(a_i, b_i) − mean over j ≠ i of sim(a_i, a_j)

(the random-pair level from every pair of images, not one drawn pairing). A map that follows
the model has d_i ≤ 0: after the change it is no closer to its trained self than a map of
another image is. The verdict tests the d_i against 0, lower better, image by image.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata
from torch import Tensor

from .scorecard import NOT_INFORMATIVE

# The smallest difference in similarity (Spearman, in [-1, 1]) that matters: the yardstick's
# resolution. A map whose different images already agree to within it leaves no room for a
# change of model to show (the centre prior: agreement 1); the former rules' margin was 0.1.
DELTA = 0.1

# Parameters the paired test replaced: an old recipe naming one is told what happened.
REPLACED = {
    "margin": "the paired per-image test against the random-pair level (threshold 0)",
    "survival": "the paired per-image test at the decisive steps (nearer the random-pair "
                "level than the unchanged map)",
    "max_random_pair": "the 'not informative' guard on maps that do not depend on the image",
}


def _flat(maps: Tensor | np.ndarray, absolute: bool) -> np.ndarray:
    if isinstance(maps, Tensor):
        maps = maps.detach().cpu().numpy()
    a = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    return np.abs(a) if absolute else a


def spearman_matrix(maps: Tensor | np.ndarray, absolute: bool = True) -> np.ndarray:
    """N×N Spearman correlations of the maps (|maps| when ``absolute``); NaN for a constant or
    non-finite map, as ``similarity.spearman`` gives one pair."""
    a = _flat(maps, absolute)
    bad = ~np.isfinite(a).all(axis=1)
    bad |= np.ptp(np.where(np.isfinite(a), a, 0.0), axis=1) == 0
    ranks = rankdata(np.where(np.isfinite(a), a, 0.0), axis=1)  # ties: average ranks
    ranks -= ranks.mean(axis=1, keepdims=True)
    norm = np.sqrt((ranks * ranks).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (ranks @ ranks.T) / np.outer(norm, norm)
    corr[bad, :] = np.nan
    corr[:, bad] = np.nan
    return np.clip(corr, -1.0, 1.0)


def pair_levels(maps: Tensor | np.ndarray, absolute: bool = True) -> np.ndarray:
    """Per image i: the mean Spearman between map i and every other image's map (NaN where map
    i is constant, or every other map is)."""
    corr = spearman_matrix(maps, absolute)
    np.fill_diagonal(corr, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row is a constant map
        return np.nanmean(corr, axis=1)


def excess(similarity: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """d_i: the similarity to the trained map above the image's random-pair level."""
    return np.asarray(similarity, dtype=np.float64) - np.asarray(levels, dtype=np.float64)


def excess_over_midpoint(similarity: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per image: the similarity above half-way between the random-pair level and 1 (an
    unchanged map). Below 0, the map is nearer a map of another image than its trained self.

    For partial (top-down) randomization: the blocks still intact keep each map's image
    structure, so even a map that follows the weights stays above the random-pair level
    there (saliency after the head's re-initialisation: 0.35 against 0.06 on Adebayo's case);
    what tells it from a map that ignores the weights (guided backprop: 1.00) is which end
    it is nearer."""
    levels = np.asarray(levels, dtype=np.float64)
    return np.asarray(similarity, dtype=np.float64) - (1.0 + levels) / 2.0


def point_passed(values: np.ndarray) -> bool | None:
    """The point estimate of the noninferiority check: the mean excess below ``DELTA``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return None if v.size == 0 else bool(v.mean() < DELTA)


def uninformative(levels: np.ndarray, values: np.ndarray,
                  room: float = 1.0) -> tuple[str | None, str]:
    """(NOT_INFORMATIVE, why) when the check cannot tell this map's methods apart, else
    (None, ""). ``room``: the share of (1 − level) the rule leaves for a change to show
    (1 against the level, ½ against the half-way point)."""
    lv = np.asarray(levels, dtype=np.float64)
    if not np.isfinite(lv).any():
        return NOT_INFORMATIVE, ("the map is constant on every image: its similarity to other "
                                 "maps is undefined")
    if not np.isfinite(np.asarray(values, dtype=np.float64)).any():
        return NOT_INFORMATIVE, "the changed model's map is constant: its similarity is undefined"
    level = float(np.nanmean(lv))
    if room * (1.0 - level) < DELTA:
        return NOT_INFORMATIVE, (
            f"maps of different images already agree at {level:.2f}: the map hardly depends on "
            f"the image, so a change of model cannot show by {DELTA:g} or more")
    return None, ""

