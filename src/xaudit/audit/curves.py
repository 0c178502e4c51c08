"""Deletion / insertion curves: pixel orderings, fixed-grid curves and adaptive curves whose
area is known to a stated tolerance.

A deletion curve of a confident model often falls within the first few percent of the
pixels and is flat after; a uniform grid fine enough for that fall spends most of its points
on the flat part. ``adaptive_reveal`` starts on a coarse grid and halves only the intervals
whose trapezoid changes when their midpoint is added (adaptive trapezoid quadrature), so the
points go where the curve bends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .draws import Draws, image_generators
from .maps import class_scores
from .scorecard import mean_ci

COARSE_MIN = 8  # the adaptive grid starts with at least this many intervals
# tolerance "auto": the area's error at most this share of its 95% interval's half-width,
# or FALLBACK_TOLERANCE where there is no interval (one image, or all areas equal).
AUTO_SHARE = 0.1
FALLBACK_TOLERANCE = 0.002


def relevance_ranks(maps: Tensor, draws: Draws) -> Tensor:
    """N×(H·W) rank of each pixel, 0 = most relevant (largest value); ties broken at random,
    by one permutation per image (the same for every map given the same seeds)."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1).float()
    ranks = torch.empty_like(flat, dtype=torch.long)
    positions = torch.arange(flat.shape[1])
    for i, generator in enumerate(image_generators(draws, n)):
        perm = torch.randperm(flat.shape[1], generator=generator)
        order = perm[torch.argsort(-flat[i, perm], stable=True)]
        ranks[i, order] = positions
    return ranks


def _scores_at(model, source, start, ranks, targets, points, batch_size, score) -> np.ndarray:
    """Class scores of the images ``points`` = [(image, fraction)] describe, built one batch
    at a time (the top ``fraction`` of pixels by rank copied from ``source`` into ``start``)."""
    _, _, h, w = source.shape
    out = np.zeros(len(points))
    for lo in range(0, len(points), batch_size):
        chunk = points[lo : lo + batch_size]
        idx = torch.tensor([i for i, _ in chunk])
        counts = torch.tensor([int(round(f * h * w)) for _, f in chunk]).view(-1, 1)
        keep = (ranks[idx] < counts).view(-1, 1, h, w)
        images = torch.where(keep, source[idx], start[idx])
        out[lo : lo + len(chunk)] = class_scores(model, images, targets[idx], len(chunk), score).numpy()
    return out


def reveal_curve(
    model: nn.Module,
    source: Tensor,
    start: Tensor,
    ranks: Tensor,
    targets: Tensor,
    fractions: np.ndarray,
    batch_size: int = 32,
    score: str = "prob",
) -> np.ndarray:
    """N×K class scores as the top ``fractions`` of pixels (by rank) are copied from ``source``.

    Deletion: source = baseline, start = image. Insertion: source = image, start = blurred.
    """
    n = source.shape[0]
    points = [(i, float(f)) for i in range(n) for f in fractions]
    return _scores_at(model, source, start, ranks, targets, points, batch_size, score).reshape(n, len(fractions))


def auc(curves: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row of ``curves`` over ``xs``."""
    widths = np.diff(xs)
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * widths).sum(axis=1) / (xs[-1] - xs[0])


def coarse_steps(steps: int) -> int:
    """The adaptive grid's first step count: ``steps`` halved while it stays even and at
    least ``COARSE_MIN``, so that every finer grid up to ``steps`` nests in it."""
    coarse = steps
    while coarse % 2 == 0 and coarse // 2 >= COARSE_MIN:
        coarse //= 2
    return coarse


@dataclass
class Curves:
    """Per image: the fractions evaluated (sorted), their scores, the trapezoid area and its
    estimated discretisation error; ``evals`` = model evaluations spent; ``tolerance`` = the
    one the grids were refined to (a callable's value, once resolved)."""

    fractions: list[np.ndarray]
    values: list[np.ndarray]
    auc: np.ndarray
    error: np.ndarray
    evals: int
    tolerance: float

    def on(self, xs: np.ndarray) -> np.ndarray:
        """N×len(xs): each curve read at ``xs``, linear between its points (as the trapezoid
        rule reads it)."""
        return np.stack([np.interp(xs, f, v) for f, v in zip(self.fractions, self.values, strict=True)])


def adaptive_reveal(
    model: nn.Module,
    source: Tensor,
    start: Tensor,
    ranks: Tensor,
    targets: Tensor,
    steps: int,
    tolerance: float | Callable[[np.ndarray], float],
    batch_size: int = 32,
    score: str = "prob",
    ends: tuple[np.ndarray, np.ndarray] | None = None,
) -> Curves:
    """Curves as ``reveal_curve`` makes them, on grids refined per image down to 1/``steps``.

    Start on ``coarse_steps(steps)`` equal intervals; an interval [a, b] gets its midpoint m
    and the trapezoid's change δ = |f(a) + f(b) − 2 f(m)| (b − a)/4 is its error estimate; it
    is halved again while δ > ``tolerance`` × (b − a), so the estimated error of the area is
    at most ``tolerance`` unless the finest grid stops the refinement (reported in ``error``:
    the sum of the last δ of every interval). δ is the refined trapezoid's error for a curve
    with a jump inside the interval and three times it for a smooth one. ``tolerance`` = 0
    evaluates the whole uniform grid of ``steps``. A callable ``tolerance`` is given the
    images' areas on the first two levels (coarse grid and midpoints) and returns it, so it
    can follow their spread. Like any sampled rule it cannot see a change that leaves a, m
    and b alike. Every level is one batched stream over all images.

    ``ends`` = the N scores of ``start`` and of ``source`` (fractions 0 and 1): the same
    images for every map, so a caller scoring several maps computes them once; they are not
    counted in ``evals``.
    """
    n = source.shape[0]
    coarse = coarse_steps(steps)
    unit = steps // coarse  # coarse interval width on the finest grid
    known: list[dict[int, float]] = [{} for _ in range(n)]
    if ends is not None:
        for i, (first, last) in enumerate(zip(*ends, strict=True)):
            known[i].update({0: float(first), steps: float(last)})
    first = [(i, k * unit) for i in range(n) for k in range(coarse + 1)]
    evals = _evaluate(model, source, start, ranks, targets, steps, first, known, batch_size, score)
    open_ = [(i, k * unit, (k + 1) * unit) for i in range(n) for k in range(coarse)]
    # With no level below the coarse grid there is nothing to estimate the error from.
    error = np.zeros(n) if unit >= 2 else np.full(n, np.nan)
    while open_:
        splittable = [(i, a, b) for i, a, b in open_ if b - a >= 2]
        evals += _evaluate(model, source, start, ranks, targets, steps,
                           [(i, (a + b) // 2) for i, a, b in splittable], known, batch_size, score)
        if callable(tolerance):
            tolerance = float(tolerance(_areas(known, steps)[1]))
        open_ = []
        for i, a, b in splittable:
            m = (a + b) // 2
            f = known[i]
            delta = abs(f[a] + f[b] - 2 * f[m]) * (b - a) / steps / 4
            if (tolerance == 0 or delta > tolerance * (b - a) / steps) and b - a >= 4:
                open_ += [(i, a, m), (i, m, b)]
            else:
                error[i] += delta
    (fractions, values), areas = _areas(known, steps)
    return Curves(fractions, values, areas, error, evals, float(tolerance) if not callable(tolerance) else np.nan)


def _areas(known: list[dict[int, float]], steps: int):
    """((fractions, values) per image, N areas) of the points scored so far."""
    fractions = [np.array(sorted(k)) / steps for k in known]
    values = [np.array([f[k] for k in sorted(f)]) for f in known]
    return (fractions, values), np.array([auc(v[None], f)[0] for f, v in zip(fractions, values, strict=True)])


def interval_tolerance(areas: np.ndarray) -> float:
    """The "auto" tolerance for curves whose first-level areas are ``areas``."""
    _, lo, hi, n = mean_ci(areas)
    half = (hi - lo) / 2
    return AUTO_SHARE * half if n >= 2 and np.isfinite(half) and half > 0 else FALLBACK_TOLERANCE


def _evaluate(model, source, start, ranks, targets, steps, points, known, batch_size, score) -> int:
    """Score the grid ``points`` = [(image, index)] not yet in ``known``; return how many."""
    todo = sorted({p for p in points if p[1] not in known[p[0]]})
    scores = _scores_at(model, source, start, ranks, targets, [(i, k / steps) for i, k in todo],
                        batch_size, score)
    for (i, k), s in zip(todo, scores, strict=True):
        known[i][k] = float(s)
    return len(todo)


def discretisation(per_method: dict, steps: int, tolerance, used: dict) -> dict:
    """Per map, the mean estimated error of the deletion and insertion areas (the error of
    their mean over images) against the half-width of that mean's 95% interval, and the
    tolerance each curve was refined to (``used``: label → curve → number)."""
    maps = {}
    for label, m in per_method.items():
        entry, above = {}, False
        for curve in ("deletion", "insertion"):
            # Images that cannot inform a curve carry NaN: the mean is over the others.
            errors = np.asarray(m[f"{curve}_auc_error"], dtype=np.float64)
            err = float(errors[np.isfinite(errors)].mean()) if np.isfinite(errors).any() else float("nan")
            _, lo, hi, _ = mean_ci(m[f"{curve}_auc"])
            half = (hi - lo) / 2
            entry[curve] = {"error": _finite(err), "half_width": _finite(half),
                            "tolerance": _finite(used[label][curve])}
            above |= bool(np.isfinite(err) and np.isfinite(half) and half > 0 and err >= half)
        maps[label] = {**entry, "above_interval": above}
    return {"steps": steps, "tolerance": tolerance, "maps": maps}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
