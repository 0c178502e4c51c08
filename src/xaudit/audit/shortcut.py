"""Shortcut screening: how much attribution mass lies where the label should not be?

Regions: the image border, the four corners, everything outside the object mask (the leaf)
when there is one, and user-named rectangles. For each method, class and region we compare
the share of |attribution| on the *training* images (where a planted tag or a watermark
lives) with the share expected from the region's area and with the share on test images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from . import plots
from .base import (
    AuditImages,
    AuditInput,
    AuditResult,
    Cell,
    no_extra_cost,
    register_audit,
    skipped,
    stratified,
    trained_maps,
)
from .scorecard import mean_ci


def rect_mask(h: int, w: int, box: list[float]) -> Tensor:
    """H×W bool mask of a rectangle given as [x0, y0, x1, y1] fractions of the image."""
    if len(box) != 4 or not all(0 <= v <= 1 for v in box) or box[0] >= box[2] or box[1] >= box[3]:
        raise ConfigError(f"a region must be [x0, y0, x1, y1] fractions with x0 < x1, y0 < y1; got {box}")
    x0, y0 = int(round(box[0] * w)), int(round(box[1] * h))
    x1, y1 = max(x0 + 1, int(round(box[2] * w))), max(y0 + 1, int(round(box[3] * h)))
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def screening_regions(
    images: AuditImages, border: float, corner: float, user: dict[str, list[float]] | None
) -> dict[str, Tensor]:
    """Region name -> N×H×W bool masks."""
    n, _, h, w = images.x.shape
    out: dict[str, Tensor] = {}
    inner = rect_mask(h, w, [border, border, 1 - border, 1 - border])
    out["border"] = (~inner).expand(n, h, w)
    c = corner
    for name, box in {
        "corner_top_left": [0, 0, c, c],
        "corner_top_right": [1 - c, 0, 1, c],
        "corner_bottom_left": [0, 1 - c, c, 1],
        "corner_bottom_right": [1 - c, 1 - c, 1, 1],
    }.items():
        out[name] = rect_mask(h, w, box).expand(n, h, w)
    if images.object_masks is not None:
        out["off_object"] = ~images.object_masks.bool()
    for name, box in (user or {}).items():
        out[f"region_{name}"] = rect_mask(h, w, list(box)).expand(n, h, w)
    return out


def mass_share(maps: Tensor, region: Tensor) -> np.ndarray:
    """Per image: share of Σ|map| inside ``region`` (NaN for an all-zero map)."""
    a = maps.abs().flatten(1).double()
    inside = (a * region.flatten(1).double()).sum(1)
    total = a.sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.nan).numpy()


def area_share(region: Tensor) -> np.ndarray:
    return region.flatten(1).double().mean(1).numpy()


def concentration_threshold(area: float, margin: float) -> float:
    """The share that flags a region: its area plus ``margin`` of the rest of the mass."""
    return area + margin * (1 - area)


@register_audit("shortcut", order=70, family="shortcut", model_level=True, quick=True,
                cost=no_extra_cost, map_splits=("train", "test"))
def shortcut(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    border: float = 0.1,
    corner: float = 0.25,
    margin: float = 0.25,
    gap: float = 0.1,
) -> AuditResult:
    """Flag classes whose attribution mass sits off the object, on the border or in a corner."""
    title = "Shortcut screening"
    splits = {s: stratified(inp.splits[s], n_images) for s in ("train", "test") if s in inp.splits}
    splits = {s: im for s, im in splits.items() if len(im)}
    if not splits:
        return skipped("shortcut", title, "no images to screen")
    if "train" not in splits:
        note = "no training images were given: the screen cannot see training-only shortcuts"
    else:
        note = ""
    start = time.perf_counter()
    rows, cells, figures = [], [], []
    drawn: dict[str, tuple] = {}
    flagged_classes: set[str] = set()
    detail: dict = {}
    for explainer in inp.explainers:
        stats: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}  # split->class->region
        costs = [0.0, 0]
        image_values = []
        for split, images in splits.items():
            m = trained_maps(inp, explainer, split, images)
            costs[0] += m.seconds
            costs[1] += m.model_evals
            regions = screening_regions(images, border, corner, inp.regions)
            shares = {r: mass_share(m.maps, mask) for r, mask in regions.items()}
            areas = {r: area_share(mask) for r, mask in regions.items()}
            labels = images.labels.tolist()
            for i, image_id in enumerate(images.ids):
                for r in regions:
                    thr = concentration_threshold(areas[r][i], margin)
                    rows.append({"method": explainer.label, "split": split, "id": image_id,
                                 "class": inp.classes[labels[i]], "region": r,
                                 "share": float(shares[r][i]), "area": float(areas[r][i]),
                                 "image_flag": bool(shares[r][i] >= thr)})
            headline = "off_object" if "off_object" in regions else "border"
            if split == ("train" if "train" in splits else "test"):
                image_values = shares[headline]
            per_class = stats.setdefault(split, {})
            for c in sorted(set(labels)):
                idx = [i for i, lab in enumerate(labels) if lab == c]
                per_class[inp.classes[c]] = {
                    r: (mean_ci(shares[r][idx])[0], float(np.mean(areas[r][idx]))) for r in regions
                }
        screened = "train" if "train" in stats else "test"
        class_names = list(stats[screened])
        region_names = list(next(iter(stats[screened].values())))
        share = np.zeros((len(class_names), len(region_names)))
        thresh = np.zeros_like(share)
        flags = np.zeros_like(share, dtype=bool)
        reasons: dict[str, list[str]] = {}
        for ci_, cname in enumerate(class_names):
            for ri, r in enumerate(region_names):
                s, a = stats[screened][cname][r]
                share[ci_, ri], thresh[ci_, ri] = s, concentration_threshold(a, margin)
                concentrated = bool(s >= thresh[ci_, ri])
                other = stats.get("test", {}).get(cname, {}).get(r) if screened == "train" else None
                train_only = bool(other is not None and s - other[0] >= gap and s >= 2 * a)
                if concentrated or train_only:
                    flags[ci_, ri] = True
                    why = "concentrated" if concentrated else "train-only"
                    reasons.setdefault(cname, []).append(f"{r} ({why}: share {s:.2f}, area {a:.2f})")
        flagged_classes.update(reasons)
        detail[explainer.label] = {"flagged_classes": reasons}
        headline = "off_object" if "off_object" in region_names else "border"
        cells.append(Cell(explainer.label, "shortcut", f"{headline}_share_{screened}",
                          np.asarray(image_values), False, None,
                          "model-level screen: flags go to the verdict, not to the method",
                          costs[0], costs[1]))
        drawn[explainer.label] = (share, thresh, flags)
        axes = (class_names, region_names, screened)
    if drawn:  # one figure for the family, a panel per method
        class_names, region_names, screened = axes
        figures.append(plots.plot_shortcut(
            figures_dir / "audit_shortcut.png", class_names, region_names, drawn,
            f"Attribution share per region ({screened} images)"))
    rule = (f"a class is flagged when, on its {('training' if 'train' in splits else 'test')} "
            f"images, a region holds a share of |attribution| ≥ area + {margin:g}·(1 − area), or "
            f"≥ 2·area and {gap:g} more than on its test images")
    summary = {"flagged": bool(flagged_classes), "classes": sorted(flagged_classes),
               "rule": rule, "methods": detail}
    if note:
        summary["note"] = note
    text = (
        "Share of attribution mass in regions that should not carry the label: the border, the "
        "corners, outside the object and user-named regions, measured on training images (where "
        "tags and watermarks live) and test images. Bars above the black tick are flagged: the "
        "model's evidence for that class lies off the object. " + rule + "."
    )
    return AuditResult("shortcut", title, text, rows, cells, figures, summary,
                       time.perf_counter() - start, 0)
