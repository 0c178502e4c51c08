"""Localization against evidence masks: pointing game, relevance mass / rank, AUROC.

Metrics take one 2-D map and one boolean mask. The audit scores |map| by default (where does
the map put its weight, whatever the sign, as heat maps are read): pixel-level maps such as
Integrated Gradients alternate in sign inside one lesion, so a signed, blurred map cancels
there. ``absolute=False`` scores the signed map (evidence *for* the target class).
An empty mask (or a map without positive mass, for relevance mass) gives NaN.

The audit scores correctly classified images only: there the map explains the true class,
whose evidence the mask marks. (Where the model looked when it was wrong is the correctness
audit's question.)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.stats import rankdata

from ..errors import ConfigError
from . import plots
from .base import (
    AuditInput,
    AuditResult,
    Cell,
    no_extra_cost,
    register_audit,
    skipped,
    stratified,
    sub_generator,
    trained_maps,
)
from .faithfulness import EDGE, RANDOM
from .references import centre_map, random_map, sobel_map
from .scorecard import mean_ci
from .similarity import as_map

CENTRE = "centre (reference)"


def _mask(mask) -> np.ndarray:
    m = as_map(mask) > 0.5
    return m


def pointing_game(saliency, mask, tolerance: float = 0, smooth: float = 0.0) -> float:
    """1.0 if the map's maximum lies in the mask or closer than ``tolerance`` pixels to it.

    The distance is Euclidean and the bound strict, as in TorchRay's ``PointingGame``
    (hit when the squared distance to a mask pixel is < tolerance²); ``tolerance`` 0 asks for
    the maximum to lie in the mask itself.
    ``smooth`` > 0 blurs the map first with a Gaussian of σ = smooth × its longer side, as
    TorchRay's pointing-game benchmark does for pixel-level maps (σ = 0.02): the maximum of a
    raw gradient map is one noisy pixel, that of the blurred map the densest evidence.
    """
    if not tolerance >= 0:
        raise ConfigError(f"pointing game tolerance: expected a distance >= 0 in pixels, got {tolerance!r}")
    s, m = as_map(saliency), _mask(mask)
    if not m.any():
        return float("nan")
    if smooth > 0:
        s = gaussian_filter(s.astype(np.float64), sigma=smooth * max(s.shape), mode="nearest")
    peak = np.unravel_index(int(np.argmax(s)), s.shape)
    if m[peak]:
        return 1.0
    # Distance from every pixel to the nearest mask pixel; only the peak's is read.
    return float(distance_transform_edt(~m)[peak] < tolerance)


def relevance_mass(saliency, mask) -> float:
    """Share of the positive relevance that lies inside the mask (Arras et al. 2022)."""
    s, m = np.clip(as_map(saliency), 0, None), _mask(mask)
    total = s.sum()
    if not m.any() or total <= 0:
        return float("nan")
    return float(s[m].sum() / total)


def relevance_rank(saliency, mask) -> float:
    """Share of the K highest-ranked pixels that lie inside the mask, K = mask size."""
    s, m = as_map(saliency).ravel(), _mask(mask).ravel()
    k = int(m.sum())
    if k == 0:
        return float("nan")
    top = np.argsort(-s, kind="stable")[:k]
    return float(m[top].mean())


def auroc(saliency, mask) -> float:
    """Area under the ROC curve of the map as a detector of mask pixels (ties count half)."""
    s, m = as_map(saliency).ravel(), _mask(mask).ravel()
    pos, neg = int(m.sum()), int((~m).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[m].sum() - pos * (pos + 1) / 2) / (pos * neg))


METRIC_FNS = {
    "relevance_mass": relevance_mass,
    "auroc": auroc,
    "pointing_game": pointing_game,
    "relevance_rank": relevance_rank,
}
RULED = ("relevance_mass", "auroc")


@register_audit("localization", order=60, family="localization",
                needs="evidence masks", quick=True, cost=no_extra_cost)
def localization(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    absolute: bool = True,
    tolerance: int | None = None,
    smooth: float = 0.02,
) -> AuditResult:
    """Map against the evidence masks, with a centre-of-image baseline."""
    title = "Localization against evidence masks"
    test = inp.splits["test"]
    if test.masks is None:
        return skipped("localization", title, f"none of the {len(test)} test images audited has an evidence mask")
    if not 0 <= smooth < 0.5:
        raise ConfigError(f"localization smooth: expected a fraction in [0, 0.5), got {smooth!r}")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                  or not tolerance >= 0):
        raise ConfigError(f"localization tolerance: expected a distance >= 0 in pixels, got {tolerance!r}")
    # Images without a mask file are left out (and counted), not taken as having no evidence.
    missing = np.zeros(len(test), bool) if test.mask_missing is None else test.mask_missing.numpy()
    has_mask = [i for i in range(len(test)) if not bool(missing[i]) and bool(test.masks[i].any())]
    # Zhang et al. (2018) count a hit within 15 pixels of the mask at 224 px; scaled to the size.
    tol = tolerance if tolerance is not None else max(0, round(15 * test.masks.shape[-1] / 224))
    if not has_mask:
        return skipped("localization", title, "every evidence mask of the test images is empty")
    correct = [i for i in has_mask if int(test.preds[i]) == int(test.labels[i])
               and int(test.targets[i]) == int(test.labels[i])]
    if not correct:
        return skipped("localization", title,
                       "no correctly classified test image with evidence in its mask")
    images = stratified(test.subset(correct), n_images)
    start = time.perf_counter()
    n, _, h, w = images.x.shape
    maps: dict[str, np.ndarray] = {}
    costs: dict[str, tuple[float, int]] = {}
    for explainer in inp.explainers:
        m = trained_maps(inp, explainer, "test", images)
        maps[explainer.label] = m.maps.numpy()
        costs[explainer.label] = (m.seconds, m.model_evals)
    maps[CENTRE] = centre_map(n, h, w).numpy()
    maps[EDGE] = sobel_map(images.pixels).numpy()
    maps[RANDOM] = random_map((n, h, w), sub_generator(inp.generator)).numpy()
    masks = images.masks.numpy()
    scores: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for label, mp in maps.items():
        mp = np.abs(mp) if absolute else mp
        scores[label] = {}
        for metric, fn in METRIC_FNS.items():
            kw = {"tolerance": tol, "smooth": smooth} if metric == "pointing_game" else {}
            scores[label][metric] = np.array([fn(mp[i], masks[i], **kw) for i in range(n)])
        for i, image_id in enumerate(images.ids):
            rows.append({"method": label, "id": image_id,
                         "mask_area": float(masks[i].mean()),
                         **{k: float(v[i]) for k, v in scores[label].items()}})
    cells = []
    for label in maps:
        reference = "(reference)" in label
        for metric in METRIC_FNS:
            values = scores[label][metric]
            passed, rule = None, "reference: no rule" if reference else "no rule (reported for ranking)"
            threshold = None
            if metric in RULED and not reference:
                mine, centre = mean_ci(values)[0], mean_ci(scores[CENTRE][metric])[0]
                passed = bool(mine > centre) if np.isfinite(mine) else None
                rule = f"mean {metric} above the centre baseline's ({centre:.2f})"
                threshold = float(centre) if np.isfinite(centre) else None
            seconds, evals = costs.get(label, (0.0, 0))
            cells.append(Cell(label, "localization", metric, values, True, passed, rule, seconds,
                              evals, threshold=threshold, ids=list(images.ids),
                              check="controls" if metric in RULED and not reference else ""))
    figures = [plots.plot_overlays(
        figures_dir / "audit_localization.png",
        images.pixels.permute(0, 2, 3, 1).numpy(), masks,
        {k: v for k, v in maps.items() if k != RANDOM},
        "Maps with the evidence mask outlined (green)",
    )]
    summary = {"n_images": n, "images_without_mask": int(missing.sum()), "absolute": absolute,
               "pointing_tolerance_px": tol,
               "pointing_smooth": smooth,
               "centre_baseline": {k: mean_ci(v)[0] for k, v in scores[CENTRE].items()}}
    text = (
        "How much of each map falls on the annotated evidence: relevance mass (share of positive "
        "relevance inside the mask), relevance rank (share of the top-K pixels inside, K = mask "
        f"size), AUROC of the map as a mask detector, and the pointing game (is the maximum of the "
        f"map, blurred with σ = {smooth:g} of the side, in the mask or closer than {tol} px to it?). "
        f"Scored on "
        f"correctly classified test images, whose maps explain the true class. A method must beat "
        f"a map that just favours the image centre."
        + (f" {int(missing.sum())} of the {len(test)} test images sampled have no mask file and are "
           "left out." if bool(missing.any()) else "")
    )
    return AuditResult("localization", title, text, rows, cells, figures, summary,
                       time.perf_counter() - start, 0)

