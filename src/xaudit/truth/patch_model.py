"""Case 1, the patch-sum model (BagNet-like): each class logit is an exact sum of per-patch
terms over a grid of non-overlapping patches, each term linear in its patch.

There the true contribution of a patch to the explained logit, against a baseline b, is
term_p(x) − term_p(b). Occlusion with window = stride = the patch and that baseline measures
exactly it (removing one patch changes only its own term), and integrated gradients from b is
exact on a linear term (completeness holds patch by patch). Both maps are faithful by
construction: the verdict must never say "do not trust" of them.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from .. import api
from .cells import AUDITS, CaseResult, case_cells, open_cells
from .fit import as_classifier, to_input

NAME = "patch-sum model"
CLASSES = ("a", "b")


class PatchSum(nn.Module):
    """logit_k(x) = Σ_p ⟨W_k, x_p⟩ over the non-overlapping ``patch``×``patch`` patches x_p."""

    def __init__(self, templates: torch.Tensor):
        super().__init__()
        k, c, patch, _ = templates.shape
        self.patch = nn.Conv2d(c, k, patch, stride=patch, bias=False)
        with torch.no_grad():  # hand-set: each class detects its own template, unit norm
            self.patch.weight.copy_(templates / templates.flatten(1).norm(dim=1).view(k, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch(x).sum((2, 3))


def templates(n_classes: int, patch: int, seed: int) -> torch.Tensor:
    """One zero-mean random colour pattern per class (K×3×patch×patch)."""
    t = torch.randn(n_classes, 3, patch, patch, generator=torch.Generator().manual_seed(seed))
    return t - t.mean((1, 2, 3), keepdim=True)


def patch_images(n: int, size: int, patch: int, seed: int, evidence: int = 3
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 images of noise with the class's template in ``evidence`` random patches;
    returns images, labels (alternating) and the templates."""
    if size % patch:
        raise ValueError(f"size: expected a multiple of the patch ({patch} px), got {size}")
    gen = torch.Generator().manual_seed(seed + 1)
    temp = templates(len(CLASSES), patch, seed)
    x = (0.5 + 0.1 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)
    labels = torch.arange(n) % len(CLASSES)
    grid = size // patch
    for i in range(n):
        t = temp[labels[i]]
        for cell in torch.randperm(grid * grid, generator=gen)[:evidence].tolist():
            r, c = divmod(cell, grid)
            x[i, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = 0.5 + 0.4 * t / t.abs().max()
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels, temp


def true_contributions(net: PatchSum, x: torch.Tensor, baseline: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
    """N×G×G: term_p(x) − term_p(baseline) of the target logit; they sum to
    logit(x) − logit(baseline) exactly."""
    with torch.no_grad():
        terms = net.patch(x - baseline)  # linear: the difference of the terms
    return terms[torch.arange(len(x)), target]


def patch_sums(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """N×H×W maps → N×G×G sums over each patch."""
    n, h, w = maps.shape
    return maps.reshape(n, h // patch, patch, w // patch, patch).sum((2, 4))


def rank_agreement(maps: torch.Tensor, truth: torch.Tensor, patch: int) -> float:
    """Mean over images of Spearman(map's patch sums, true contributions); NaN when no
    image has one."""
    rhos = []
    for s, t in zip(patch_sums(maps, patch), truth, strict=True):
        s, t = s.flatten().numpy(), t.flatten().numpy()
        # A map whose patch sums are all equal (saliency of this model) ranks nothing.
        rhos.append(float("nan") if np.ptp(s) == 0 or np.ptp(t) == 0 else spearmanr(s, t)[0])
    return float(np.nanmean(rhos)) if not np.isnan(rhos).all() else float("nan")


def run(n_images: int, seed: int = 0, size: int = 64, patch: int = 8, extra_methods: bool = False,
        log=print) -> CaseResult:
    """Audit occlusion (window = stride = the patch) and integrated gradients on the patch model;
    ``extra_methods`` adds saliency and Grad-CAM, whose truth is not known by construction."""
    t0 = time.perf_counter()
    pixels, labels, temp = patch_images(n_images, size, patch, seed)
    net = PatchSum(temp)
    clf = as_classifier(net, CLASSES, size, cam_layer="patch")
    occlusion = {"name": "occlusion", "window": patch, "stride": patch, "baseline": "black"}
    methods = [occlusion, {"name": "integrated_gradients", "baseline": "black"}]
    if extra_methods:
        methods += ["saliency", "grad_cam"]
    log(f"{NAME}: auditing {len(methods)} methods on {n_images} images")
    report = api.audit(clf, pixels, labels.tolist(), methods=methods, audits=list(AUDITS),
                       n_images=n_images, seed=seed)
    maps = api.explain(clf, pixels, methods, target="true", labels=labels.tolist(), seed=seed)
    x = to_input(pixels)
    truth = true_contributions(net, x, to_input(torch.zeros_like(pixels)), labels)
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == labels).float().mean())
    rho = {m: round(rank_agreement(maps[m].maps, truth, patch), 3) for m in maps}
    exact = {f"occlusion_w{patch}", "integrated_gradients"}
    truths = {m: "faithful" if m in exact else "unknown" for m in maps}
    why = {m: f"exact per-patch contributions; Spearman with the truth {rho[m]}"
           if truths[m] == "faithful" else f"Spearman with the truth {rho[m]}" for m in maps}
    return CaseResult(NAME, case_cells(NAME, report.states, truths, why),
                      {"accuracy": accuracy, "spearman_with_truth": rho,
                       "not_passed": open_cells(report.summary.get("scorecard") or [], list(maps))},
                      time.perf_counter() - t0)
