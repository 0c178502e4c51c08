"""Target layers, and the layer methods that stay on Captum: guided Grad-CAM, layer
conductance, layer integrated gradients. They return N×1×H×W maps (guided Grad-CAM:
N×3×H×W), bilinearly upsampled from the layer's resolution to the input's.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from captum.attr import (
    GuidedGradCam,
    LayerAttribution,
    LayerConductance,
    LayerIntegratedGradients,
)
from torch import nn

from ...errors import ConfigError, XauditError, echo
from ..base import BASELINES, ExplainContext, Explainer, register, swapped_modules
from ..gradient import (
    baseline_for,
    captum_call,
    check_choice,
    check_int,
    refuse_unguided,
)

# ---------------------------------------------------------------- target layers


def _named(model: nn.Module, module: nn.Module) -> tuple[str, nn.Module]:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name, module
    raise XauditError(f"layer {module} is not part of the model")  # unreachable for our callers


def find_target_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The family's CAM layer (models/families.py): the last spatial block, or for vision
    transformers the layer whose tokens still reach the logits."""
    from ...models.families import describe

    anatomy = describe(model)
    if anatomy.cam_layer is None:
        raise XauditError(
            f"{type(model).__name__} (family {anatomy.family}) has no known layer for CAM methods; "
            "name one with a spatial or token output (model.target_layer, or cam_layer= on the "
            "Classifier), or use gradient or perturbation methods"
        )
    return anatomy.cam_layer, model.get_submodule(anatomy.cam_layer)


def resolve_layer(layer: str | None, ctx: ExplainContext, method: str) -> nn.Module:
    """``None`` -> the context's target layer; a name -> the model's module of that name."""
    if layer is None:
        if ctx.target_layer is None:
            raise ConfigError(
                f"{method}: no target layer known for this model; name one with 'layer'. "
                f"{ctx.cam_hint}".strip()
            )
        return ctx.target_layer
    if layer in ctx.layers:
        return ctx.layers[layer]
    names = [n for n in ctx.layers if n]
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
    shown = close or names[-5:]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"{method}: unknown layer {echo(layer)}. The model has {len(names)} named layers, "
        f"e.g. {', '.join(shown)}.{hint}"
    )


def upsample(attr: torch.Tensor, x: torch.Tensor, method: str) -> torch.Tensor:
    if attr.dim() != 4:
        raise XauditError(
            f"{method}: the layer's attributions have shape {tuple(attr.shape)}, not N×C×h×w; "
            f"choose a layer with a spatial (convolutional) output."
        )
    return LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")


def check_layer(layer: Any) -> None:
    if layer is not None and (not isinstance(layer, str) or not layer):
        raise ValueError(f"layer must be a module name such as 'layer4' or omitted, got {echo(layer)}")


# ---------------------------------------------------------------- CAM methods


def layer_label(self) -> str:
    """``name`` or ``name[layer]``: the same method on two layers gets two labels."""
    return self.name if self.layer is None else f"{self.name}[{self.layer}]"


@register("guided_grad_cam")
class GuidedGradCamExplainer(Explainer):
    kind = "cam"

    def __init__(self, layer: str | None = None):
        check_layer(layer)
        self.layer = layer

    label = property(layer_label)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        layer = resolve_layer(self.layer, ctx, self.name)
        refuse_unguided(self.name, model)
        if ctx.reshape is not None and layer is ctx.target_layer:
            raise XauditError(f"{self.name}: the target layer's output is not N×C×h×w; Captum's "
                              "guided Grad-CAM cannot read it (use grad_cam)")
        with captum_call():
            attr = GuidedGradCam(model, layer).attribute(
                x, target=target, interpolate_mode="bilinear"
            )
        return attr.detach().float()


# ---------------------------------------------------------------- layer methods


class _OutputCopy(nn.Module):
    """Runs a layer and copies its output.

    Captum's layer path methods substitute the layer's output with a leaf tensor; a model
    that then modifies that output in place (DenseNet: ``F.relu(features, inplace=True)``)
    would fail, so the rest of the model gets a copy.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.layer(*args, **kwargs)
        return out.clone() if isinstance(out, torch.Tensor) else out


class _LayerPathExplainer(Explainer):
    """A Captum layer path method: its attributions summed over channels, then upsampled."""

    kind = "layer"
    # Captum's smallest internal batch, in images per call: conductance pairs neighbouring steps.
    min_pass_per_image = 1

    def __init__(self, layer: str | None = None, n_steps: int = 32, baseline: str = "black"):
        check_layer(layer)
        check_int("n_steps", n_steps, 1)
        check_choice("baseline", baseline, BASELINES)
        self.layer = layer
        self.n_steps = n_steps
        self.baseline = baseline

    label = property(layer_label)

    def captum(self, model: nn.Module, layer: nn.Module) -> Any:
        raise NotImplementedError

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        return self.attribute_with_delta(model, x, target, ctx)[0]

    def attribute_with_delta(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = resolve_layer(self.layer, ctx, self.name)
        with swapped_modules(model, {layer: _OutputCopy(layer)}), captum_call():
            attr, delta = self.captum(model, layer).attribute(
                x,
                baselines=baseline_for(self.baseline, x, ctx),
                target=target,
                n_steps=self.n_steps,
                # steps × images in passes of the engine's size: all at once, MobileNetV2's
                # 32 steps of 8 images took 20 GiB
                internal_batch_size=None if ctx.pass_size is None
                else max(ctx.pass_size, self.min_pass_per_image * len(x)),
                return_convergence_delta=True,
            )
        if isinstance(attr, tuple):  # a layer with several outputs
            raise XauditError(
                f"{self.name}: layer {self.layer or 'target layer'} has several outputs; name one."
            )
        if ctx.reshape is not None and layer is ctx.target_layer:
            attr = ctx.reshape(attr)  # attributions have the layer output's shape
        if attr.dim() != 4:
            upsample(attr, x, self.name)  # raises the shape error
        summed = attr.detach().sum(dim=1, keepdim=True)
        return upsample(summed, x, self.name).float(), delta.detach().float().reshape(-1)


@register("layer_conductance")
class LayerConductanceExplainer(_LayerPathExplainer):
    min_pass_per_image = 2
    def captum(self, model: nn.Module, layer: nn.Module) -> Any:
        return LayerConductance(model, layer)


@register("layer_integrated_gradients")
class LayerIntegratedGradientsExplainer(_LayerPathExplainer):
    def captum(self, model: nn.Module, layer: nn.Module) -> Any:
        return LayerIntegratedGradients(model, layer)
