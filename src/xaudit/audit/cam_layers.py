"""Which layer should a CAM read? The same CAM at the default layer and at the blocks just
below it, side by side: how much their maps agree, and how faithful each is.

CAM maps depend heavily on the layer (a late layer gives coarse, class-specific maps; an
earlier one finer, less specific ones), yet a tool picks one layer per architecture family.
This audit measures that choice instead of assuming it: each candidate's deletion AUC (the
faithfulness audit's curve: the top-ranked pixels replaced by the deletion baseline, lower =
more faithful) is paired image by image with the default layer's, on the same images, tie
breaks and baseline. A candidate is recommended only when it is shown more faithful than the
default under Holm's correction over the candidates (level ``alpha``); otherwise the default
stands, with the evidence. It describes the choice and never decides whether a method is
trusted (the verdict rules the default layer's maps, which are what the run explains).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from scipy import stats as scistats
from torch import nn

from ..errors import ConfigError
from ..explain.base import make_baseline
from ..explain.cam.template import CamExplainer
from ..explain.counting import count_model_evals
from ..models.families import describe
from .base import (
    AuditInput,
    AuditResult,
    compute_maps,
    register_audit,
    skipped,
    stratified,
    trained_maps,
)
from .curves import adaptive_reveal, interval_tolerance, relevance_ranks
from .draws import image_seeds
from .maps import class_scores
from .plots import plot_group_bars
from .stats import ALPHA, holm, paired

TITLE = "CAM layers: is the default layer the right one?"


def candidate_layers(model: nn.Module, default: nn.Module | None, n: int) -> list[tuple[str, nn.Module]]:
    """(name, module) of the default CAM layer and of up to ``n`` − 1 blocks below the output
    block, from the families table (the last module of each block), nearest the output first."""
    names = {id(m): name for name, m in model.named_modules()}
    out: list[tuple[str, nn.Module]] = []
    if default is not None and id(default) in names:
        out.append((names[id(default)], default))
    modules = dict(model.named_modules())
    for _label, members in describe(model).blocks[1:]:
        if len(out) >= n:
            break
        module = modules.get(members[-1])
        if module is not None and all(module is not m for _, m in out):
            out.append((members[-1], module))
    return out


def _cost(p: dict, per_map: dict, explainers: list) -> float:
    cams = [e for e in explainers if isinstance(e, CamExplainer)]
    n, layers, steps = p.get("n_images") or 8, p.get("layers", 4), p.get("steps", 32)
    return sum(n * (layers - 1) * per_map.get(e.label, 1.0) + n * layers * steps / 2 for e in cams)


@register_audit("cam_layers", order=59, family="layers", model_level=True, quick=True,
                cost=_cost, needs="a CAM method")
def cam_layers(inp: AuditInput, figures_dir: Path, n_images: int | None = None, layers: int = 4,
               steps: int = 32, deletion_baseline: str = "black", alpha: float = ALPHA,
               batch_size: int = 32) -> AuditResult:
    """Each CAM method at its default layer and up to ``layers`` − 1 blocks below it."""
    images = stratified(inp.splits["test"], n_images)
    cams = [e for e in inp.explainers if isinstance(e, CamExplainer) and "layer" in e.params()
            and e.params()["layer"] is None]
    if len(images) < 2 or not cams:
        why = "fewer than 2 test images" if len(images) < 2 else (
            "no CAM method on its default layer among the audited methods")
        return skipped("cam_layers", TITLE, why)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 2 <= layers <= 8:
        raise ConfigError(f"cam_layers.layers: expected 2 to 8 layers, got {layers!r}")
    start = time.perf_counter()
    model, ctx = inp.model, inp.ctx
    candidates = candidate_layers(model, ctx.target_layer, layers)
    if len(candidates) < 2:
        return skipped("cam_layers", TITLE, "the families table names no block below the CAM layer")
    ties = image_seeds(inp.generator, len(images))
    baseline = make_baseline(deletion_baseline, images.x, ctx)
    with count_model_evals(model) as count:
        ends = tuple(class_scores(model, v, images.targets, batch_size, "prob").numpy()
                     for v in (images.x, baseline))
    rows, summary, figures = [], {"n_images": len(images), "alpha": alpha,
                                  "deletion_baseline": deletion_baseline, "methods": {}}, []
    evals = count.n
    for explainer in cams:
        per_layer, maps_of = {}, {}
        for k, (name, module) in enumerate(candidates):
            if k == 0:  # the default layer's maps are the run's own, shared with every audit
                m = trained_maps(inp, explainer, "test", images)
            else:
                # The candidate as the target layer keeps the family's token reshape for it.
                layer_ctx = dataclasses.replace(ctx, target_layer=module)
                try:
                    m = compute_maps(explainer, model, images.x, images.targets, layer_ctx,
                                     fast=inp.fast)
                except (ValueError, RuntimeError) as err:  # a layer with no spatial output
                    summary.setdefault("left_out", {})[name] = str(err)[:200]
                    continue
            evals += int(m.model_evals)
            maps = m.maps
            ranks = relevance_ranks(maps, ties)
            with count_model_evals(model) as count:
                curve = adaptive_reveal(model, baseline, images.x, ranks, images.targets, steps,
                                        interval_tolerance, batch_size, "prob", ends=ends)
            evals += count.n
            per_layer[name], maps_of[name] = curve.auc, maps.flatten(1).numpy()
        summary["methods"][explainer.label] = _compare(per_layer, maps_of, alpha, images.ids, rows,
                                                       explainer.label)
    if summary["methods"]:  # one figure for the audit: every CAM method's layers side by side
        entries = [(label, c) for label, s in summary["methods"].items() for c in s["layers"]]
        many = len(summary["methods"]) > 1
        labels = [f"{label}: {c['layer']}" if many else c["layer"] for label, c in entries]
        groups = {"deletion AUC (lower = more faithful)": [
            (c["deletion_auc"], *c["deletion_ci"], c["n"]) for _, c in entries]}
        figures.append(plot_group_bars(figures_dir / "audit_cam_layers.png", labels, groups,
                                       "Deletion AUC by CAM layer, default first (95% intervals)"))
    text = ("Each CAM method at its default layer (first) and at the blocks below it. "
            "Agreement is the rank correlation of a layer's map with the default layer's, per "
            "image; deletion AUC is the faithfulness audit's curve (lower = more faithful), "
            "paired image by image with the default's. A layer is recommended only when it is "
            f"shown more faithful than the default (Holm over the layers, α = {alpha:g}).")
    text += "".join(f"\n\n{label}: {s['advice']}." for label, s in summary["methods"].items())
    return AuditResult("cam_layers", TITLE, text, rows, [], figures, summary,
                       time.perf_counter() - start, evals)


def _compare(per_layer: dict[str, np.ndarray], maps_of: dict[str, np.ndarray], alpha: float,
             ids: list[str], rows: list[dict], label: str) -> dict:
    """Per layer: agreement with and deletion AUC against the default (the first layer)."""
    names = list(per_layer)
    default = names[0]
    layers, tests = [], []
    for name in names:
        auc = per_layer[name]
        agree = np.array([scistats.spearmanr(a, b).statistic if np.ptp(a) and np.ptp(b) else np.nan
                          for a, b in zip(maps_of[name], maps_of[default], strict=True)])
        for i, image_id in enumerate(ids):
            rows.append({"method": label, "layer": name, "id": image_id,
                         "deletion_auc": float(auc[i]), "agreement": float(agree[i])})
        entry = {"layer": name, "default": name == default, "n": int(np.isfinite(auc).sum()),
                 "deletion_auc": float(np.nanmean(auc)), "deletion_ci": _interval(auc),
                 "agreement": float(np.nanmean(agree)) if np.isfinite(agree).any() else None}
        if name != default:
            test = paired(auc, per_layer[default], higher_is_better=False, level=alpha)
            entry.update(difference=test.mean, difference_ci=list(test.bounds()), p_better=test.p_pass)
            tests.append((name, test))
        layers.append(entry)
    better = holm([t.p_pass for _, t in tests], alpha) if tests else []
    shown = [(name, t) for (name, t), b in zip(tests, better, strict=True) if b]
    for entry in layers:
        entry["shown_better"] = any(entry["layer"] == name for name, _ in shown)
    if shown:
        name, t = max(shown, key=lambda r: r[1].mean)
        lo, hi = t.bounds()
        advice = (f"{name} is more faithful than the default layer {default}: deletion AUC lower "
                  f"by {t.mean:.3g} [{lo:.3g}, {hi:.3g}] on {t.n} images; set "
                  f"model.target_layer: {name} to explain with it")
    else:
        advice = (f"the default layer {default} stands: no other layer is shown more faithful "
                  f"on {layers[0]['n']} images (Holm over {len(tests)} layers, α = {alpha:g})")
    return {"default": default, "recommended": shown and max(shown, key=lambda r: r[1].mean)[0]
            or default, "layers": layers, "advice": advice}


def _interval(values: np.ndarray) -> list[float]:
    v = values[np.isfinite(values)]
    if v.size < 2:
        return [float("nan"), float("nan")]
    half = float(scistats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return [float(v.mean() - half), float(v.mean() + half)]
