"""Smooth model randomization (sMPRT, Hedström et al. 2023): randomization judged on denoised maps.

A gradient map of a trained network is noisy (gradient shattering), and noise alone makes two
maps dissimilar: MPRT then credits a method with "depending on the weights" when its map has
only become noisier. sMPRT averages each map over noisy copies of the input first, for the
trained model and the fully re-initialised one alike, and compares the averages.

Both models see the same noisy copies: the comparison is paired, so a map that depends on the
image alone (the edge control) stays identical and fails, as it should.
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
    fork_seed,
    left_out_text,
    over_budget,
    register_audit,
    skipped,
    stratified,
    trained_maps,
)
from .excess import DELTA, REPLACED, excess, pair_levels, point_passed, uninformative
from .randomization import blocks_from_names, find_blocks, randomized_copy
from .scorecard import NOT_TESTED, mean_ci
from .similarity import spearman

ExplainFn = Callable[[Tensor, Tensor], Tensor]  # (x, targets) -> N×C×H×W attributions
METRIC = "smooth_final_spearman_abs"


def draw_noise(x: Tensor, n_samples: int, magnitude: float, generator: torch.Generator) -> Tensor:
    """(n_samples − 1)×N×C×H×W Gaussian noise, σ = ``magnitude`` × each input's value range
    (Quantus's scale); the n-th sample of a smoothed map is the input itself."""
    span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(1, -1, 1, 1, 1)
    shape = (n_samples - 1, *x.shape)
    return torch.randn(shape, generator=generator, dtype=x.dtype) * magnitude * span


def smoothed_maps(explain: ExplainFn, x: Tensor, targets: Tensor, noise: Tensor,
                  plain: Tensor | None = None) -> Tensor:
    """N×H×W: the channel-summed map averaged over x + noise[k] for every k and x itself.

    ``plain``: the maps of x, when already computed (the shared trained maps)."""
    k, n = len(noise), len(x)
    noisy = (x.unsqueeze(0) + noise).reshape(k * n, *x.shape[1:])
    maps = explain(noisy, targets.repeat(k)).sum(dim=1).reshape(k, n, *x.shape[2:])
    if plain is None:
        plain = explain(x, targets)
    return (maps.sum(dim=0) + plain.sum(dim=1)) / (k + 1)


def smooth_similarity(ref: Tensor, other: Tensor) -> np.ndarray:
    """Per image: Spearman of |smoothed maps| (N×H×W stacks), as Quantus's sMPRT scores."""
    return np.array([spearman(a, b, absolute=True) for a, b in zip(ref, other, strict=True)])


def _check(n_samples: int, noise: float, max_method_evals: int) -> None:
    name = "audit.audits: smooth_model_randomization"
    if n_samples < 2:
        raise ConfigError(f"{name}.n_samples must be at least 2 (1 is the plain map), got {echo(n_samples)}")
    if not 0 < noise <= 1:
        raise ConfigError(f"{name}.noise must be in (0, 1] (a share of the input's range), got {echo(noise)}")
    if max_method_evals < 1:
        raise ConfigError(f"{name}.max_method_evals must be at least 1, got {echo(max_method_evals)}")


def _cost(p: dict, per_map: dict[str, float], explainers) -> float:
    # n − 1 noisy copies under the trained model (the plain map is shared), n under the random one.
    return p["n"] * (2 * p["n_samples"] - 1) * affordable_evals(per_map, p["max_method_evals"])


@register_audit("smooth_model_randomization", order=32, family="randomization", cost=_cost,
                replaced={k: REPLACED[k] for k in ("margin", "max_random_pair")})
def smooth_model_randomization(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    n_samples: int = 8,
    noise: float = 0.1,
    max_method_evals: int = 64,
    batch_size: int = 2,
) -> AuditResult:
    """Denoised maps of the trained and the fully re-initialised model, paired per image
    against the denoised maps' random-pair level."""
    title = "Smooth model randomization (sMPRT: maps denoised before they are compared)"
    _check(n_samples, noise, max_method_evals)
    images = stratified(inp.splits["test"], n_images)
    if len(images) < 2:
        return skipped("smooth_model_randomization", title, "needs at least 2 test images (random pairs)")
    blocks = blocks_from_names(inp.model, inp.blocks) if inp.blocks else find_blocks(inp.model)
    if not blocks:
        return skipped("smooth_model_randomization", title, "the model has no parameterised blocks")
    start = time.perf_counter()
    seeds = [fork_seed(inp.generator) for _ in blocks]
    noisy = draw_noise(images.x, n_samples, noise, inp.generator)
    summary: dict = {"n_images": len(images), "n_samples": n_samples, "noise": noise,
                     "delta": DELTA,
                     "blocks": [b[0] for b in blocks], "skipped_methods": {}}
    random_model = None
    rows, cells = [], []
    total_evals = 0
    for explainer in inp.explainers:
        label = explainer.label
        trained = trained_maps(inp, explainer, "test", images)
        why = over_budget(trained, len(images), max_method_evals)
        if why:
            summary["skipped_methods"][label] = why
            cells.append(Cell(label, "smooth_model_randomization", METRIC, np.array([]), False, None,
                              "left out for cost", threshold=0.0, forced=NOT_TESTED, note=why,
                              check="noninferior", min_difference=DELTA))
            continue
        if random_model is None:  # one copy serves every method
            random_model = randomized_copy(inp.model, blocks, seeds)
        on_trained = CountedExplain(explainer, inp, batch_size)
        on_random = CountedExplain(explainer, inp, batch_size, model=random_model)
        ref = smoothed_maps(on_trained, images.x, images.targets, noisy, trained.attributions)
        rnd = smoothed_maps(on_random, images.x, images.targets, noisy)
        sims = smooth_similarity(ref, rnd)
        pair = pair_levels(ref)  # every other image's denoised trained map
        values = excess(sims, pair)
        evals = on_trained.model_evals + on_random.model_evals
        total_evals += evals
        for i, image_id in enumerate(images.ids):
            rows.append({"method": label, "id": image_id, "spearman_abs": float(sims[i]),
                         "random_pair_spearman_abs": float(pair[i]), "excess": float(values[i])})
        line, value = mean_ci(pair)[0], mean_ci(sims)[0]
        forced, note = uninformative(pair, sims)
        cells.append(Cell(label, "smooth_model_randomization", METRIC, values, False,
                          point_passed(values),
                          f"Spearman(|map|) of maps averaged over {n_samples} noisy inputs, trained "
                          f"vs fully re-initialised model, minus the image's random-pair level "
                          f"(mean {line:.2f}): no more than 0, paired per image",
                          on_trained.seconds + on_random.seconds + trained.seconds,
                          evals + trained.model_evals, threshold=0.0, forced=forced, note=note,
                          check="noninferior", min_difference=DELTA, ids=list(images.ids)))
        summary[label] = {"random_pair_spearman_abs": line, "spearman_abs": value,
                          "excess": mean_ci(values)[0]}
    del random_model
    text = (
        left_out_text(summary["skipped_methods"])
        + f"Each map is averaged over {n_samples} copies of the image ({n_samples - 1} with Gaussian "
        f"noise of {noise:g} × the input's range, and the image itself) before it is compared, so "
        "that a noisy map is not mistaken for one that changed. The same copies are explained by the "
        "trained model and by a copy with every block re-initialised. Rule, paired per image: "
        "Spearman(|map|) between the two averaged maps no higher than the image's random-pair level "
        "(the mean similarity of its averaged map to every other image's); not informative for a "
        "map that hardly depends on the image."
    )
    return AuditResult("smooth_model_randomization", title, text, rows, cells, [], summary,
                       time.perf_counter() - start, total_evals)
