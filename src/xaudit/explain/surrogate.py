"""Superpixel methods: LIME, KernelSHAP and feature ablation on SLIC superpixels.

Each image is cut into SLIC superpixels (scikit-image) on its pixel values; a superpixel
is on (the image) or off (the baseline). LIME and KernelSHAP draw on/off samples exactly as
Captum's ``Lime`` and ``KernelShap`` do, score them in batched forward passes
(``masking.py``: samples of every image of a batch share passes), and fit Captum's own
interpretable models (``SkLearnLasso``, ``SkLearnLinearRegression``) with Captum's sample
weights, so the maps equal Captum's on the same samples. Feature ablation is Captum's
``FeatureAblation`` with the superpixels as its feature mask.

Samples are drawn from a seed made of the context's seed and the image's bytes, so an
image's map does not depend on the batch it arrived in. Every pixel of a superpixel gets
that superpixel's coefficient, in every channel (Captum's output shape).
"""

from __future__ import annotations

from typing import Any

import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression
from captum.attr import FeatureAblation
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .base import BASELINES, ExplainContext, Explainer, register
from .gradient import (
    baseline_for,
    check_choice,
    check_float,
    check_int,
    sample_seeds,
    seeded_global_rng,
)
from .masking import binary_to_masks, check_segmentation, masked_scores, slic_segments

KERNEL_SHAP_END_WEIGHT = 1e6  # Captum's weight of the all-on and all-off samples


class SuperpixelExplainer(Explainer):
    """Shared parameters and the superpixels of a batch."""

    kind = "perturbation"
    needs_gradients = False

    def _store_segmentation(
        self, n_segments: int, compactness: float, sigma: float, baseline: str,
        perturbations_per_eval: int,
    ) -> None:
        check_segmentation(n_segments, compactness, sigma)
        check_choice("baseline", baseline, BASELINES)
        check_int("perturbations_per_eval", perturbations_per_eval, 1)
        self.n_segments = n_segments
        self.compactness = float(compactness)
        self.sigma = float(sigma)
        self.baseline = baseline
        self.perturbations_per_eval = perturbations_per_eval  # unless ctx.pass_size is set

    def segments(self, x: torch.Tensor, ctx: ExplainContext) -> torch.Tensor:
        """N × H × W superpixel labels of the batch, from its pixel values."""
        pixels = ctx.input_to_pixel(x.detach())
        return torch.stack(
            [slic_segments(p, self.n_segments, self.compactness, self.sigma) for p in pixels]
        )


class SampledSurrogate(SuperpixelExplainer):
    """A linear surrogate fitted on ``n_samples`` on/off samples of the superpixels."""

    def draw(self, n_samples: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def weights(self, z: torch.Tensor, x: torch.Tensor, base: torch.Tensor,
                segments: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def surrogate(self) -> Any:
        raise NotImplementedError

    def samples(self, x: torch.Tensor, ctx: ExplainContext, counts: list[int]) -> torch.Tensor:
        """N × n_samples × max(counts) on/off samples, zero beyond an image's superpixels."""
        z = torch.zeros(len(x), self.n_samples, max(counts), dtype=torch.long)
        for i, seed in enumerate(sample_seeds(x, ctx)):
            z[i, :, : counts[i]] = self.draw(self.n_samples, counts[i],
                                             torch.Generator().manual_seed(seed))
        return z

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        segments = self.segments(x, ctx)
        counts = [int(s.max()) + 1 for s in segments]
        z = self.samples(x, ctx, counts)
        base = baseline_for(self.baseline, x, ctx)
        seg_dev, z_dev = segments.to(x.device), z.to(x.device)
        scores = masked_scores(
            model, x, base, target, lambda a, b: binary_to_masks(z_dev[:, a:b], seg_dev),
            self.n_samples, ctx.pass_size or self.perturbations_per_eval,
        )
        maps = []
        for i, m in enumerate(counts):
            zi = z[i, :, :m].float()
            w = self.weights(zi, x[i].cpu(), base[i].cpu(), segments[i])
            model_i = self.surrogate()
            data = DataLoader(TensorDataset(zi, scores[i], w), batch_size=len(zi))
            # the DataLoader, Captum's nn.Linear and sklearn draw from the global RNGs
            with seeded_global_rng(0, torch.device("cpu")):
                model_i.fit(data)
            coef = model_i.representation().detach().float().reshape(-1).cpu()
            maps.append(coef[segments[i]])
        attr = torch.stack(maps).unsqueeze(1).expand(-1, x.shape[1], -1, -1)
        return attr.contiguous().to(x.device)


def segment_sums(values: torch.Tensor, segments: torch.Tensor, n: int) -> torch.Tensor:
    """Σ of a C×H×W tensor over channels and each superpixel's pixels: (n,) float64."""
    flat = values.double().sum(0).flatten()
    return torch.zeros(n, dtype=torch.float64).scatter_add_(0, segments.flatten(), flat)


@register("lime")
class LimeExplainer(SampledSurrogate):
    """LIME: superpixels kept with probability ½, weighted by an exponential kernel on the
    cosine distance to the image, fitted by a Lasso (Captum's ``Lime`` defaults)."""

    def __init__(
        self,
        n_samples: int = 200,
        n_segments: int = 50,
        compactness: float = 10.0,
        sigma: float = 1.0,
        baseline: str = "zero",
        alpha: float = 0.01,
        kernel_width: float = 1.0,
        perturbations_per_eval: int = 64,
    ):
        check_int("n_samples", n_samples, 2)
        check_float("alpha", alpha, strict=True)
        check_float("kernel_width", kernel_width, strict=True)
        self.n_samples = n_samples
        self.alpha = float(alpha)
        self.kernel_width = float(kernel_width)
        self._store_segmentation(n_segments, compactness, sigma, baseline, perturbations_per_eval)

    def draw(self, n_samples: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
        return torch.bernoulli(torch.full((n_samples, n_features), 0.5), generator=gen).long()

    def weights(self, z: torch.Tensor, x: torch.Tensor, base: torch.Tensor,
                segments: torch.Tensor) -> torch.Tensor:
        """exp(−d² / 2w²), d = 1 − cos(x, perturbed x), from per-superpixel sums (exact)."""
        m = z.shape[1]
        xx = segment_sums(x * x, segments, m)
        xb = segment_sums(x * base, segments, m)
        bb = segment_sums(base * base, segments, m)
        zd = z.double()
        dot = zd @ xx + (1 - zd) @ xb
        norm_p = (zd @ xx + (1 - zd) @ bb).clamp_min(0).sqrt().clamp_min(1e-8)
        norm_x = xx.sum().sqrt().clamp_min(1e-8)
        distance = 1 - dot / (norm_x * norm_p)
        return torch.exp(-(distance**2) / (2 * self.kernel_width**2)).float()

    def surrogate(self) -> Any:
        return SkLearnLasso(alpha=self.alpha)


@register("kernel_shap")
class KernelShapExplainer(SampledSurrogate):
    """KernelSHAP: coalition sizes drawn from the Shapley kernel, the all-on and all-off
    samples first with a large weight, fitted by least squares (Captum's ``KernelShap``)."""

    def __init__(
        self,
        n_samples: int = 200,
        n_segments: int = 50,
        compactness: float = 10.0,
        sigma: float = 1.0,
        baseline: str = "zero",
        perturbations_per_eval: int = 64,
    ):
        check_int("n_samples", n_samples, 2)
        self.n_samples = n_samples
        self._store_segmentation(n_segments, compactness, sigma, baseline, perturbations_per_eval)

    def draw(self, n_samples: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
        out = torch.zeros(n_samples, n_features, dtype=torch.long)
        out[0] = 1
        if n_features < 2:  # one superpixel: the all-on and all-off samples say everything
            out[2::2] = 1
            return out
        sizes = torch.arange(n_features, dtype=torch.float)
        probs = torch.tensor(n_features - 1.0) / (sizes * (n_features - sizes))
        probs[0] = 0.0
        for k in range(2, n_samples):
            chosen = int(torch.multinomial(probs, 1, True, generator=gen))
            rand = torch.randn(1, n_features, generator=gen)
            threshold = torch.kthvalue(rand, n_features - chosen).values.item()
            out[k] = (rand > threshold).long()[0]
        return out

    def weights(self, z: torch.Tensor, x: torch.Tensor, base: torch.Tensor,
                segments: torch.Tensor) -> torch.Tensor:
        on = z.sum(1)
        ends = (on == 0) | (on == z.shape[1])
        return torch.where(ends, KERNEL_SHAP_END_WEIGHT, 1.0).float()

    def surrogate(self) -> Any:
        return SkLearnLinearRegression()


@register("feature_ablation")
class FeatureAblationExplainer(SuperpixelExplainer):
    """Each superpixel replaced by the baseline in turn: f(x) − f(x without it)."""

    def __init__(
        self,
        n_segments: int = 50,
        compactness: float = 10.0,
        sigma: float = 1.0,
        baseline: str = "zero",
        perturbations_per_eval: int = 16,
    ):
        self._store_segmentation(n_segments, compactness, sigma, baseline, perturbations_per_eval)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        segments = self.segments(x, ctx).to(x.device)
        per_image = self.perturbations_per_eval
        if ctx.pass_size is not None:
            per_image = max(1, ctx.pass_size // len(x))
        per_image = min(per_image, int(segments.max()) + 1)
        # one call for the batch: each image is ablated with its own superpixels
        with torch.no_grad():
            attr = FeatureAblation(model).attribute(
                x, baselines=baseline_for(self.baseline, x, ctx), target=target,
                feature_mask=segments.unsqueeze(1), perturbations_per_eval=per_image,
            )
        return attr.detach().float()

