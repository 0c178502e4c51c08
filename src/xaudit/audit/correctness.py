"""Correct vs incorrect: the audit statistics of correctly and wrongly predicted images.

Per-image statistics are taken from the audits that ran before (faithfulness, localization,
shortcut, ...) and joined by image id, plus two computed here for every method: map
concentration (Gini of |map|) and the share of |map| on the object when object masks exist.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import plots
from .base import (
    AuditInput,
    AuditResult,
    no_extra_cost,
    register_audit,
    skipped,
    stratified,
    trained_maps,
)
from .scorecard import metric_interval

# Per-image columns that are identifiers, not statistics.
_ID_COLUMNS = {"method", "id", "target", "correct", "split", "class", "region", "mode", "block",
               "depth", "rule", "n_steps", "baseline_a", "baseline_b", "image_flag", "area",
               "mask_area", "seconds", "model_evals"}


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = uniform, → 1 = all mass on one pixel."""
    v = np.sort(np.abs(np.asarray(values, dtype=np.float64).ravel()))
    total = v.sum()
    if total <= 0:
        return float("nan")
    n = v.size
    return float((2 * np.arange(1, n + 1) - n - 1) @ v / (n * total))


def pick_images(images, n: int | None):
    """All wrong predictions (up to half of ``n``), the rest correct ones over classes."""
    if n is None or n >= len(images):
        return images
    wrong = [i for i in range(len(images)) if images.preds[i] != images.labels[i]][: max(1, n // 2)]
    right = [i for i in range(len(images)) if images.preds[i] == images.labels[i]]
    keep = set(stratified(images.subset(right), n - len(wrong)).ids) if right else set()
    return images.subset(sorted(wrong + [i for i in right if images.ids[i] in keep]))


@register_audit("correctness", order=90, family="correctness",
                model_level=True, needs_others=True, quick=True, cost=no_extra_cost)
def correctness(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
) -> AuditResult:
    """Side-by-side statistics of correctly and wrongly predicted test images."""
    title = "Correct vs incorrect predictions"
    images = pick_images(inp.splits["test"], n_images)
    if len(images) == 0:
        return skipped("correctness", title, "no test images to audit")
    start = time.perf_counter()
    correct = {images.ids[i]: bool(images.preds[i] == images.labels[i]) for i in range(len(images))}
    n_wrong = sum(1 for v in correct.values() if not v)
    values: dict[tuple[str, str], dict[str, float]] = {}  # (method, statistic) -> id -> value
    for explainer in inp.explainers:
        maps = trained_maps(inp, explainer, "test", images).maps
        for i, image_id in enumerate(images.ids):
            values.setdefault((explainer.label, "gini"), {})[image_id] = gini(maps[i].numpy())
            if images.object_masks is not None:
                a = maps[i].abs()
                total = float(a.sum())
                share = float(a[images.object_masks[i].bool()].sum()) / total if total > 0 else np.nan
                values.setdefault((explainer.label, "on_object_share"), {})[image_id] = share
    for name, result in inp.cache.get("results", {}).items():
        for row in result.rows:
            if row.get("id") not in correct or row.get("split", "test") != "test":
                continue
            if any(k in row for k in ("mode", "rule", "baseline_a")):
                continue  # sweeps and pairs, not one statistic per image
            suffix = f"[{row['region']}]" if "region" in row else ""
            for key, v in row.items():
                if key in _ID_COLUMNS or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                stat = f"{name}.{key}{suffix}"
                values.setdefault((row["method"], stat), {})[row["id"]] = float(v)
    rows, summary_methods = [], {}
    for (method, stat), by_id in values.items():
        entry = {}
        for group, flag in (("correct", True), ("incorrect", False)):
            vals = np.array([v for k, v in by_id.items() if correct[k] is flag])
            mean, lo, hi, n = metric_interval(vals, stat.split("[")[0].split(".")[-1])
            rows.append({"method": method, "statistic": stat, "group": group, "mean": mean,
                         "ci_lo": lo, "ci_hi": hi, "n": n})
            entry[group] = None if not np.isfinite(mean) else mean
        summary_methods.setdefault(method, {})[stat] = entry
    own = [k for k in values if k[1] in ("gini", "on_object_share")]
    figures = []
    if own and n_wrong:
        labels = [f"{m}\n{s}" for m, s in own]
        groups = {g: [metric_interval(np.array([v for k, v in values[key].items()
                                                if correct[k] is flag]), key[1]) for key in own] for g, flag in (("correct", True), ("incorrect", False))}
        figures.append(plots.plot_group_bars(figures_dir / "audit_correctness.png", labels, groups,
                                             "Map statistics: correct vs incorrect predictions"))
    summary = {"n_correct": len(images) - n_wrong, "n_incorrect": n_wrong, "methods": summary_methods}
    if n_wrong == 0:
        summary["note"] = "no wrongly predicted image among the audited test images"
    text = (
        "Each statistic of the other audits, split by whether the model predicted the image "
        "correctly. Maps of wrong predictions that are as concentrated and as faithful as those of "
        "right ones explain the mistake; large differences say the method (or the model) behaves "
        "differently where it fails. No pass/fail rule."
        + ("" if n_wrong else " There was no wrong prediction among the audited images.")
    )
    return AuditResult("correctness", title, text, rows, [], figures, summary,
                       time.perf_counter() - start, 0)
