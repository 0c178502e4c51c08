"""Deconvolution and DeepLiftShap over Captum, with the refusals of their relatives.

Deconvolution rewrites the backward pass of nn.ReLU only, so, like guided backprop, it is
refused on models with other activations. DeepLiftShap is DeepLift averaged over a
distribution of baselines; it runs on xaudit's DeepLift rules (every elementwise activation,
reused activation modules split per call) and is refused wherever DeepLift is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from captum.attr import Deconvolution, DeepLiftShap
from torch import nn

from .base import BASELINES, ExplainContext, make_baseline, register
from .deeplift import _DeepLift, deeplift_ready
from .gradient import (
    CaptumExplainer,
    captum_call,
    check_choice,
    refuse_unguided,
    sample_context,
    sample_seeds,
)


@register("deconvolution")
class DeconvolutionExplainer(CaptumExplainer):
    """Zeiler & Fergus' deconvnet: ReLU applied to the gradient on the way back."""

    def __init__(self) -> None:
        pass

    def captum(self, model: nn.Module) -> Any:
        return Deconvolution(model)

    @contextlib.contextmanager
    def prepared(self, model: nn.Module, x: torch.Tensor) -> Iterator[nn.Module]:
        refuse_unguided("deconvolution", model)
        yield model


class _DeepLiftShap(DeepLiftShap):
    """Captum's DeepLiftShap with xaudit's DeepLift rules."""

    _is_non_linear = _DeepLift._is_non_linear
    _backward_hook = _DeepLift._backward_hook


@register("deeplift_shap")
class DeepLiftShapExplainer(CaptumExplainer):
    """DeepLift averaged over the listed baseline kinds, built per image."""

    def __init__(self, baselines: tuple[str, ...] = ("black", "blur", "noise")):
        if isinstance(baselines, str) or not isinstance(baselines, (list, tuple)) or len(baselines) < 2:
            raise ValueError(
                f"baselines must be a list of at least two baseline kinds, got {baselines!r}"
            )
        for kind in baselines:
            check_choice("baselines", kind, BASELINES)
        self.baselines = tuple(baselines)

    def captum(self, model: nn.Module) -> Any:
        return _DeepLiftShap(model)

    def prepared(self, model: nn.Module, x: torch.Tensor):
        return deeplift_ready("deeplift_shap", model, x)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        out = []
        with self.prepared(model, x) as ready:
            method = self.captum(ready)
            for i, seed in enumerate(sample_seeds(x, ctx)):
                xi, ci = x[i : i + 1], sample_context(ctx, seed)
                dist = torch.cat([make_baseline(kind, xi, ci) for kind in self.baselines])
                with captum_call():
                    attr = method.attribute(xi, baselines=dist, target=target[i : i + 1])
                out.append(attr.detach().float())
        return torch.cat(out)
