"""Perturbation explainers: occlusion over Captum.

Captum's convention: every pixel receives the mean, over the windows that cover it, of
f(x) - f(x with the window replaced by the baseline). Pixels no window covers get 0.

By default the maps are computed by incremental inference (``incremental.py``): the same
numbers up to float reassociation, with the network's early layers recomputed only around
each window. Where that does not apply (checked on the input), Captum's ``Occlusion`` runs
and ``take_report()`` says why.
"""

from __future__ import annotations

import torch
from captum.attr import Occlusion
from torch import nn

from ..errors import ConfigError, XauditError
from . import incremental as inc
from .base import BASELINES, ExplainContext, Explainer, register
from .fastpath import FastModel
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
        incremental: bool = True,
        split: str = "auto",
    ):
        check_int("window", window, 1)
        check_int("stride", stride, 1)
        check_choice("baseline", baseline, BASELINES)
        check_int("perturbations_per_eval", perturbations_per_eval, 1)
        self.window = window
        self.stride = stride
        self.baseline = baseline
        if not isinstance(incremental, bool):
            raise ConfigError(f"occlusion: incremental must be true or false, got {incremental!r}")
        if not isinstance(split, str) or not split:
            raise ConfigError(f"occlusion: split must be 'auto' or a layer name, got {split!r}")
        self.perturbations_per_eval = perturbations_per_eval
        self.incremental = incremental  # recompute only what each window changes (exact)
        self.split = split  # where the incrementally computed prefix ends; "auto": least work
        self._report: dict | None = None
        # Windows per forward on the incremental path (one image at a time) come from
        # ctx.pass_size (the engine's memory budget), not perturbations_per_eval × images:
        # that product depends on how many images a batch holds, and a pass's size can move
        # results in the last float bits.

    def take_report(self) -> dict | None:
        """Which path the last ``attribute`` call took (and why), once."""
        report, self._report = self._report, None
        return report

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
        baselines = baseline_for(self.baseline, x, ctx)
        if self.incremental:
            net = model.model if isinstance(model, FastModel) else model
            attr, self._report = inc.occlusion(
                net, x, baselines, target, self.window, self.stride,
                ctx.pass_size or self.perturbations_per_eval * len(x),
                bf16=bool(getattr(model, "bf16", False)),
                split=self.split,
            )
            if attr is not None:
                return attr
        else:
            self._report = {"path": "plain", "images": len(x), "reason": "incremental: false"}
        with torch.no_grad():
            attr = Occlusion(model).attribute(
                x,
                sliding_window_shapes=(channels, self.window, self.window),
                strides=(channels, self.stride, self.stride),
                baselines=baselines,
                target=target,
                perturbations_per_eval=max(1, ctx.pass_size // len(x)) if ctx.pass_size
                else self.perturbations_per_eval,
            )
        return attr.detach().float()
