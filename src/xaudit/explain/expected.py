"""Expected Gradients (Erion et al. 2021): integrated gradients averaged over baselines drawn
from the training images, with one random point on each path.

    EG(x) = E_{x'~D, α~U(0,1)} [ (x − x') ⊙ ∇f(x' + α(x − x')) ]

Captum's GradientShap with ``stdevs=0`` computes exactly this Monte-Carlo estimate: it draws
each sample's baseline from the given set (with replacement, ``np.random.choice``) and its α
uniformly, and multiplies the gradient at that point by (x − x'). So the method is that call
with the training images as the baseline set; xaudit owns where the images come from
(``ExplainContext.references``: a run's train split, or images given to ``xaudit.explain``)
and the per-image seeds. The delta is Σ attributions − (f(x) − mean_s f(x'_s)): completeness
against the drawn baselines, which shrinks as ``n_samples`` grows (Monte-Carlo error).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from captum.attr import GradientShap
from torch import nn

from ..errors import ConfigError
from .base import ExplainContext, Explainer, register
from .gradient import captum_call, check_int, sample_seeds, seeded_global_rng

NO_REFERENCES = (
    "expected_gradients draws its baselines from training images and was given none: a "
    "pipeline run uses its train split; xaudit.explain and xaudit.audit take references= "
    "(a tensor of images, a folder or image paths)"
)


def reference_inputs(ctx: ExplainContext, like: torch.Tensor) -> torch.Tensor:
    """The context's reference images (uint8, or floats in [0, 1]) in the model's input space."""
    refs = ctx.references
    if refs is None or len(refs) == 0:
        raise ConfigError(NO_REFERENCES)
    if tuple(refs.shape[1:]) != tuple(like.shape[1:]):
        raise ConfigError(
            f"expected_gradients: reference images of shape {tuple(refs.shape[1:])} for inputs of "
            f"shape {tuple(like.shape[1:])}; give them at the model's input size"
        )
    pixels = refs.float() / 255 if refs.dtype == torch.uint8 else refs.float()
    return ctx.pixel_to_input(pixels.to(like.device)).to(like.dtype)


@register("expected_gradients")
class ExpectedGradients(Explainer):
    """IG averaged over training-image baselines; ``seed`` None: the run's seed."""

    kind = "gradient"
    needs_references: ClassVar[bool] = True

    def __init__(self, n_samples: int = 32, seed: int | None = None):
        check_int("n_samples", n_samples, 1)
        check_int("seed", seed, 0, allow_none=True)
        self.n_samples = n_samples
        self.seed = seed

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        return self.attribute_with_delta(model, x, target, ctx)[0]

    def attribute_with_delta(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        refs = reference_inputs(ctx, x)
        if self.seed is not None:
            ctx = dataclasses.replace(ctx, generator=torch.Generator().manual_seed(self.seed))
        method = GradientShap(model)
        attrs, deltas = [], []
        # One Captum call per image, seeded by the image: its draws do not depend on the batch
        for i, seed in enumerate(sample_seeds(x, ctx)):
            with seeded_global_rng(seed, x.device), captum_call():
                attr, delta = method.attribute(
                    x[i : i + 1], baselines=refs, n_samples=self.n_samples, stdevs=0.0,
                    target=target[i : i + 1], return_convergence_delta=True,
                )
            attrs.append(attr.detach().float())
            deltas.append(delta.detach().float().mean().reshape(1))
        return torch.cat(attrs), torch.cat(deltas)
