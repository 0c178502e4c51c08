"""FullGrad (Srinivas & Fleuret 2019): |input × its gradient| plus, for every layer with a
bias (Conv2d with a bias, BatchNorm2d), |bias × the gradient at its output|; each channel
of each part scaled to [0, 1] (pytorch-grad-cam's ``scale_cam_image``, eps 1e-7),
upsampled bilinearly to the input and summed over channels and parts.

It uses every bias layer rather than one target layer, so it has no ``layer`` parameter
and no token reshape: the bias layers of a CNN are 4-D. A batch norm's bias is its
effective shift in eval mode, β - γ·μ/√(σ² + ε).
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import XauditError
from ..base import ExplainContext, Explainer, register
from .hooks import LayerCapture, target_scores
from .template import scale01, upsample_to


def bias_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None]


def effective_bias(layer: nn.Module) -> torch.Tensor:
    if isinstance(layer, nn.BatchNorm2d):
        if layer.running_mean is None:
            raise XauditError("full_grad: a BatchNorm2d without running statistics has no fixed bias")
        return layer.bias - layer.running_mean * layer.weight / torch.sqrt(layer.running_var + layer.eps)
    return layer.bias


@register("full_grad")
class FullGrad(Explainer):
    kind = "cam"

    def __init__(self) -> None:
        pass

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        layers = bias_layers(model)
        xin = x.detach().clone().requires_grad_(True)
        with LayerCapture(layers) as cap, torch.enable_grad():
            logits = model(xin)
            called = [(layer, out) for layer, out in zip(layers, cap.outputs, strict=True) if out is not None]
            grads = torch.autograd.grad(target_scores(logits, target).sum(),
                                        [xin] + [out for _, out in called], allow_unused=True)
        if grads[0] is None:
            raise XauditError("full_grad: the class score does not depend on the input")
        total = scale01((grads[0] * xin).detach().abs().float()).sum(dim=1, keepdim=True)
        for (layer, out), grad in zip(called, grads[1:], strict=True):
            if grad is None:  # a bias layer the class score does not depend on
                continue
            if grad.dim() != 4:
                raise XauditError(f"full_grad: a bias layer's output has shape {tuple(out.shape)}, not N×C×h×w")
            part = (effective_bias(layer).detach().view(1, -1, 1, 1) * grad.detach()).abs().float()
            total = total + upsample_per_channel(scale01(part), x).sum(dim=1, keepdim=True)
        return total.float()


def upsample_per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(x.shape[-2:]):
        return t
    n, c = t.shape[:2]
    return upsample_to(t.reshape(n * c, 1, *t.shape[-2:]), x).view(n, c, *x.shape[-2:])
