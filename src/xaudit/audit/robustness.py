"""Robustness of maps to small input noise: average sensitivity and local Lipschitz estimate.

Both re-explain noisy copies of each image and measure how far the map moves. A constant
map is perfectly robust and says nothing, so neither metric has a pass rule: both are ranked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, echo
from .base import (
    AuditInput,
    AuditResult,
    Cell,
    CountedExplain,
    affordable_evals,
    left_out_text,
    over_budget,
    register_audit,
    skipped,
    stratified,
    trained_maps,
)
from .draws import Draws, image_generators, image_seeds, per_image

RANKED = "no rule (ranked)"
ExplainFn = Callable[[Tensor, Tensor], Tensor]  # (x, targets) -> N×C×H×W attributions


def _flat(a: Tensor) -> Tensor:
    return a.detach().reshape(a.shape[0], -1).double().cpu()


def _per_image_max_normalised(a: Tensor) -> Tensor:
    """a / max|a| per image (an all-zero map stays zero)."""
    scale = a.abs().amax(dim=1, keepdim=True)
    return torch.where(scale > 0, a / torch.where(scale > 0, scale, 1.0), a)


def avg_sensitivity(
    explain: ExplainFn,
    x: Tensor,
    targets: Tensor,
    attributions: Tensor,
    n_samples: int,
    radius: float,
    draws: Draws,
) -> np.ndarray:
    """Yeh et al. 2019: mean over samples of ‖e(x) − e(x')‖ / ‖e(x)‖, x' = x + U(−r, r) noise,
    image i's noise drawn from its own seed in ``draws`` (the same for every map given the
    same seeds).

    Norms are Frobenius over the flattened map; an all-zero map gives NaN (no scale to compare).
    """
    ref = _flat(attributions)
    ref_norm = ref.norm(dim=1)
    total = torch.zeros(len(x), dtype=torch.float64)
    generators = image_generators(draws, len(x))
    for _ in range(n_samples):
        noise = (2 * per_image(x.shape, generators, "rand") - 1) * radius
        moved = _flat(explain(x + noise.to(x), targets))
        total += (ref - moved).norm(dim=1)
    out = (total / n_samples) / ref_norm.where(ref_norm > 0, torch.tensor(float("nan"), dtype=torch.float64))
    return out.numpy()


def local_lipschitz(
    explain: ExplainFn,
    x: Tensor,
    targets: Tensor,
    attributions: Tensor,
    n_samples: int,
    std: float,
    draws: Draws,
    normalise: bool = True,
) -> np.ndarray:
    """Alvarez-Melis & Jaakkola 2018: max over samples of ‖e(x) − e(x')‖₂ / ‖x − x'‖₂,
    x' = x + N(0, std²) noise, image i's drawn from its own seed in ``draws``.

    ``normalise``: each map is divided by its own max|map| first, so that methods with maps
    on different scales can be ranked together.
    """
    ref = _flat(attributions)
    if normalise:
        ref = _per_image_max_normalised(ref)
    best = torch.full((len(x),), -torch.inf, dtype=torch.float64)
    generators = image_generators(draws, len(x))
    for _ in range(n_samples):
        noisy = x + (per_image(x.shape, generators) * std).to(x)
        moved = _flat(explain(noisy, targets))
        if normalise:
            moved = _per_image_max_normalised(moved)
        ratio = (ref - moved).norm(dim=1) / _flat(noisy - x).norm(dim=1)
        best = torch.maximum(best, ratio)
    return best.numpy()


def _check(n_samples: int, radius: float, lipschitz_std: float, max_method_evals: int) -> None:
    if n_samples < 1:
        raise ConfigError(f"audit.audits: robustness.n_samples must be at least 1, got {echo(n_samples)}")
    for key, value in (("radius", radius), ("lipschitz_std", lipschitz_std)):
        if not value > 0:
            raise ConfigError(f"audit.audits: robustness.{key} must be a positive number, got {echo(value)}")
    if max_method_evals < 1:
        raise ConfigError(
            f"audit.audits: robustness.max_method_evals must be at least 1, got {echo(max_method_evals)}"
        )


def _cost_robustness(p: dict, per_map: dict[str, float], explainers) -> float:
    return p["n"] * 2 * p["n_samples"] * affordable_evals(per_map, p["max_method_evals"])


@register_audit("robustness", order=57, family="robustness", cost=_cost_robustness)
def robustness(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    n_samples: int = 4,
    radius: float = 0.02,
    lipschitz_std: float = 0.1,
    normalise: bool = True,
    max_method_evals: int = 64,
    batch_size: int = 2,
) -> AuditResult:
    """Average sensitivity (uniform L∞ noise) and local Lipschitz estimate (Gaussian noise)."""
    title = "Robustness: does the map stay put under small input noise?"
    _check(n_samples, radius, lipschitz_std, max_method_evals)
    images = stratified(inp.splits["test"], n_images)
    if len(images) == 0:
        return skipped("robustness", title, "no test images to audit")
    start = time.perf_counter()
    rows, cells = [], []
    summary: dict = {"n_images": len(images), "n_samples": n_samples, "radius": radius,
                     "lipschitz_std": lipschitz_std, "skipped_methods": {}}
    total_evals = 0
    # Common random numbers: every map of an image is re-explained on the same noisy copies.
    sens_seeds, lips_seeds = image_seeds(inp.generator, len(images)), image_seeds(inp.generator, len(images))
    for explainer in inp.explainers:
        trained = trained_maps(inp, explainer, "test", images)
        why = over_budget(trained, len(images), max_method_evals)
        if why:
            summary["skipped_methods"][explainer.label] = why
            continue
        explain = CountedExplain(explainer, inp, batch_size)
        t0 = time.perf_counter()
        sens = avg_sensitivity(explain, images.x, images.targets, trained.attributions,
                               n_samples, radius, sens_seeds)
        lips = local_lipschitz(explain, images.x, images.targets, trained.attributions,
                               n_samples, lipschitz_std, lips_seeds, normalise)
        seconds = time.perf_counter() - t0
        total_evals += explain.model_evals
        for i, image_id in enumerate(images.ids):
            rows.append({"method": explainer.label, "id": image_id,
                         "target": inp.classes[int(images.targets[i])],
                         "avg_sensitivity": float(sens[i]), "local_lipschitz": float(lips[i])})
        evals = explain.model_evals + trained.model_evals
        for metric, values in (("avg_sensitivity", sens), ("local_lipschitz", lips)):
            cells.append(Cell(explainer.label, "robustness", metric, values, False, None, RANKED,
                              seconds + trained.seconds, evals, ids=list(images.ids)))
    text = (
        left_out_text(summary["skipped_methods"])
        + f"Each image is re-explained under {n_samples} noisy copies. Average sensitivity: the mean "
        f"relative change of the map under uniform noise of radius {radius:g} (input units); local "
        f"Lipschitz estimate: the largest change of the map per unit of Gaussian noise (σ = "
        f"{lipschitz_std:g}). Lower is steadier; a constant map is perfectly steady and says "
        "nothing, so both are ranked, with no rule."
    )
    return AuditResult("robustness", title, text, rows, cells, [], summary,
                       time.perf_counter() - start, total_evals)
