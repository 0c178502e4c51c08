"""Layer-wise relevance propagation with zennit's composites and canonizers.

zennit assigns a rule to each module (ε for dense layers, z⁺ / γ / α2β1 for convolutions,
flat or z-box for the first layer, a proportional split for sums and average pooling) and
its canonizers rewrite the model first: batch norms merged into the layer before them,
ResNet blocks' skip additions turned into a module that a rule can see. The relevance of
the explained logit is propagated back to the input and sums to that logit, less what the
biases absorb.

LRP's rules act on modules only: an addition, product, pooling or normalisation written in
``forward`` gets the plain gradient, which silently breaks the relevance. So before each
batch the model is probed: with its biases removed, ε-LRP must equal gradient × input (it
does exactly when every operation is covered by a rule); a model that fails is refused with
the reason, never explained with wrong numbers.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlusFlat,
    LayerMapComposite,
    layer_map_base,
)
from zennit.rules import Epsilon
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Activation, Convolution
from zennit.types import Linear as ZennitLinear

from ..errors import MethodRefused
from .base import ExplainContext, Explainer, register
from .fastpath import FastModel
from .gradient import check_choice, check_float

COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon")
CANONIZERS = ("auto", "resnet", "vgg", "merge_batchnorm", "none")
PROBE_TOLERANCE = 1e-6  # relative L2 gap, in float64, between ε-LRP and gradient × input
ALTERNATIVES = "integrated_gradients, input_x_gradient or grad_cam"


def canonizers_for(model: nn.Module, name: str) -> list[Any]:
    """Fresh zennit canonizers (they keep state while applied)."""
    if name == "auto":
        if any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
            name = "resnet"
        elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            name = "merge_batchnorm"
        else:
            return []
    factories = {"resnet": ResNetCanonizer, "vgg": VGGCanonizer,
                 "merge_batchnorm": SequentialMergeBatchNorm}
    return [factories[name]()] if name in factories else []


def epsilon_composite(
    epsilon: float, canonizers: list[Any] | None = None, stabilizer: float = 1e-6
) -> LayerMapComposite:
    """The ε rule on every dense and convolutional layer (zennit's shared map for the rest)."""
    layer_map = layer_map_base(stabilizer) + [
        (Convolution, Epsilon(epsilon=epsilon)),
        (torch.nn.Linear, Epsilon(epsilon=epsilon)),
    ]
    return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


def relevance(model: nn.Module, composite: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Input relevance with the target logit as the relevance put in at the output."""
    rows = torch.arange(len(x), device=x.device)
    with torch.enable_grad(), composite.context(model) as modified:
        inputs = x.detach().clone().requires_grad_(True)
        out = modified(inputs)
        seed = torch.zeros_like(out)
        seed[rows, target] = out[rows, target].detach()
        (rel,) = torch.autograd.grad(out, inputs, seed)
    return rel.detach()


def _is_merged(bn: nn.Module) -> bool:
    """A batch norm that a canonizer turned into the identity."""
    ones, zeros = torch.ones_like(bn.running_var), torch.zeros_like(bn.running_mean)
    return (torch.equal(bn.running_mean, zeros) and torch.equal(bn.running_var, ones)
            and (bn.weight is None or torch.equal(bn.weight.detach(), ones))
            and (bn.bias is None or torch.equal(bn.bias.detach(), zeros)))


def lrp_problem(model: nn.Module, x: torch.Tensor, target: torch.Tensor, canonizer: str) -> str | None:
    """Why LRP's rules do not cover ``model`` (after canonizing), or None."""
    others = sorted({type(m).__name__ for m in model.modules()
                     if isinstance(m, Activation) and type(m) is not nn.ReLU})
    if others:
        return (f"it uses {', '.join(others[:3])}: zennit passes relevance through activations "
                f"unchanged, which is LRP only for ReLU")
    probe = copy.deepcopy(model).eval().double()  # float64: the gap measures structure only
    for canon in canonizers_for(probe, canonizer):
        canon.apply(probe)  # on the copy, never reverted
    unmerged = [name for name, m in probe.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not _is_merged(m)]
    if unmerged:
        return (f"batch norm {', '.join(unmerged[:2])}{' ...' * (len(unmerged) > 2)} does not "
                f"directly follow a convolution or linear layer, so no canonizer can merge it")
    with torch.no_grad():
        for m in probe.modules():
            if isinstance(m, (Convolution, ZennitLinear)) and getattr(m, "bias", None) is not None:
                m.bias.zero_()
    x1, t1 = x[:1].detach().double(), target[:1]
    rel = relevance(probe, epsilon_composite(1e-12, stabilizer=1e-12), x1, t1)
    with torch.enable_grad():
        inputs = x1.clone().requires_grad_(True)
        out = probe(inputs)
        (grad,) = torch.autograd.grad(out[0, t1[0]], inputs)
    expected = (grad * x1).detach()
    scale = float(expected.norm())
    if not 0 < scale < float("inf"):
        return f"a probe of its structure gave relevance of magnitude {scale:g}"
    gap = float((rel - expected).norm()) / scale
    if gap <= PROBE_TOLERANCE:
        return None
    return (f"without biases its ε-LRP differs from gradient × input by {gap:.2g} (relative): "
            f"its forward has operations LRP's module rules do not see (an addition such as a "
            f"skip connection with no canonizer for its block, functional pooling, products of "
            f"activations, normalisation)")


@register("lrp")
class LrpExplainer(Explainer):
    """LRP with a zennit composite; ``canonizer`` auto picks ResNet, batch-norm merging or none."""

    def __init__(
        self,
        composite: str = "epsilon_plus_flat",
        canonizer: str = "auto",
        epsilon: float = 1e-6,
        gamma: float = 0.25,
    ):
        check_choice("composite", composite, COMPOSITES)
        check_choice("canonizer", canonizer, CANONIZERS)
        check_float("epsilon", epsilon, strict=True)
        check_float("gamma", gamma)
        self.composite = composite
        self.canonizer = canonizer
        self.epsilon = float(epsilon)
        self.gamma = float(gamma)

    @property
    def label(self) -> str:
        return "lrp" if self.composite == "epsilon_plus_flat" else f"lrp_{self.composite}"

    def build_composite(self, model: nn.Module, x: torch.Tensor, ctx: ExplainContext) -> Any:
        canonizers = canonizers_for(model, self.canonizer)
        if self.composite == "epsilon_plus_flat":
            return EpsilonPlusFlat(epsilon=self.epsilon, canonizers=canonizers)
        if self.composite == "epsilon_alpha2_beta1":
            return EpsilonAlpha2Beta1(epsilon=self.epsilon, canonizers=canonizers)
        if self.composite == "epsilon":
            return epsilon_composite(self.epsilon, canonizers)
        # z-box bounds: the input-space images of pixel values 0 and 1
        low = ctx.pixel_to_input(torch.zeros_like(x))
        high = ctx.pixel_to_input(torch.ones_like(x))
        return EpsilonGammaBox(low=low, high=high, epsilon=self.epsilon, gamma=self.gamma,
                               canonizers=canonizers)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        # rules are defined in fp32 on the model itself: the engine's wrapper is left out
        net = model.model if isinstance(model, FastModel) else model
        x = x.float()
        problem = lrp_problem(net, x, target, self.canonizer)
        if problem:
            raise MethodRefused(f"lrp cannot explain this model: {problem}. Use {ALTERNATIVES}.")
        return relevance(net, self.build_composite(net, x, ctx), x, target).float()
