"""ROAD (Rong et al. 2022): remove pixels by order of relevance and fill them by noisy linear
imputation, so that the model cannot read the shape of the removed region."""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.linalg import splu
from torch import Tensor, nn

from ..explain.base import ExplainContext
from .draws import Draws, image_generators
from .maps import class_scores

# ROAD's neighbour offsets and weights: direct neighbours 1/6, diagonal neighbours 1/12.
_ROAD_WEIGHTS = [((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
                 for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def linear_impute(pixels: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's linear fill of one C×H×W image: each removed pixel = weighted mean of its neighbours.

    The weights are those of Rong et al.'s NoisyLinearImputer, renormalised over the
    neighbours inside the image; the sparse system is solved exactly, one factorisation for
    all channels.
    """
    c, h, w = pixels.shape
    idx = np.flatnonzero(removed.ravel())
    if idx.size == 0:
        return pixels.astype(np.float64, copy=True)
    if idx.size == h * w:
        raise ValueError("ROAD imputation needs at least one known pixel; every pixel was removed")
    var = np.full(h * w, -1)
    var[idx] = np.arange(idx.size)
    flat = pixels.reshape(c, -1).astype(np.float64)
    ys, xs = np.divmod(idx, w)
    diag = np.zeros(idx.size)
    rhs = np.zeros((idx.size, c))
    rows, cols, vals = [], [], []
    for (dy, dx), weight in _ROAD_WEIGHTS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        me, nb = np.flatnonzero(inside), (ny * w + nx)[inside]
        diag[me] += weight
        unknown = var[nb] >= 0
        rows.append(me[unknown])
        cols.append(var[nb[unknown]])
        vals.append(np.full(int(unknown.sum()), -weight))
        rhs[me[~unknown]] += weight * flat[:, nb[~unknown]].T  # one neighbour per offset: no repeats
    rows.append(np.arange(idx.size))
    cols.append(np.arange(idx.size))
    vals.append(diag)
    system = sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(idx.size, idx.size)
    )
    # The system is symmetric (neighbour weights are): a symmetric ordering fills in less.
    solution = splu(system, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(rhs)
    out = flat.copy()
    out[:, idx] = solution.T
    return out.reshape(c, h, w)


def noisy_linear_impute(
    pixels: Tensor,
    removed: Tensor,
    generator: torch.Generator,
    noise: float = 0.01,
) -> Tensor:
    """Fill ``removed`` pixels (N×H×W bool) of N×C×H×W images as ROAD does, plus Gaussian noise.

    ``linear_impute`` per image, then N(0, ``noise``²) added to the imputed pixels only (not
    clipped, as in the reference imputer).
    """
    x = pixels.detach().cpu().double().numpy()
    gone = removed.detach().cpu().numpy().astype(bool)
    filled = torch.from_numpy(np.stack([linear_impute(x[i], gone[i]) for i in range(len(x))]))
    jitter = torch.randn(filled.shape, generator=generator, dtype=torch.float64) * noise
    keep = torch.from_numpy(~gone).unsqueeze(1)
    return torch.where(keep, filled, filled + jitter).to(pixels.dtype)


def solve_seconds(pixels: Tensor, percentages: list[float]) -> float:
    """Seconds of one image's ROAD fills at every percentage, in one order, timed on
    ``pixels`` (C×H×W) with holes grown from a smooth (CAM-like) ranking: the plan's price of
    the solves, which are no model evaluations. Clumped holes are the slow case."""
    from ..explain.base import gaussian_blur

    h, w = pixels.shape[-2:]
    noise = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(0))
    ranks = torch.argsort(torch.argsort(-gaussian_blur(noise, max(h, w) / 20).flatten()))
    x = pixels.detach().cpu().double().numpy()
    start = time.perf_counter()
    for p in percentages:
        linear_impute(x, (ranks < int(round(p * h * w))).view(h, w).numpy())
    return time.perf_counter() - start


def road_curves(
    model: nn.Module,
    images_pixels: Tensor,
    ranks: Tensor,
    targets: Tensor,
    percentages: list[float],
    ctx: ExplainContext,
    draws: Draws,
    most_relevant_first: bool,
    batch_size: int = 32,
    score: str = "prob",
) -> np.ndarray:
    """N×P class scores after imputing the most (or least) relevant p of the pixels; image i's
    imputation noise is drawn from its own seed in ``draws`` (the same for every map given the
    same seeds)."""
    n, _, h, w = images_pixels.shape
    hw = h * w
    curves = np.zeros((n, len(percentages)))
    for i, generator in enumerate(image_generators(draws, n)):
        removed = []
        for p in percentages:
            k = int(round(p * hw))
            r = ranks[i]
            removed.append((r < k) if most_relevant_first else (r >= hw - k))
        removed_t = torch.stack(removed).view(-1, h, w)
        imputed = noisy_linear_impute(
            images_pixels[i : i + 1].expand(len(percentages), -1, -1, -1), removed_t, generator
        )
        x = ctx.pixel_to_input(imputed)
        tgt = targets[i].repeat(len(percentages))
        curves[i] = class_scores(model, x, tgt, batch_size, score).numpy()
    return curves
