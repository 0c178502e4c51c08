"""The CAM template: a variant defines only how activations and gradients become a map.

Shared here: the target layer (``layer`` or the context's default), the hooks, the token
reshape (``ctx.reshape``, applied to activations and gradients alike), the ReLU, the
bilinear upsampling to the input's size, and the forwards a variant may need for its
weights (``CamRun``). A variant overrides ``weights`` (one number per channel: the map is
Σ_k w_k A_k) or ``combine`` (any map from A and dA).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import XauditError
from ..base import ExplainContext, Explainer
from .hooks import activations_and_gradients
from .layers import check_layer, layer_label, resolve_layer


@dataclass
class CamRun:
    """What one ``attribute`` call knows beyond the layer's activations and gradients."""

    model: nn.Module
    layer: nn.Module
    x: torch.Tensor
    target: torch.Tensor
    ctx: ExplainContext
    raw: torch.Tensor  # the layer's output as the model produced it (before ctx.reshape)
    logits: torch.Tensor  # N×K logits of x


def to_spatial(t: torch.Tensor, ctx: ExplainContext, method: str) -> torch.Tensor:
    """The layer's output (or its gradient) as N×C×h×w, through ``ctx.reshape`` when set."""
    out = ctx.reshape(t) if ctx.reshape is not None else t
    if out.dim() != 4:
        via = " after explain's reshape" if ctx.reshape is not None else ""
        raise XauditError(
            f"{method}: the layer's output has shape {tuple(out.shape)}{via}, not N×C×h×w; choose "
            f"a layer with a spatial (convolutional) output, or give a reshape for token layers."
        )
    return out


def upsample_to(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """N×1×h×w -> N×1×H×W, bilinear with half-pixel centres (as Captum and OpenCV)."""
    return F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)


def scale01(t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Each leading-index slice (over its last two dims) shifted to 0 and divided by eps + max.

    pytorch-grad-cam's ``scale_cam_image``; used where a variant sums normalised maps.
    """
    flat = t.flatten(-2)
    flat = flat - flat.amin(-1, keepdim=True)
    return (flat / (eps + flat.amax(-1, keepdim=True))).view_as(t)


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


class CamExplainer(Explainer):
    """A class activation map of one layer, ReLU'd (``relu``) and upsampled to the input."""

    kind = "cam"
    needs_gradients: ClassVar[bool] = True

    def __init__(self, layer: str | None = None, relu: bool = True):
        check_layer(layer)
        check_bool("relu", relu)
        self.layer = layer
        self.relu = relu

    label = property(layer_label)

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        """N×C channel weights."""
        raise NotImplementedError(f"{type(self).__name__} must define weights() or combine()")

    def combine(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        """N×h×w map from N×C×h×w activations and gradients; default Σ_k w_k A_k."""
        return (self.weights(acts, grads, run)[:, :, None, None] * acts).sum(dim=1)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        layer = resolve_layer(self.layer, ctx, self.name)
        if ctx.reshape is not None and layer is not ctx.target_layer:
            ctx = dataclasses.replace(ctx, reshape=None)  # the reshape is the target layer's
        raw, raw_grads, logits = activations_and_gradients(model, layer, x, target, self.needs_gradients)
        acts = to_spatial(raw, ctx, self.name)
        grads = None if raw_grads is None else to_spatial(raw_grads, ctx, self.name)
        run = CamRun(model, layer, x, target, ctx, raw, logits)
        cam = self.combine(acts.float(), None if grads is None else grads.float(), run)
        if self.relu:
            cam = F.relu(cam)
        return upsample_to(cam[:, None], x).detach().float()
