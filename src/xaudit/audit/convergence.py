"""Path methods: does the integral converge (n_steps × quadrature rule), and how much does the
map depend on the baseline?"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..explain.base import ExplainContext, Explainer, constructor_params, make_baseline
from ..explain.counting import count_model_evals
from . import plots
from .base import (
    AuditInput,
    AuditResult,
    Cell,
    compute_maps,
    register_audit,
    safe_name,
    skipped,
    stratified,
    trained_maps,
)
from .scorecard import mean_ci
from .similarity import spearman

# Captum's quadrature rules for integrated gradients.
QUADRATURE_RULES = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_middle",
    "riemann_left",
    "riemann_right",
)


def with_params(explainer: Explainer, **changes) -> Explainer | None:
    """A copy of ``explainer`` with some hyper-parameters changed; None if it refuses them."""
    allowed = constructor_params(type(explainer))
    if any(k not in allowed for k in changes):
        return None
    params = {k: v for k, v in explainer.params().items() if k in allowed}
    try:
        return type(explainer)(**{**params, **changes})
    except ValueError:  # e.g. a quadrature rule the method does not offer
        return None


@torch.no_grad()
def output_gap(
    model, x: Tensor, baseline: Tensor, targets: Tensor
) -> Tensor:
    """f(x) − f(baseline) of the explained output (the target logit), per image."""
    fx = model(x).float().gather(1, targets.view(-1, 1)).squeeze(1)
    fb = model(baseline).float().gather(1, targets.view(-1, 1)).squeeze(1)
    return (fx - fb).cpu()


def completeness_gap(
    explainer: Explainer, model, x: Tensor, targets: Tensor, ctx: ExplainContext
) -> Tensor | None:
    """f(x) − f(b) for the explainer's baseline, or None when it is random or not a name."""
    kind = explainer.params().get("baseline", "black")
    if not isinstance(kind, str) or kind == "noise":
        return None
    return output_gap(model, x, make_baseline(kind, x, ctx), targets)


def relative_delta(attr: Tensor, gap: Tensor | None, delta: Tensor | None) -> np.ndarray:
    """|Σ attributions − (f(x) − f(b))| / |f(x) − f(b)| per image.

    Without a known gap we use Captum's delta (Σ attr − gap), so gap = Σ attr − delta.
    """
    total = attr.flatten(1).sum(dim=1).double()
    if gap is None:
        if delta is None:
            return np.full(len(attr), np.nan)
        gap = total - delta.double()
    gap = gap.double()
    rel = (total - gap).abs() / gap.abs().clamp_min(1e-12)
    return rel.numpy()


def non_monotone(values: list[float], slack: float = 0.1) -> bool:
    """True if a finer step count makes the error worse by more than ``slack`` (relative)."""
    v = [x for x in values if np.isfinite(x)]
    return any(b > a * (1 + slack) and b - a > 1e-6 for a, b in zip(v, v[1:], strict=False))


def _cost_convergence(p: dict, per_map: dict[str, float], explainers) -> float:
    """Model evaluations: Σ steps × rules per image and path method (plus the endpoints).

    They are that method's explanations: a method whose map costs nothing here (``per_map``
    0) adds none, so that the plan prices them at the method's own rate.
    """
    paths = [e for e in explainers if e.kind == "path" and per_map.get(e.label, 0) > 0]
    return p["n"] * len(paths) * (sum(p["steps"]) * len(p["rules"]) + 2 * len(p["steps"]))


@register_audit("convergence", order=10, family="convergence",
                needs="a path method (integrated gradients)", cost=_cost_convergence)
def convergence(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    steps: list[int] = (8, 16, 32, 64),
    rules: list[str] = ("gausslegendre", "riemann_middle"),
    tolerance: float = 0.05,
    min_spearman: float = 0.9,
    batch_size: int = 2,
) -> AuditResult:
    """Sweep n_steps and quadrature rules for every path method."""
    title = "Integration convergence of path methods"
    path_methods = [e for e in inp.explainers if e.kind == "path"]
    if not path_methods:
        return skipped("convergence", title, "no path method (e.g. integrated_gradients) is configured")
    bad = [r for r in rules if r not in QUADRATURE_RULES]
    if bad:
        raise ValueError(f"convergence.rules: unknown {bad}. Allowed: {', '.join(QUADRATURE_RULES)}")
    steps = sorted(int(s) for s in steps)
    images = stratified(inp.splits["test"], n_images)
    start = time.perf_counter()
    rows: list[dict] = []
    cells: list[Cell] = []
    figures: list[str] = []
    summary: dict = {"tolerance": tolerance, "steps": steps, "rules": list(rules), "methods": {}}
    total_evals = 0
    # The sweep measures the rules themselves: fp32 and exactly n steps (no bf16 redo, no
    # adaptive ladder); the configured setting is judged as the engine ran it.
    exact = dataclasses.replace(inp.fast, precision="fp32", adaptive_steps=False)
    for explainer in path_methods:
        usable = [r for r in rules if with_params(explainer, n_steps=steps[-1], method=r)]
        if not usable:
            summary["methods"][explainer.label] = {
                "skipped": f"the method takes no n_steps/method, or none of the rules {list(rules)}"
            }
            continue
        refused = [r for r in rules if r not in usable]
        with count_model_evals(inp.model) as count:
            gap = completeness_gap(explainer, inp.model, images.x, images.targets, inp.ctx)
        total_evals += count.n
        maps: dict[tuple[str, int], Tensor] = {}
        rel: dict[tuple[str, int], np.ndarray] = {}
        cost: dict[tuple[str, int], tuple[float, int]] = {}
        for rule in usable:
            for n in steps:
                variant = with_params(explainer, n_steps=n, method=rule)
                shared = variant.params() == explainer.params() and gap is not None
                if shared:
                    # The configured setting: the trained maps every audit shares (its
                    # completeness comes from the gap, which needs no delta).
                    m = trained_maps(inp, explainer, "test", images)
                else:
                    m = compute_maps(variant, inp.model, images.x, images.targets, inp.ctx,
                                     batch_size, with_delta=True, fast=exact)
                maps[(rule, n)] = m.maps
                rel[(rule, n)] = relative_delta(m.attributions, gap, m.delta)
                cost[(rule, n)] = (m.seconds, m.model_evals)
                if not shared:  # shared maps are counted once, under "maps"
                    total_evals += m.model_evals
        finest = maps[(usable[0], steps[-1])]
        corr = {
            key: np.array([spearman(finest[i], mp[i], absolute=True) for i in range(len(images))])
            for key, mp in maps.items()
        }
        for (rule, n), values in rel.items():
            for i, image_id in enumerate(images.ids):
                rows.append(
                    {
                        "method": explainer.label,
                        "rule": rule,
                        "n_steps": n,
                        "id": image_id,
                        "rel_delta": float(values[i]),
                        "spearman_vs_finest": float(corr[(rule, n)][i]),
                        "seconds": cost[(rule, n)][0] / len(images),
                        "model_evals": cost[(rule, n)][1] / len(images),
                    }
                )
        mean_delta = {r: [mean_ci(rel[(r, n)])[0] for n in steps] for r in usable}
        mean_corr = {r: [mean_ci(corr[(r, n)])[0] for n in steps] for r in usable}
        needed = {}
        for r in usable:
            ok = [n for n in steps if np.all(rel[(r, n)][np.isfinite(rel[(r, n)])] <= tolerance)
                  and np.isfinite(rel[(r, n)]).any()]
            needed[r] = ok[0] if ok else None
        flagged = [r for r in usable if non_monotone(mean_delta[r])]
        # The configured setting, computed if the sweep did not contain it.
        params = explainer.params()
        key = (params.get("method", "gausslegendre"), int(params.get("n_steps", 50)))
        if key not in rel:
            m = compute_maps(explainer, inp.model, images.x, images.targets, inp.ctx, batch_size, True,
                             fast=inp.fast)
            rel[key] = relative_delta(m.attributions, gap, m.delta)
            corr[key] = np.array([spearman(finest[i], m.maps[i]) for i in range(len(images))])
            cost[key] = (m.seconds, m.model_evals)
            total_evals += m.model_evals
        seconds = sum(c[0] for c in cost.values())
        evals = sum(c[1] for c in cost.values())
        setting = f"{key[0]}, n_steps={key[1]}"
        cells.append(
            Cell(explainer.label, "convergence", "completeness_rel_delta", rel[key], False,
                 bool(mean_ci(rel[key])[0] <= tolerance),
                 f"mean |Σattr − (f(x) − f(b))| / |f(x) − f(b)| at the configured setting "
                 f"({setting}) ≤ {tolerance:g}", seconds, evals, threshold=float(tolerance),
                 check="superior", ids=list(images.ids))
        )
        cells.append(
            Cell(explainer.label, "convergence", "spearman_vs_finest", corr[key], True,
                 bool(mean_ci(corr[key])[0] >= min_spearman),
                 f"mean Spearman(|map|) of the configured setting with the finest map "
                 f"({usable[0]}, n_steps={steps[-1]}) ≥ {min_spearman:g}", 0.0, 0,
                 threshold=float(min_spearman), check="superior", ids=list(images.ids))
        )
        summary["methods"][explainer.label] = {
            "configured": setting,
            "rules_refused_by_method": refused,
            "n_steps_needed": needed,
            "non_monotone": flagged,
            "mean_rel_delta": mean_delta,
            "mean_spearman_vs_finest": mean_corr,
        }
        figures.append(
            plots.plot_convergence(
                figures_dir / f"audit_convergence_{safe_name(explainer.label)}.png",
                steps, mean_delta, mean_corr, tolerance,
                f"{explainer.label}: convergence over {len(images)} test images",
            )
        )
    text = (
        "Left: the completeness error |Σattr − (f(x) − f(b))| relative to |f(x) − f(b)| for each "
        "n_steps and quadrature rule; it should fall below the tolerance and keep falling. Right: "
        "agreement of each map with the finest one. 'n_steps_needed' is the smallest n_steps at "
        "which every audited image meets the tolerance; rules whose error grows with n_steps are "
        "listed as non-monotone."
    )
    return AuditResult("convergence", title, text, rows, cells, figures, summary,
                       time.perf_counter() - start, total_evals)


def _cost_baseline_sensitivity(p: dict, per_map: dict[str, float], explainers) -> float:
    """Every baseline but the method's own, whose map is the shared pool's."""
    takes = [e for e in explainers if "baseline" in e.params()]
    return p["n"] * sum(per_map[e.label] * (len(p["baselines"]) - (e.params()["baseline"] in p["baselines"]))
                        for e in takes)


@register_audit("baseline_sensitivity", order=20, family="convergence",
                needs="a method with a baseline", cost=_cost_baseline_sensitivity)
def baseline_sensitivity(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    baselines: list[str] = ("black", "blur", "noise", "mean"),
    batch_size: int = 2,
) -> AuditResult:
    """The same map under several baselines, with their pairwise Spearman(|map|)."""
    title = "Baseline sensitivity"
    methods = [e for e in inp.explainers if "baseline" in constructor_params(type(e))]
    if not methods:
        return skipped("baseline_sensitivity", title, "no configured method takes a baseline")
    images = stratified(inp.splits["test"], n_images)
    start = time.perf_counter()
    rows, cells, figures = [], [], []
    summary: dict = {"baselines": list(baselines), "methods": {}}
    total_evals = 0
    names = list(baselines)
    for explainer in methods:
        maps, seconds, evals = {}, 0.0, 0
        own = 0
        for b in names:
            if explainer.params().get("baseline") == b:  # the map the other audits read
                m = trained_maps(inp, explainer, "test", images)
                own += m.model_evals
            else:
                m = compute_maps(with_params(explainer, baseline=b), inp.model, images.x,
                                 images.targets, inp.ctx, batch_size, fast=inp.fast)
            maps[b] = m.maps
            seconds += m.seconds
            evals += m.model_evals
        total_evals += evals - own
        k = len(names)
        matrix = np.eye(k)
        pairs = []
        for a in range(k):
            for b in range(a + 1, k):
                s = np.array([spearman(maps[names[a]][i], maps[names[b]][i]) for i in range(len(images))])
                matrix[a, b] = matrix[b, a] = mean_ci(s)[0]
                pairs.append(s)
                for i, image_id in enumerate(images.ids):
                    rows.append({"method": explainer.label, "baseline_a": names[a],
                                 "baseline_b": names[b], "id": image_id, "spearman_abs": float(s[i])})
        stacked = np.stack(pairs) if pairs else np.full((1, len(images)), np.nan)
        finite = np.isfinite(stacked)
        # Mean over the baseline pairs that are defined (NaN only if none is).
        values = np.where(finite.any(0), np.nansum(stacked, 0) / np.maximum(finite.sum(0), 1), np.nan)
        cells.append(Cell(explainer.label, "baseline_sensitivity", "mean_pairwise_spearman_abs",
                          values, True, None,
                          "no pass/fail (the baseline is a modelling choice); ranked, higher = "
                          "less dependent on it", seconds, evals))
        summary["methods"][explainer.label] = {"matrix": matrix.tolist()}
        figures.append(plots.plot_similarity_matrix(
            figures_dir / f"audit_baseline_sensitivity_{safe_name(explainer.label)}.png",
            names, matrix, f"{explainer.label}: Spearman(|map|) between baselines"))
    text = (
        "The same method run with each baseline; cells show the mean Spearman correlation of "
        "|maps| between two baselines over the audited images. Low values mean the map says as "
        "much about the chosen baseline as about the model, so state the baseline with the map."
    )
    return AuditResult("baseline_sensitivity", title, text, rows, cells, figures, summary,
                       time.perf_counter() - start, total_evals)
