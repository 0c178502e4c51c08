"""Known truth on a finished run of the synthetic source: how well each explained method's
stored maps rank the lesions of its images by their true importance.

On synthetic leaves a lesion can be re-drawn away in distribution (``render_leaf_without``),
so its true importance for this run's classifier is measured, not assumed: the drop of the
explained class's logit when that lesion alone is removed. A map's truth score on an image is
the Spearman correlation between its |attribution| mass inside each lesion and those drops
(``lesions.image_truth_score``, the one definition ``xaudit validate`` uses too), over the
``MAX_LESIONS`` largest lesions of the explained images with at least ``MIN_LESIONS``. The
negative controls, which ignore the model, are scored on the same images: a method that
ranks the lesions no better than the best of them does not show this model's use of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import stats

from ..audit.controls import KINDS, ControlMap
from ..data.base import Record
from ..data.synthetic import leaf_drawing
from ..explain.base import context_for
from ..explain.engine import MapStore
from ..models import Classifier
from .lesions import MIN_LESIONS, image_truth_score, lesion_interventions

MAX_LESIONS = 8  # the largest lesions of an image: one forward each
MAX_IMAGES = 64  # explained images scored at most: the cost stays a few seconds
LEVEL = 0.95
TABLE_COLUMNS = ("method", "kind", "truth_score", "ci_lo", "ci_hi", "n_images",
                 "minus_best_control", "diff_ci_lo", "diff_ci_hi", "beats_best_control")


def mean_interval(values: Sequence[float], bound: float = 1.0, level: float = LEVEL) -> dict:
    """Mean, two-sided t-interval (None below two values; clipped to ±``bound``, the range
    of the values) and n."""
    v = np.asarray(values, float)
    if len(v) == 0:
        return {"score": None, "ci": [None, None], "n": 0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"score": mean, "ci": [None, None], "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"score": mean, "ci": [max(mean - half, -bound), min(mean + half, bound)],
            "n": int(len(v))}


def beats(diff: dict) -> str:
    """"yes" when the interval of (method − best control) lies above 0, "no" when it lies at
    or below 0, "undecided" otherwise (and with fewer than two paired images)."""
    lo, hi = diff["ci"]
    if lo is not None and lo > 0:
        return "yes"
    if hi is not None and hi <= 0:
        return "no"
    return "undecided"


def _geometry(clf: Classifier, pixels: torch.Tensor, masks: torch.Tensor):
    """Renders (uint8 N×3×h×w) and lesion masks (L×h×w) in the model's input geometry, as
    the decoded store resizes and crops the record's own image."""
    pre = clf.preprocessing
    images = torch.stack([pre.image_tensor(Image.fromarray(p.permute(1, 2, 0).numpy()))
                          for p in pixels])
    return images, torch.stack([pre.mask_tensor(m.numpy()) for m in masks])


def _interventions(clf: Classifier, records: Sequence[Record], max_lesions: int,
                   max_images: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(position in ``records``, masks, the leaf and each re-drawn one) for the records
    whose leaf has at least ``MIN_LESIONS`` lesions, in the model's geometry."""
    out = []
    for i, rec in enumerate(records):
        drawing = leaf_drawing(rec)
        if drawing is None or drawing["label"] == 0:  # not synthetic, or a healthy leaf
            continue
        seed, label, size = drawing.pop("seed"), drawing.pop("label"), drawing.pop("size")
        masks, pixels = lesion_interventions(seed, label, size, max_lesions, **drawing)
        if len(masks) < MIN_LESIONS:
            continue
        images, masks = _geometry(clf, pixels, masks)
        out.append((i, masks, images))
        if len(out) == max_images:
            break
    return out


def known_truth(clf: Classifier, records: Sequence[Record], maps_root: Path,
                methods: Sequence[str], seed: int, device: torch.device | str = "cpu",
                max_lesions: int = MAX_LESIONS, max_images: int = MAX_IMAGES) -> dict:
    """Truth scores of ``methods`` (their maps stored under ``maps_root``, for ``records``)
    and of the negative controls: a plain dict for summary.json (``skipped`` says why there
    is nothing to score). ``seed``: the random controls' seed, as the explain stage's."""
    t0 = time.perf_counter()
    if not methods:
        return {"skipped": "no method was explained"}
    scored = _interventions(clf, records, max_lesions, max_images)
    if not scored:
        return {"skipped": f"no explained image has a leaf with at least {MIN_LESIONS} lesions"}
    ids = [records[i].id for i, _, _ in scored]
    model, pre = clf.module, clf.preprocessing
    was_training = model.training
    model.eval()  # never update normalisation statistics: no other number of the run moves
    try:
        with torch.no_grad():
            logits = [model(pre.normalize(images).to(device)).double().cpu()
                      for _, _, images in scored]
            originals = torch.stack([images[0] for _, _, images in scored])
            targets = MapStore(maps_root, methods[0]).load(ids)["targets"]
            ctx = context_for(clf, torch.Generator().manual_seed(seed + 1))
            x = pre.normalize(originals).to(device)
            control_maps = {ControlMap(k).label: ControlMap(k).attribute(
                model, x, targets.to(device), ctx).sum(1).cpu() for k in KINDS}
    finally:
        model.train(was_training)

    def per_image(maps: torch.Tensor, tgts: torch.Tensor) -> list[float | None]:
        return [image_truth_score(maps[j], masks, s[0, t] - s[1:, t], absolute=True)
                for j, ((_, masks, _), s, t) in enumerate(zip(scored, logits, tgts.tolist(),
                                                              strict=True))]

    rows = {}
    for label in methods:
        stored = MapStore(maps_root, label).load(ids)
        rows[label] = per_image(stored["maps"], stored["targets"])
    controls = {label: per_image(m, targets) for label, m in control_maps.items()}

    def summary(values: list[float | None]) -> dict:
        return mean_interval([v for v in values if v is not None])

    control_stats = {label: summary(v) for label, v in controls.items()}
    if not any(v is not None for values in [*rows.values(), *controls.values()] for v in values):
        return {"skipped": "no leaf has lesions to rank: removing one never moved the explained "
                           "class's logit, or every map is flat over them"}
    ranked = [lab for lab in control_stats if control_stats[lab]["score"] is not None]
    best = max(ranked, key=lambda lab: control_stats[lab]["score"]) if ranked else None
    method_stats = {}
    for label, values in rows.items():
        entry = summary(values)
        if best is not None:
            diff = mean_interval([a - b for a, b in zip(values, controls[best], strict=True)
                                  if a is not None and b is not None], bound=2.0)
            entry |= {"minus_best_control": diff["score"], "diff_ci": diff["ci"],
                      "beats_best_control": beats(diff)}
        method_stats[label] = entry
    return {
        "mass": "|attribution|",
        "max_lesions": max_lesions,
        "min_lesions": MIN_LESIONS,
        "images": len(ids),
        "image_ids": ids,
        "methods": method_stats,
        "controls": control_stats,
        "best_control": best,
        "best_control_score": control_stats[best]["score"] if best else None,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def table_rows(truth: dict) -> list[dict]:
    """``tables/known_truth.csv``: one row per method, then one per control."""
    out = []
    for kind, entries in (("method", truth.get("methods", {})), ("control", truth.get("controls", {}))):
        for label, e in entries.items():
            diff_ci = e.get("diff_ci") or [None, None]
            out.append({"method": label, "kind": kind, "truth_score": e["score"],
                        "ci_lo": e["ci"][0], "ci_hi": e["ci"][1], "n_images": e["n"],
                        "minus_best_control": e.get("minus_best_control"),
                        "diff_ci_lo": diff_ci[0], "diff_ci_hi": diff_ci[1],
                        "beats_best_control": e.get("beats_best_control", "")})
    return out
