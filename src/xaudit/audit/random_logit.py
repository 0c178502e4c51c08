"""Random logit test (Sixt et al. 2020): does the map change when another class is explained?

A map that explains the class must differ between the explained class and a random other
class. The yardstick is the randomization audits' random-pair level, paired per image: the
mean similarity of the image's map to the maps of every other image (``excess.py``).

Similarity is taken on signed maps: in a two-class model the evidence for one class is the
evidence against the other, so a class-sensitive map for the other class is the negated map,
whose |map| is identical; only the signed comparison sees that it changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import (
    AuditInput,
    AuditResult,
    Cell,
    CountedExplain,
    register_audit,
    skipped,
    stratified,
    trained_maps,
)
from .excess import DELTA, REPLACED, excess, point_passed, uninformative
from .randomization import random_pair
from .scorecard import mean_ci
from .similarity import spearman, ssim

ExplainFn = Callable[[Tensor, Tensor], Tensor]  # (x, targets) -> N×C×H×W attributions
SIMILARITIES = ("spearman_signed", "spearman_abs", "ssim_signed")


def other_classes(targets: Tensor, n_classes: int, generator: torch.Generator) -> Tensor:
    """For each target, a class drawn uniformly from the other ``n_classes - 1``."""
    shift = torch.randint(1, n_classes, (len(targets),), generator=generator)
    return (targets + shift) % n_classes


def map_similarities(ref: Tensor, other: Tensor) -> dict[str, np.ndarray]:
    """Per image: Spearman of signed and of |maps|, and SSIM of signed maps (N×H×W stacks)."""
    out: dict[str, list[float]] = {k: [] for k in SIMILARITIES}
    for a, b in zip(ref, other, strict=True):
        out["spearman_signed"].append(spearman(a, b, absolute=False))
        out["spearman_abs"].append(spearman(a, b, absolute=True))
        out["ssim_signed"].append(ssim(a, b, absolute=False))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def random_logit(
    explain: ExplainFn, x: Tensor, targets: Tensor, others: Tensor, maps: Tensor | None = None
) -> dict[str, np.ndarray]:
    """Similarities between the map of ``targets`` and the map of ``others`` (summed over
    channels); ``maps``: the targets' N×C×H×W attributions when already computed."""
    if maps is None:
        maps = explain(x, targets)
    return map_similarities(maps.sum(dim=1), explain(x, others).sum(dim=1))


def _cost_random_logit(p: dict, per_map: dict[str, float], explainers) -> float:
    return p["n"] * sum(per_map.values())


@register_audit("random_logit", order=35, family="randomization",
                needs="two classes or more", cost=_cost_random_logit,
                replaced={"margin": REPLACED["margin"]})
def random_logit_audit(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    batch_size: int = 2,
) -> AuditResult:
    """Target-class map against a random other class's map, paired per image against the
    random-pair level of signed maps."""
    title = "Random logit: does the map change with the class explained?"
    if len(inp.classes) < 2:
        return skipped("random_logit", title, "the model has one class: there is no other class")
    images = stratified(inp.splits["test"], n_images)
    if len(images) < 2:
        return skipped("random_logit", title, "needs at least 2 test images (random pairs)")
    start = time.perf_counter()
    rows, cells = [], []
    summary: dict = {"n_images": len(images), "delta": DELTA}
    total_evals = 0
    for explainer in inp.explainers:
        trained = trained_maps(inp, explainer, "test", images)
        others = other_classes(images.targets, len(inp.classes), inp.generator)
        explain = CountedExplain(explainer, inp, batch_size)
        sims = random_logit(explain, images.x, images.targets, others, trained.attributions)
        pair = random_pair(inp, explainer, images)
        values = excess(sims["spearman_signed"], pair["spearman_signed"])
        total_evals += explain.model_evals
        for i, image_id in enumerate(images.ids):
            rows.append({"method": explainer.label, "id": image_id,
                         "target": inp.classes[int(images.targets[i])],
                         "other": inp.classes[int(others[i])],
                         **{k: float(v[i]) for k, v in sims.items()},
                         "random_pair_spearman_signed": float(pair["spearman_signed"][i]),
                         "excess": float(values[i])})
        line = mean_ci(pair["spearman_signed"])[0]
        forced, note = uninformative(pair["spearman_signed"], sims["spearman_signed"])
        seconds, evals = explain.seconds + trained.seconds, explain.model_evals + trained.model_evals
        cells.append(Cell(explainer.label, "random_logit", "random_logit_spearman", values,
                          False, point_passed(values),
                          "Spearman(signed map) with a random other class's map minus the image's "
                          f"random-pair level (mean {line:.2f}): no more than 0, paired per image",
                          seconds, evals, threshold=0.0, forced=forced, note=note,
                          check="noninferior", min_difference=DELTA, ids=list(images.ids)))
        cells.append(Cell(explainer.label, "random_logit", "random_logit_ssim", sims["ssim_signed"],
                          False, None, "no rule (ranked)", seconds, evals, ids=list(images.ids)))
        summary[explainer.label] = {"random_pair_spearman_signed": line, "excess": mean_ci(values)[0],
                                    **{k: mean_ci(v)[0] for k, v in sims.items()}}
    text = (
        "Each image is explained for its explained class and for a random other class. A map that "
        "explains the class must change: paired per image, the Spearman correlation of the two signed "
        "maps must be no higher than the image's random-pair level (the mean similarity of its map "
        "to every other image's). A map that stays the same whatever class is asked for shows the "
        "image, not the class; one that hardly depends on the image makes the test not informative."
    )
    return AuditResult("random_logit", title, text, rows, cells, [], summary,
                       time.perf_counter() - start, total_evals)
