"""Complexity of maps: sparseness (Gini of |map|) and complexity (entropy of |map|).

Both describe how concentrated a map is, not whether it is right: a map that puts all its
mass on one wrong pixel is as sparse as can be. So both are ranked, never ruled.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from torch import Tensor

from .base import (
    AuditInput,
    AuditResult,
    Cell,
    no_extra_cost,
    register_audit,
    skipped,
    stratified,
    trained_maps,
)

RANKED = "no rule (ranked)"


def _flat_abs(maps: Tensor | np.ndarray) -> np.ndarray:
    """N×F float64 |map| (any trailing shape flattened)."""
    if isinstance(maps, Tensor):
        maps = maps.detach().cpu().numpy()
    a = np.abs(np.asarray(maps, dtype=np.float64))
    return a.reshape(a.shape[0], -1)


def sparseness(maps: Tensor | np.ndarray) -> np.ndarray:
    """Per-image Gini index of |map| (Chalasani et al. 2020): 0 = uniform, → 1 = one pixel.

    An all-zero map has no distribution to measure: NaN.
    """
    a = np.sort(_flat_abs(maps), axis=1)
    n = a.shape[1]
    total = a.sum(axis=1)
    weights = 2 * np.arange(1, n + 1) - n - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a @ weights) / (n * total)
    return np.where(total > 0, out, np.nan)


def complexity(maps: Tensor | np.ndarray) -> np.ndarray:
    """Per-image entropy of |map| / Σ|map| (Bhatt et al. 2020): 0 = one pixel, log(F) = uniform.

    An all-zero map: NaN.
    """
    a = _flat_abs(maps)
    total = a.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / total
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.where(total[:, 0] > 0, -terms.sum(axis=1), np.nan)


def complexity_rise(trained: Tensor | np.ndarray, randomized: Tensor | np.ndarray) -> np.ndarray:
    """Per image: log(complexity of the randomized model's map / the trained model's), eMPRT's
    score (Hedström et al. 2023): above 0 when randomizing the weights spreads the map out.
    NaN where either map is all zero, or the trained map's complexity is 0 (one pixel)."""
    before, after = complexity(trained), complexity(randomized)
    with np.errstate(invalid="ignore", divide="ignore"):
        rise = np.log(after / before)
    return np.where(np.isfinite(rise), rise, np.nan)


@register_audit("complexity", order=58, family="complexity", quick=True, cost=no_extra_cost)
def complexity_audit(inp: AuditInput, figures_dir: Path, n_images: int | None = None) -> AuditResult:
    """Sparseness and entropy of every method's |map| (summed over channels): ranked only."""
    title = "Complexity: how concentrated is each method's map?"
    images = stratified(inp.splits["test"], n_images)
    if len(images) == 0:
        return skipped("complexity", title, "no test images to audit")
    start = time.perf_counter()
    rows, cells = [], []
    for explainer in inp.explainers:
        t0 = time.perf_counter()
        m = trained_maps(inp, explainer, "test", images)
        maps = m.maps
        gini, entropy = sparseness(maps), complexity(maps)
        # The entropy's range depends on the image size: report it next to the value.
        ceiling = float(np.log(maps[0].numel()))
        for i, image_id in enumerate(images.ids):
            rows.append({"method": explainer.label, "id": image_id,
                         "target": inp.classes[int(images.targets[i])],
                         "sparseness": float(gini[i]), "complexity": float(entropy[i]),
                         "complexity_max": ceiling})
        seconds = time.perf_counter() - t0 + m.seconds
        cells.append(Cell(explainer.label, "complexity", "sparseness", gini, True, None, RANKED,
                          seconds, m.model_evals))
        cells.append(Cell(explainer.label, "complexity", "complexity", entropy, False, None, RANKED,
                          seconds, m.model_evals))
    text = (
        "Sparseness is the Gini index of |map| (1 = all relevance on one pixel, 0 = spread evenly); "
        "complexity is the entropy of |map| as a distribution (0 = one pixel, log(H·W) = uniform). "
        "They tell how concise a map is, not whether it is right: ranked, with no rule."
    )
    summary = {"n_images": len(images), "complexity_max": float(np.log(images.x[0, 0].numel()))}
    return AuditResult("complexity", title, text, rows, cells, [], summary,
                       time.perf_counter() - start, 0)

