"""Perturbation explainers: occlusion over Captum.

Captum's convention: every pixel receives the mean, over the windows that cover it, of
f(x) - f(x with the window replaced by the baseline). Pixels no window covers get 0.
"""

from __future__ import annotations

import torch
from captum.attr import Occlusion
from torch import nn

from ..errors import XauditError
from .base import BASELINES, ExplainContext, Explainer, register
from .gradient import baseline_for, check_choice, check_int


@register("occlusion")
class OcclusionExplainer(Explainer):
    """A square window over all channels, slid with ``stride``; ``baseline`` fills it."""

    kind = "perturbation"
    needs_gradients = False

    def __init__(
        self,
        window: int = 15,
        stride: int = 8,
        baseline: str = "zero",
        perturbations_per_eval: int = 16,
    ):
        check_int("window", window, 1)
        check_int("stride", stride, 1)
        check_choice("baseline", baseline, BASELINES)
        check_int("perturbations_per_eval", perturbations_per_eval, 1)
        self.window = window
        self.stride = stride
        self.baseline = baseline
        self.perturbations_per_eval = perturbations_per_eval

    @property
    def label(self) -> str:
        return f"occlusion_w{self.window}"

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        channels, height, width = x.shape[1:]
        if self.window > min(height, width):
            raise XauditError(
                f"occlusion: window {self.window} is larger than the {height}×{width} input"
            )
        with torch.no_grad():
            attr = Occlusion(model).attribute(
                x,
                sliding_window_shapes=(channels, self.window, self.window),
                strides=(channels, self.stride, self.stride),
                baselines=baseline_for(self.baseline, x, ctx),
                target=target,
                perturbations_per_eval=self.perturbations_per_eval,
            )
        return attr.detach().float()
