"""RISE (Petsiuk et al., 2018): the class score under random smooth masks, averaged per pixel.

saliency(pixel) = Σ_k f(x ⊙ M_k + b ⊙ (1 − M_k))[target] · M_k(pixel) / (n_masks · p).
Each M_k is a random ``grid``×``grid`` binary grid (cells kept with probability ``p``),
upsampled bilinearly to (grid + 1) cells and shifted by a random offset within one cell.
The masks come from the context's seed alone, so every image of a run gets the same masks
and an image's map does not depend on the batch it arrived in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import BASELINES, ExplainContext, Explainer, register
from .gradient import baseline_for, check_choice, check_int
from .masking import masked_scores

RISE_SEED_SALT = 0x5253  # separates the mask stream from other draws on the same seed


class RiseMasks:
    """The masks of one run, materialised chunk by chunk: ``masks(start, stop)``."""

    def __init__(self, n_masks: int, grid: int, p: float, size: tuple[int, int], seed: int,
                 device: torch.device):
        gen = torch.Generator().manual_seed(seed)
        self.grids = (torch.rand(n_masks, 1, grid, grid, generator=gen) < p).float().to(device)
        self.height, self.width = size
        self.cell = (math.ceil(self.height / grid), math.ceil(self.width / grid))
        self.up = ((grid + 1) * self.cell[0], (grid + 1) * self.cell[1])
        self.dy = torch.randint(0, self.cell[0], (n_masks,), generator=gen).tolist()
        self.dx = torch.randint(0, self.cell[1], (n_masks,), generator=gen).tolist()

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        up = F.interpolate(self.grids[start:stop], size=self.up, mode="bilinear", align_corners=False)
        crops = [
            up[k, 0, dy : dy + self.height, dx : dx + self.width]
            for k, dy, dx in zip(range(stop - start), self.dy[start:stop], self.dx[start:stop],
                                 strict=True)
        ]
        return torch.stack(crops).unsqueeze(0)  # shared by every image: 1 × c × H × W


def rise_seed(ctx: ExplainContext) -> int:
    base = ctx.generator.initial_seed() if ctx.generator is not None else 0
    return (base * 1_000_003 + RISE_SEED_SALT) % (1 << 63)


@register("rise")
class RiseExplainer(Explainer):
    """Randomized input sampling: ``n_masks`` forwards per image, batched across images."""

    kind = "perturbation"
    needs_gradients = False

    def __init__(
        self,
        n_masks: int = 2000,
        grid: int = 7,
        p: float = 0.5,
        baseline: str = "zero",
        perturbations_per_eval: int = 64,
    ):
        check_int("n_masks", n_masks, 1)
        check_int("grid", grid, 1)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
            raise ValueError(f"p must be a number strictly between 0 and 1, got {p!r}")
        check_choice("baseline", baseline, BASELINES)
        check_int("perturbations_per_eval", perturbations_per_eval, 1)
        self.n_masks = n_masks
        self.grid = grid
        self.p = float(p)
        self.baseline = baseline
        self.perturbations_per_eval = perturbations_per_eval  # unless ctx.pass_size is set

    def masks(self, size: tuple[int, int], ctx: ExplainContext, device: torch.device) -> RiseMasks:
        return RiseMasks(self.n_masks, self.grid, self.p, size, rise_seed(ctx), device)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        n, _, height, width = x.shape
        masks = self.masks((height, width), ctx, x.device)
        saliency = torch.zeros(n, height * width, dtype=torch.float32, device=x.device)

        def accumulate(start: int, stop: int, scores: torch.Tensor, chunk: torch.Tensor) -> None:
            saliency.add_(scores.float() @ chunk[0].flatten(1).float())

        per_pass = ctx.pass_size or self.perturbations_per_eval
        masked_scores(model, x, baseline_for(self.baseline, x, ctx), target, masks, self.n_masks,
                      per_pass, reduce=accumulate)
        saliency /= self.n_masks * self.p
        return saliency.view(n, 1, height, width)
