"""DeepLift (rescale rule) over Captum, for every elementwise activation, refused where its
rules do not cover the model (functional activations, layer norm, products of activations):
a refusal, never wrong numbers."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from captum.attr import DeepLift
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR, nonlinear
from torch import nn

from ..errors import MethodRefused, XauditError
from .base import BASELINES, ExplainContext, register, swapped_modules
from .gradient import ELEMENTWISE, PathExplainer, baseline_for, check_choice

# DeepLift: Captum's rescale rule (its `nonlinear`) holds for any elementwise activation;
# Captum registers it for a few types only and treats the others as linear (wrong numbers).
DEEPLIFT_RULES = {**{t: nonlinear for t in ELEMENTWISE}, **SUPPORTED_NON_LINEAR}
ALTERNATIVES = "integrated_gradients or gradient_shap"


class _DeepLift(DeepLift):
    """Captum's DeepLift with the rescale rule applied to every elementwise activation."""

    def _is_non_linear(self, module: nn.Module) -> bool:
        return type(module) in DEEPLIFT_RULES

    def _backward_hook(self, module: nn.Module, grad_input: Any, grad_output: Any) -> Any:
        if not self.satisfies_attribute_criteria(module):
            raise XauditError(f"deeplift: module {module} was called more often than expected")
        rule = DEEPLIFT_RULES[type(module)]
        multipliers = rule(
            module, module.input, module.output, grad_input, grad_output, eps=self.eps
        )
        del module.input
        del module.output
        return multipliers


class _PerCall(nn.Module):
    """Stands in for an activation module called k times per forward: call i uses copy i mod k.

    DeepLift stores each activation's input and output on the module, so a module reused
    within one forward pass (torchvision's ResNet blocks call ``self.relu`` two or three
    times) needs one copy per call.
    """

    def __init__(self, module: nn.Module, calls: int):
        super().__init__()
        self.copies = nn.ModuleList([copy.deepcopy(module) for _ in range(calls)])
        self.position = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        module = self.copies[self.position]
        self.position = (self.position + 1) % len(self.copies)
        return module(x)


def _linear_stand_in(module: nn.Module) -> nn.Module:
    """What a module with a DeepLift rule becomes in the coverage probe: a linear map."""
    dilation = getattr(module, "dilation", 1)
    undilated = all(d == 1 for d in (dilation if isinstance(dilation, tuple) else (dilation,)))
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and undilated:
        pool = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
        return pool[type(module)](
            module.kernel_size, module.stride, module.padding, module.ceil_mode
        )
    return nn.Identity()


def deeplift_coverage_problem(model: nn.Module, x: torch.Tensor) -> str | None:
    """Why DeepLift's rules do not cover ``model``, or None.

    Replaces every module that has a rule by a linear stand-in and checks that what remains
    is affine. It is not when the forward holds nonlinear operations that module hooks do
    not see: functional activations, layer norm, products of activations (squeeze-excitation,
    attention), adaptive max pooling.
    """
    gates = [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention)
        or "SqueezeExcit" in type(m).__name__
        or "Attention" in type(m).__name__
    ]
    if gates:
        return f"it multiplies activations together in {', '.join(gates[:2])}{' ...' * (len(gates) > 2)}"
    stand_ins = {m: _linear_stand_in(m) for m in model.modules() if type(m) in DEEPLIFT_RULES}
    x1 = x[:1].detach()
    x2 = x1.flip(-1) + torch.randn(x1.shape, generator=torch.Generator().manual_seed(2_718_281)).to(
        x1
    )
    with swapped_modules(model, stand_ins), torch.no_grad():
        f1, f2, f_mid = model(x1).double(), model(x2).double(), model((x1 + x2) / 2).double()
    error = float((f_mid - (f1 + f2) / 2).abs().max())
    scale = float(torch.cat([f1, f2]).abs().max())
    if not (0 < scale < float("inf")):
        return f"a probe of its nonlinear structure gave outputs of magnitude {scale:g}"
    if error <= 1e-3 * scale:
        return None
    return (
        f"with every activation it has a rule for made linear, the model is still nonlinear "
        f"(relative error {error / scale:.2g}): its forward uses operations DeepLift's rules do "
        f"not cover (functional activations, layer norm, products of activations such as "
        f"squeeze-excitation or attention)"
    )


def _call_counts(
    model: nn.Module, x: torch.Tensor, types: tuple[type, ...]
) -> dict[nn.Module, int]:
    counts: dict[nn.Module, int] = {}

    def hook(module: nn.Module, *_: Any) -> None:
        counts[module] = counts.get(module, 0) + 1

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, types)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return counts


@contextlib.contextmanager
def deeplift_ready(method: str, model: nn.Module, x: torch.Tensor) -> Iterator[nn.Module]:
    """``model`` ready for DeepLift's rules: refused where they do not cover it, and each
    activation module called several times per forward given one copy per call."""
    problem = deeplift_coverage_problem(model, x)
    if problem:
        raise MethodRefused(f"{method} cannot explain this model: {problem}. Use {ALTERNATIVES}.")
    counts = _call_counts(model, x[:1], tuple(DEEPLIFT_RULES))
    with swapped_modules(model, {m: _PerCall(m, n) for m, n in counts.items() if n > 1}):
        yield model


@register("deeplift")
class DeepLiftExplainer(PathExplainer):
    """DeepLift (rescale rule) over Captum. Refuses models its rules do not cover.

    The delta is ~1e-6 of f(x) - f(baseline) when every nonlinearity has an exact rule;
    Captum's max-pool rule is approximate, so models with max pooling (ResNet, VGG) show
    a larger delta, reported as it is.
    """

    def __init__(self, baseline: str = "black"):
        check_choice("baseline", baseline, BASELINES)
        self.baseline = baseline

    def captum(self, model: nn.Module) -> Any:
        return _DeepLift(model)

    def kwargs(self, x: torch.Tensor, ctx: ExplainContext) -> dict[str, Any]:
        return {"baselines": baseline_for(self.baseline, x, ctx)}

    def prepared(self, model: nn.Module, x: torch.Tensor):
        return deeplift_ready("deeplift", model, x)
