"""Faithfulness as correlation: faithfulness correlation and monotonicity correlation.

Faithfulness correlation (Bhatt et al. 2020) asks whether the attribution summed over a random
subset of input features predicts how much the output drops when the subset is replaced by a
baseline. Monotonicity correlation (Nguyen & Martinez 2020) asks whether groups of features
with more |attribution| move the output more when they are perturbed. Features are input
elements (channel × pixel), as in Quantus; a one-channel map is spread over the channels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from ..errors import ConfigError, echo
from ..explain.base import make_baseline
from ..explain.counting import count_model_evals
from .base import AuditInput, AuditResult, Cell, register_audit, skipped, stratified, trained_maps

Forward = Callable[[Tensor], Tensor]  # x -> N×K scores (logits or probabilities)
RANKED = "no rule (ranked)"


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two vectors; NaN when either is constant (undefined there)."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(np.clip((a @ b) / denominator, -1, 1)) if denominator > 0 else float("nan")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation, ties ranked by their average; NaN when either is constant."""
    return _pearson(rankdata(a), rankdata(b))


@torch.no_grad()
def _scores(forward: Forward, x: Tensor, targets: Tensor, batch_size: int) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch_size):
        scores = forward(x[i : i + batch_size]).float()
        out.append(scores.gather(1, targets[i : i + batch_size].view(-1, 1)).squeeze(1).cpu())
    return torch.cat(out).double().numpy()


def _flat_like_x(a: Tensor, x: Tensor) -> Tensor:
    """N×F attributions (or baseline) over the input elements, one channel spread over all."""
    return a.detach().to(x).expand_as(x).reshape(len(x), -1)


def random_subsets(n: int, n_features: int, subset_size: int, n_runs: int,
                   generator: torch.Generator) -> Tensor:
    """N×runs×subset_size feature indices, each row drawn without replacement."""
    return torch.stack([
        torch.stack([torch.randperm(n_features, generator=generator)[:subset_size] for _ in range(n_runs)])
        for _ in range(n)
    ])


def faithfulness_correlation(
    forward: Forward,
    x: Tensor,
    attributions: Tensor,
    targets: Tensor,
    baseline: Tensor,
    subsets: Tensor,
    batch_size: int = 32,
) -> np.ndarray:
    """Per image: Pearson over runs between Σ attribution of the subset and the score drop
    f(x) − f(x with the subset set to ``baseline``). ``subsets``: N×runs×k feature indices."""
    n = len(x)
    flat_x, flat_a, flat_b = x.reshape(n, -1), _flat_like_x(attributions, x), _flat_like_x(baseline, x)
    full = _scores(forward, x, targets, batch_size)
    out = np.full(n, np.nan)
    for i in range(n):
        idx = subsets[i]
        runs = torch.arange(len(idx)).view(-1, 1)
        perturbed = flat_x[i].repeat(len(idx), 1)
        perturbed[runs, idx] = flat_b[i][idx]
        drops = full[i] - _scores(forward, perturbed.view(-1, *x.shape[1:]),
                                  targets[i].repeat(len(idx)), batch_size)
        sums = flat_a[i][idx].double().sum(dim=1).cpu().numpy()
        out[i] = _pearson(sums, drops)
    return out


def feature_groups(n_features: int, n_groups: int) -> tuple[int, int]:
    """(features per group, number of groups): groups of equal size, the last one shorter."""
    step = math.ceil(n_features / n_groups)
    return step, math.ceil(n_features / step)


def monotonicity_correlation(
    forward: Forward,
    x: Tensor,
    attributions: Tensor,
    targets: Tensor,
    n_groups: int,
    fills: Tensor,
    low: Tensor,
    high: Tensor,
    batch_size: int = 32,
) -> np.ndarray:
    """Per image: Spearman over feature groups between Σ|attribution| of the group and the
    mean squared change of the score when the group is set to a uniform random value.

    Groups: the features sorted by |attribution|, ascending, cut into ``n_groups`` runs.
    ``fills``: N×groups×samples values in [0, 1], one per perturbation (the same value for the
    whole group), mapped per channel onto [``low``, ``high``] (the inputs of pixel 0 and 1).
    The variance is not divided by f(x)² as in Quantus: a constant per image, which a rank
    correlation ignores.
    """
    n, f = len(x), x[0].numel()
    step, groups = feature_groups(f, n_groups)
    if fills.shape[:2] != (n, groups):
        raise ValueError(f"fills must be {n}×{groups}×samples, got {tuple(fills.shape)}")
    samples = fills.shape[2]
    flat_x, flat_a = x.reshape(n, -1), _flat_like_x(attributions, x).abs()
    channel = torch.arange(f) // (f // x.shape[1])
    lo, span = low.to(x)[channel], (high.to(x) - low.to(x))[channel]
    full = _scores(forward, x, targets, batch_size)
    out = np.full(n, np.nan)
    for i in range(n):
        order = torch.argsort(flat_a[i], stable=True)
        perturbed = flat_x[i].repeat(groups * samples, 1)
        sums = np.zeros(groups)
        for g in range(groups):
            idx = order[g * step : (g + 1) * step]
            rows = slice(g * samples, (g + 1) * samples)
            value = lo[idx].view(1, -1) + fills[i, g].to(x).view(-1, 1) * span[idx].view(1, -1)
            perturbed[rows, idx] = value
            sums[g] = float(flat_a[i][idx].double().sum())
        scores = _scores(forward, perturbed.view(-1, *x.shape[1:]),
                         targets[i].repeat(len(perturbed)), batch_size).reshape(groups, samples)
        variance = ((scores - full[i]) ** 2).mean(axis=1)
        out[i] = _spearman(sums, variance)
    return out


def _check(score: str, subset_size: int, n_runs: int, n_groups: int, samples: int) -> None:
    if score not in ("prob", "logit"):
        raise ConfigError(f"audit.audits: faithfulness_correlation.score: expected 'prob' or 'logit', "
                          f"got {echo(score)}")
    for key, value, least in (("subset_size", subset_size, 1), ("n_runs", n_runs, 3),
                              ("n_groups", n_groups, 3), ("monotonicity_samples", samples, 1)):
        if value < least:
            raise ConfigError(f"audit.audits: faithfulness_correlation.{key} must be at least {least} "
                              f"(a correlation needs points), got {echo(value)}")


def _cost_faithfulness_correlation(p: dict, per_map: dict[str, float], explainers) -> float:
    per_image = p["n_runs"] + 1 + p["n_groups"] * p["monotonicity_samples"] + 1
    return p["n"] * per_image * len(per_map)


@register_audit("faithfulness_correlation", order=52, family="faithfulness",
                cost=_cost_faithfulness_correlation)
def faithfulness_correlation_audit(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    subset_size: int = 224,
    n_runs: int = 20,
    baseline: str = "black",
    n_groups: int = 16,
    monotonicity_samples: int = 4,
    score: str = "logit",
    batch_size: int = 32,
) -> AuditResult:
    """Faithfulness correlation (ruled: above 0) and monotonicity correlation (ranked)."""
    title = "Faithfulness correlation: does the map predict the output's response?"
    _check(score, subset_size, n_runs, n_groups, monotonicity_samples)
    images = stratified(inp.splits["test"], n_images)
    if len(images) == 0:
        return skipped("faithfulness_correlation", title, "no test images to audit")
    n_features = images.x[0].numel()
    if subset_size > n_features:
        raise ConfigError(f"audit.audits: faithfulness_correlation.subset_size must be at most the "
                          f"number of input elements ({n_features}), got {echo(subset_size)}")
    start = time.perf_counter()
    model, ctx, gen = inp.model, inp.ctx, inp.generator

    def forward(xx: Tensor) -> Tensor:
        logits = model(xx)
        return logits.softmax(dim=1) if score == "prob" else logits

    base = make_baseline(baseline, images.x, ctx)
    c = images.x.shape[1]
    low = ctx.pixel_to_input(torch.zeros(1, c, 1, 1)).view(-1)
    high = ctx.pixel_to_input(torch.ones(1, c, 1, 1)).view(-1)
    _, groups = feature_groups(n_features, n_groups)
    rows, cells = [], []
    total_evals = 0
    # Common random numbers: every map of an image is scored on the same subsets and fills.
    subsets = random_subsets(len(images), n_features, subset_size, n_runs, gen)
    fills = torch.rand(len(images), groups, monotonicity_samples, generator=gen)
    for explainer in inp.explainers:
        m = trained_maps(inp, explainer, "test", images)
        t0 = time.perf_counter()
        with count_model_evals(model) as count:
            fc = faithfulness_correlation(forward, images.x, m.attributions, images.targets, base,
                                          subsets, batch_size)
            mc = monotonicity_correlation(forward, images.x, m.attributions, images.targets, n_groups,
                                          fills, low, high, batch_size)
        seconds = time.perf_counter() - t0 + m.seconds
        total_evals += count.n
        for i, image_id in enumerate(images.ids):
            rows.append({"method": explainer.label, "id": image_id,
                         "target": inp.classes[int(images.targets[i])],
                         "faithfulness_correlation": float(fc[i]),
                         "monotonicity_correlation": float(mc[i])})
        mean = float(np.nanmean(fc)) if np.isfinite(fc).any() else float("nan")
        passed = bool(mean > 0) if np.isfinite(mean) else None
        evals = count.n + m.model_evals
        cells.append(Cell(explainer.label, "faithfulness_correlation", "faithfulness_correlation", fc,
                          True, passed, "faithfulness correlation above every control's, per image",
                          seconds, evals, threshold=0.0, check="controls", ids=list(images.ids)))
        cells.append(Cell(explainer.label, "faithfulness_correlation", "monotonicity_correlation", mc,
                          True, None, RANKED, seconds, evals, ids=list(images.ids)))
    text = (
        f"Faithfulness correlation: {n_runs} random subsets of {subset_size} input elements per image "
        f"are set to the {baseline} baseline; the Pearson correlation between the subset's summed "
        "attribution and the drop of the explained score must be above 0 (a map that knows nothing "
        f"of the model scores 0 on average). Monotonicity correlation: {groups} groups of elements, "
        "from least to most |attribution|, are each set to random values; the Spearman correlation "
        "between a group's |attribution| and the change it causes is ranked, with no rule."
    )
    summary = {"n_images": len(images), "subset_size": subset_size, "n_runs": n_runs,
               "baseline": baseline, "n_groups": groups, "score": score}
    return AuditResult("faithfulness_correlation", title, text, rows, cells, [], summary,
                       time.perf_counter() - start, total_evals)
