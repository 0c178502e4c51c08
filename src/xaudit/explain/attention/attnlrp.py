"""AttnLRP (Achtibat et al., ICML 2024) for transformers: gradient × input through a model
whose non-linear steps take LRP's rules, so one forward and one backward give the relevance.

The rules, in the gradient × input form of lxt's "efficient" implementation:
- layer norm: the identity rule, the division by the standard deviation held constant;
- element-wise activations (GELU, SiLU, ...): the identity rule, their gradient f(x)/x;
- attention: the uniform rule on its two products, the value's gradient halved and the
  query's and key's quartered (``variant="attnlrp"``); or the query's and key's stopped, so
  the attention mixes the values as a constant matrix (CP-LRP, Ali et al. 2022, ``"cp"``);
- linear layers and the patch embedding: the ε rule, which gradient × input already is.

The rules live on this model's module instances (instance attributes and hooks) for one call
and are undone; lxt itself patches the classes process-wide. A step written in forward code
rather than as a module (a functional GELU or norm, a bias added by hand) would take the plain
gradient and bend the relevance silently, so each model is probed once: in float64, with its
additive parameters zeroed, CP-LRP's relevance must sum to the logit. A model that fails is
refused with the reason. Windowed attention (Swin) is covered: the rules are local to each
attention product, unlike rollout's token-to-token matrices.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from ...errors import MethodRefused
from ..base import ExplainContext, Explainer, register
from ..cam.hooks import target_scores
from ..fastpath import FastModel
from ..gradient import check_choice

VARIANTS = ("attnlrp", "cp")
# gradient factors on (query, key, value): the uniform rule halves relevance at each of the
# two products (scores = q·k, output = A·v), so q and k get a quarter and v a half
FACTORS = {"attnlrp": (0.25, 0.25, 0.5), "cp": (0.0, 0.0, 1.0)}
# separate query/key/value projection modules (transformers 5.x and 4.x names); timm and
# torchvision's Swin use one ``qkv`` module
PROJECTIONS = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))
ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.CELU, nn.SELU, nn.Mish,
               nn.Softplus, nn.Hardswish, nn.LeakyReLU)
ACTIVATION_NAMES = ("GELU", "SiLU", "Swish")  # timm's and transformers' own activation classes
ADDITIVE = ("pos_embed", "position_embeddings", "pos_embedding", "cls_token", "class_token",
            "dist_token", "distillation_token", "reg_token", "register_tokens")
NO_ATTENTION = "it has no self-attention module"
PROBE_TOLERANCE = 1e-6  # relative gap, in float64, between the relevance's sum and the logit
ALTERNATIVES = "chefer, integrated_gradients or input_x_gradient"  # for a transformer
CNN_ALTERNATIVES = "lrp, integrated_gradients or grad_cam"


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``factor`` (a number or a last-dim vector)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(factor)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (factor,) = ctx.saved_tensors
        return grad * factor, None


class _IdentityRule(torch.autograd.Function):
    """y = fn(x) with gradient y / x: the relevance passes an element-wise step unchanged.
    ``ratio`` gives y / x from x where it has a closed form (GELU: Φ(x); SiLU: σ(x))."""

    @staticmethod
    def forward(ctx, fn: Callable, ratio: Callable | None, x: torch.Tensor) -> torch.Tensor:
        y = fn(x)
        if x.requires_grad:
            ctx.ratio = ratio
            ctx.save_for_backward(x if ratio is not None else y / (x + _signed_eps(x)))
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (saved,) = ctx.saved_tensors
        return None, None, grad * (ctx.ratio(saved) if ctx.ratio is not None else saved)


def _signed_eps(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1e-10, -1e-10).to(x.dtype)


def _closed_ratio(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if type(module) is nn.GELU and module.approximate == "none":
        return lambda x: 0.5 * (1.0 + torch.special.erf(x * 0.7071067811865476))
    if type(module) is nn.SiLU:
        return torch.sigmoid
    return None


class _LayerNormRule(torch.autograd.Function):
    """Layer norm with the identity rule: the gradient of (x - mean(x)) · rstd · w with rstd
    held constant. The forward is torch's fused kernel, which also returns rstd."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> torch.Tensor:
        y, _mean, rstd = torch.native_layer_norm(x, x.shape[-1:], weight, bias, eps)
        ctx.save_for_backward(rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rstd, weight = ctx.saved_tensors
        g = grad * weight if weight is not None else grad
        return (g - g.mean(dim=-1, keepdim=True)) * rstd, None, None, None


def _layer_norm(module: nn.LayerNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: _LayerNormRule.apply(x, module.weight, module.bias, module.eps)


def _scaled(t: torch.Tensor, factor: float) -> torch.Tensor:
    """``t`` with its gradient times ``factor``; a stopped gradient is a detach, so the backward
    through what made ``t`` is skipped."""
    if factor == 0.0:
        return t.detach()
    if factor == 1.0:
        return t
    return _ScaleGrad.apply(t, torch.tensor(factor, dtype=t.dtype, device=t.device))


def _scaler(factors: tuple[float, ...], like: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    parts = [torch.full((n,), f, dtype=like.dtype, device=like.device) for f, n in zip(factors, sizes, strict=True)]
    return torch.cat(parts)


class AttnLrpRules:
    """The rules installed on ``model``'s modules inside a ``with`` block; ``called`` holds the
    attention modules whose projections took their factors (all must, or the rules missed one)."""

    def __init__(self, model: nn.Module, variant: str):
        self.model, self.factors = model, FACTORS[variant]
        self.attention = attention_modules(model)
        self.called: set[int] = set()
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> AttnLrpRules:
        try:
            for module in self.model.modules():
                if isinstance(module, nn.LayerNorm):
                    if len(module.normalized_shape) != 1:
                        raise MethodRefused("attn_lrp: a layer norm over more than the last dimension")
                    self._instance_forward(module, _layer_norm(module))
                elif _is_activation(module):
                    original, ratio = module.forward, _closed_ratio(module)
                    self._instance_forward(
                        module, lambda x, f=original, r=ratio: _IdentityRule.apply(f, r, x))
            for module in self.attention:
                self._split_attention(module)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _instance_forward(self, module: nn.Module, forward: Callable) -> None:
        module.forward = forward  # an instance attribute: the class is untouched

        def undo() -> None:
            del module.forward

        self._undo.append(undo)

    def _hook(self, owner: nn.Module, module: nn.Module, factors: tuple[float, ...]) -> None:
        def scale(_m: nn.Module, _a: object, out: torch.Tensor) -> torch.Tensor:
            self.called.add(id(owner))
            if len(factors) == 1:
                return _scaled(out, factors[0])
            sizes = (out.shape[-1] // len(factors),) * len(factors)
            return _ScaleGrad.apply(out, _scaler(factors, out, sizes))

        self._undo.append(module.register_forward_hook(scale).remove)

    def _split_attention(self, module: nn.Module) -> None:
        q, k, v = self.factors
        if isinstance(module, nn.MultiheadAttention):
            def split(_m: nn.Module, args: tuple, kwargs: dict):
                self.called.add(id(module))
                query, key, value = args[:3]
                return (_scaled(query, q), _scaled(key, k), _scaled(value, v)) + args[3:], kwargs

            self._undo.append(module.register_forward_pre_hook(split, with_kwargs=True).remove)
            return
        children = dict(module.named_children())
        if isinstance(children.get("qkv"), nn.Linear):
            self._hook(module, children["qkv"], (q, k, v))
            return
        for names in PROJECTIONS:
            if all(isinstance(children.get(n), nn.Linear) for n in names):
                for name, factor in zip(names, (q, k, v), strict=True):
                    self._hook(module, children[name], (factor,))
                return
        raise MethodRefused(f"attn_lrp: {type(module).__name__} has no query/key/value projections "
                            "it knows (qkv; q_proj/k_proj/v_proj; query/key/value)")


def _is_activation(module: nn.Module) -> bool:
    """An element-wise activation: torch's, or a leaf module whose class names one (a block
    named after its activation holds other modules and is not one)."""
    if isinstance(module, ACTIVATIONS):
        return True
    leaf = next(module.children(), None) is None
    return leaf and any(n in type(module).__name__ for n in ACTIVATION_NAMES)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Every self-attention module: torch's, or one holding query, key and value projections."""
    found: list[nn.Module] = []
    for module in model.modules():
        if any(module is m or _holds(m, module) for m in found):
            continue
        children = dict(module.named_children())
        if isinstance(module, nn.MultiheadAttention) or isinstance(children.get("qkv"), nn.Linear) or any(
            all(isinstance(children.get(n), nn.Linear) for n in names)
            for names in PROJECTIONS
        ):
            found.append(module)
    return found


def _holds(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def relevance(model: nn.Module, x: torch.Tensor, target: torch.Tensor, variant: str) -> torch.Tensor:
    """x ⊙ ∂f_target/∂x under the rules: N×C×H×W, summing (up to what biases, embeddings and,
    for AttnLRP, the softmax absorb) to the explained logit."""
    with torch.enable_grad(), AttnLrpRules(model, variant) as rules:
        inputs = x.detach().clone().requires_grad_(True)
        out = model(inputs)
        (grad,) = torch.autograd.grad(target_scores(out, target).sum(), inputs)
    missed = len(rules.attention) - len(rules.called)
    if missed:
        raise MethodRefused(f"attn_lrp: {missed} of the model's {len(rules.attention)} attention "
                            "modules did not call their query/key/value projection modules (they "
                            "use the weights in code), so the attention rules could not be applied")
    return (grad * inputs).detach()


def lrp_problem(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> str | None:
    """Why the rules do not cover ``model``, or None: on a float64 copy with its additive
    parameters zeroed, CP-LRP must conserve the logit exactly."""
    if not attention_modules(model):
        return f"{NO_ATTENTION} (AttnLRP's rules are for transformers)"
    probe = copy.deepcopy(model).eval().double()
    with torch.no_grad():
        for name, param in probe.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias" or leaf in ADDITIVE or name.endswith("relative_position_bias_table"):
                param.zero_()
    x1, t1 = x[:1].detach().double(), target[:1]
    rel = relevance(probe, x1, t1, "cp")
    with torch.no_grad():
        logit = float(probe(x1)[0, t1[0]])
    total = float(rel.sum())
    if not abs(logit) > 1e-12:
        return None  # nothing to conserve on this image: the probe cannot tell
    gap = abs(total - logit) / abs(logit)
    if gap <= PROBE_TOLERANCE:
        return None
    return (f"without biases and embeddings its relevance sums to {total:.4g}, not the logit "
            f"{logit:.4g} (relative gap {gap:.2g}): its forward has steps written as code that "
            "the rules cannot see (a functional activation or normalisation, a product of "
            "activations, attention pooling)")


@register("attn_lrp")
class AttnLrp(Explainer):
    """AttnLRP (``variant="attnlrp"``) or CP-LRP (``"cp"``): one forward, one backward."""

    kind = "attention"
    needs_gradients: ClassVar[bool] = True

    def __init__(self, variant: str = "attnlrp"):
        check_choice("variant", variant, VARIANTS)
        self.variant = variant
        self._checked: weakref.WeakKeyDictionary[nn.Module, str | None] = weakref.WeakKeyDictionary()

    @property
    def label(self) -> str:
        return self.name if self.variant == "attnlrp" else f"{self.name}_cp"

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        # rules are defined in fp32 on the model itself: the engine's wrapper is left out
        net = model.model if isinstance(model, FastModel) else model
        x = x.float()
        if net not in self._checked:  # the structure, not the weights: once per model
            self._checked[net] = lrp_problem(net, x, target)
        problem = self._checked[net]
        if problem:
            others = CNN_ALTERNATIVES if problem.startswith(NO_ATTENTION) else ALTERNATIVES
            raise MethodRefused(f"attn_lrp cannot explain {type(net).__name__}: {problem}. "
                                f"Use {others} instead.")
        return relevance(net, x, target, self.variant).float()
