"""The CAM variants that need one forward (and backward) pass: each is its weights or its map.

A: the layer's activations (N×C×h×w), G: the gradient of the class score with respect
to them; sums over i, j run over the layer's positions. The formulas (and the small
constants) are those of pytorch-grad-cam, which the tests use as the oracle.
"""

from __future__ import annotations

import torch

from ..base import register
from .template import CamExplainer, CamRun

SPATIAL = (2, 3)


@register("grad_cam")
class GradCam(CamExplainer):
    """Grad-CAM (Selvaraju et al. 2017): w_k = mean_ij G_kij."""

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        return grads.mean(dim=SPATIAL)


@register("grad_cam_plusplus")
class GradCamPlusPlus(CamExplainer):
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19): w_k = Σ_ij a_kij relu(G_kij) with
    a = G² / (2G² + Σ_ij A_k · G³), taken as 0 where G = 0."""

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        g2 = grads**2
        sum_acts = acts.sum(dim=SPATIAL, keepdim=True)
        alpha = g2 / (2 * g2 + sum_acts * g2 * grads + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp_min(0) * alpha).sum(dim=SPATIAL)


@register("xgrad_cam")
class XGradCam(CamExplainer):
    """XGrad-CAM (Fu et al. 2020): w_k = Σ_ij G_kij A_kij / Σ_ij A_kij."""

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        sum_acts = acts.sum(dim=SPATIAL, keepdim=True)
        return (grads * acts / (sum_acts + 1e-7)).sum(dim=SPATIAL)


@register("hires_cam")
class HiResCam(CamExplainer):
    """HiResCAM (Draelos & Carin 2020): Σ_k G_k ⊙ A_k, no spatial averaging of the gradient."""

    def combine(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        return (grads * acts).sum(dim=1)


@register("layer_cam")
class LayerCam(CamExplainer):
    """LayerCAM (Jiang et al. 2021): Σ_k relu(G_k) ⊙ A_k."""

    def combine(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        return (grads.clamp_min(0) * acts).sum(dim=1)


@register("eigen_cam")
class EigenCam(CamExplainer):
    """Eigen-CAM (Muhammad & Yeasin 2020): the activations (positions × channels, centred)
    projected on their first principal direction. Class-agnostic; no gradients.

    The direction's sign is arbitrary in an SVD; it is chosen so that the map correlates
    positively with the channel sum of the activations (pytorch-grad-cam keeps whatever
    sign LAPACK returns, so its map can be the negative one and, after the ReLU, blank).
    """

    needs_gradients = False

    def combine(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        n, c, h, w = acts.shape
        flat = acts.flatten(2).transpose(1, 2).double()  # N × hw × C
        centred = flat - flat.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        proj = (centred @ vh[:, 0, :, None]).squeeze(-1)  # N × hw
        sign = torch.sign((proj * flat.sum(dim=2)).sum(dim=1, keepdim=True))
        proj = proj * torch.where(sign == 0, torch.ones_like(sign), sign)
        return proj.view(n, h, w).float()
